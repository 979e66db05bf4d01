"""``model_log_prob`` / ``ModelLogProb`` / ``load_params`` edge cases (tests/MUTATION.md, fourth pass (b)).

The model-path tests used ``prior_std = 2`` (where ``σ·2 = σ²``), the zero-centred prior only and never read the
refusal messages. Reference: ``N · mean log softmax(f(x))_y + Σ log N(θ; c, σ²)`` with ``torch.distributions``.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from bayespeft.sgmcmc.model import ModelLogProb, load_params, model_log_prob, trainable_params


def net() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    m[0].bias.requires_grad_(False)
    return m


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, generator=g), torch.tensor([0, 1, 1, 0, 1])


def by_hand(m, params, n, std, center):
    x, y = batch()
    with torch.no_grad():
        for k, v in params.items():
            dict(m.named_parameters())[k].copy_(v)
        loglik = torch.log_softmax(m(x), -1)[torch.arange(5), y].mean()
    prior = sum(torch.distributions.Normal(center[k], std).log_prob(v).sum() for k, v in params.items())
    return n * loglik + prior


@pytest.mark.parametrize("foreach", [True, False])
def test_prior_centred_at_the_initial_values_with_sigma_three(foreach):
    m = net()
    start = {k: v.detach().clone() for k, v in trainable_params(m).items()}
    lp = model_log_prob(m, n_data=7, prior_std=3.0, prior_center="init")
    moved = {k: v + 0.1 * (i + 1) for i, (k, v) in enumerate(start.items())}
    got = lp(moved, batch(), foreach=foreach)
    torch.testing.assert_close(got, by_hand(net(), moved, 7, 3.0, start), rtol=1e-6, atol=1e-6)
    zero = model_log_prob(net(), n_data=7, prior_precision=1 / 9)  # σ = 3 given as a precision, centred at 0
    torch.testing.assert_close(zero(moved, batch()), by_hand(net(), moved, 7, 3.0, {k: torch.zeros_like(v) for k, v in moved.items()}),
                               rtol=1e-6, atol=1e-6)


def test_one_example_is_a_training_set_and_refusals_name_what_is_wrong():
    m = net()
    assert ModelLogProb(m, 1, 1.0, "zero").n_data == 1
    with pytest.raises(ValueError, match=r"^n_data must be the training-set size \(>= 1\), got 0$"):
        ModelLogProb(m, 0, 1.0, "zero")
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match=f"^{re.escape('the model has no trainable parameters (requires_grad=True); apply an adapter first')}$"):
        trainable_params(frozen)
    with pytest.raises(ValueError, match=r"^give prior_std or prior_precision, not both$"):
        model_log_prob(m, 4, prior_std=1.0, prior_precision=1.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^prior_precision must be > 0, got {bad}$"):
            model_log_prob(m, 4, prior_precision=bad)
    for bad in (float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^prior_std must be a finite number > 0, got {bad}$"):
            model_log_prob(m, 4, prior_std=bad)
    with pytest.raises(ValueError, match=r"^prior_center must be 'zero' or 'init', got 'mean'$"):
        model_log_prob(m, 4, prior_center="mean")


def test_default_prior_is_a_standard_normal_at_zero():
    m = net()
    params = {k: v.detach() + 0.5 for k, v in trainable_params(m).items()}
    got = model_log_prob(m, n_data=3)(params, batch())
    torch.testing.assert_close(got, by_hand(net(), params, 3, 1.0, {k: torch.zeros_like(v) for k, v in params.items()}),
                               rtol=1e-6, atol=1e-6)


def test_prior_without_foreach_kernels_runs_under_vmap_with_a_centre():
    """``foreach=False`` is the form used with stacked chains (:mod:`.vectorized`): no ``torch._foreach_*`` kernel,
    which has no ``vmap`` batching rule, also for the centred prior; per chain it equals the prior by hand."""
    m = net()
    start = {k: v.detach().clone() for k, v in trainable_params(m).items()}
    lp = model_log_prob(m, n_data=7, prior_std=3.0, prior_center="init")
    stacked = {k: torch.stack([v + 0.1, v - 0.2]) for k, v in start.items()}
    got = torch.func.vmap(lambda p: lp.log_prior(p, foreach=False))(stacked)
    for c in range(2):
        want = sum(torch.distributions.Normal(start[k], 3.0).log_prob(v[c]).sum() for k, v in stacked.items())
        torch.testing.assert_close(got[c], want, rtol=1e-6, atol=1e-6)
