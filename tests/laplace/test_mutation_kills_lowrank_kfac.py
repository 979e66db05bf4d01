"""Low-rank KFAC constructor checks added for mutants that survived the suite (tests/MUTATION.md).

``bayespeft.laplace.fit`` always passes ``n_kfac``, ``lr_threshold`` and ``bias`` explicitly, so the structure's own
defaults and its option forwarding were never exercised: they are checked here through ``options()``, the dict saved
with a posterior and used to rebuild it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L


def _model_and_params():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    return model, L.select_parameters(model, "all")


def test_defaults_are_rank_10_threshold_100_augment():
    model, params = _model_and_params()
    struct = L.STRUCTURES.get("lowrank_kfac")(model, params)
    assert struct.options() == {"n_kfac": 10, "lr_threshold": 100, "bias": "augment"}


def test_explicit_options_are_forwarded_and_rank_one_is_allowed():
    model, params = _model_and_params()
    struct = L.STRUCTURES.get("lowrank_kfac")(model, params, n_kfac=1, lr_threshold=3, bias="separate")
    assert struct.options() == {"n_kfac": 1, "lr_threshold": 3, "bias": "separate"}


@pytest.mark.parametrize("rank", [0, -1])
def test_non_positive_rank_is_rejected(rank):
    model, params = _model_and_params()
    with pytest.raises(ValueError, match="n_kfac must be a positive rank"):
        L.STRUCTURES.get("lowrank_kfac")(model, params, n_kfac=rank)


def test_unknown_option_is_rejected():
    model, params = _model_and_params()
    with pytest.raises(TypeError):
        L.STRUCTURES.get("lowrank_kfac")(model, params, n_kfak=2)
