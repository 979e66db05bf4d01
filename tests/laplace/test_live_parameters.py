"""``live_parameters``: a fitted structure's parameters looked up on the model, in the structure's ``θ`` order."""

from __future__ import annotations

import pytest
from torch import nn

from bayespeft.laplace.subset import live_parameters


def test_returns_the_models_parameter_objects_in_the_given_order() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    got = live_parameters(model, ["1.weight", "0.bias", "0.weight"])
    assert [n for n, _ in got] == ["1.weight", "0.bias", "0.weight"]
    assert got[0][1] is model[1].weight and got[1][1] is model[0].bias and got[2][1] is model[0].weight


def test_unknown_names_raise_naming_them() -> None:
    with pytest.raises(KeyError, match=r"the model has no parameters \['2\.weight'\]; was the posterior fitted on another model"):
        live_parameters(nn.Sequential(nn.Linear(2, 3)), ["0.weight", "2.weight"])
