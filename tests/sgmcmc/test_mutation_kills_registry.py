"""``sgmcmc.build`` defaults and messages; ``ensemble_predict`` of nothing (tests/MUTATION.md, third pass).

The registry tests always passed ``temperature`` and ``seed`` and an option list that is not empty.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayespeft.sgmcmc import build
from bayespeft.sgmcmc.predict import ensemble_predict


def _log_prob(theta, batch):
    return -0.5 * (theta * theta).sum()


def test_build_defaults_are_temperature_1_and_seed_0():
    s = build("sgld", _log_prob, lr=0.1)
    assert s.hyperparameters == {"temperature": 1.0}
    theta = torch.tensor([0.3, -0.4])
    explicit = build("sgld", _log_prob, lr=0.1, temperature=1.0, seed=0)
    a, b = s.step(s.init(theta), None), explicit.step(explicit.init(theta), None)
    assert torch.equal(a.params, b.params)
    c = build("sgld", _log_prob, lr=0.1, seed=1)
    assert not torch.equal(c.step(c.init(theta), None).params, a.params)


def test_a_sampler_without_options_says_none():
    with pytest.raises(ValueError, match=r"^sampler 'sgld' has no option\(s\) \['rho'\]; allowed options: none$"):
        build("sgld", _log_prob, lr=0.1, rho=0.1)


def test_ensemble_of_no_samples_is_an_error():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"^no samples to average \(empty store or indices\)$"):
        ensemble_predict(model, [], [(torch.ones(1, 2), torch.zeros(1, dtype=torch.long))])


def test_ensemble_over_chosen_indices_of_a_store_averages_those_samples_only(tmp_path):
    """``indices`` picks samples of a store: the average of the softmax of those weights, computed by hand."""
    from bayespeft.sgmcmc import SampleStore

    model = nn.Linear(2, 3)
    store = SampleStore(tmp_path / "s")
    weights = [torch.full((3, 2), float(k)) * torch.tensor([[1.0], [-1.0], [0.5]]) for k in range(3)]
    for k, w in enumerate(weights):
        store.add(0, {"weight": w, "bias": torch.zeros(3)}, step=k)
    x = torch.tensor([[1.0, 0.5], [-0.3, 2.0]])
    loader = [(x, torch.zeros(2, dtype=torch.long))]
    want = torch.stack([torch.softmax(x @ weights[k].T, -1) for k in (0, 2)]).mean(0)
    torch.testing.assert_close(ensemble_predict(model, store, loader, indices=[0, 2]), want)
    every = torch.stack([torch.softmax(x @ w.T, -1) for w in weights]).mean(0)
    torch.testing.assert_close(ensemble_predict(model, store, loader), every)
    assert not torch.allclose(want, every)
