"""The step functions of ``run_chains`` on their own (tests/MUTATION.md, fourth pass (b)).

The run tests start every chain at the MAP with a constant or cyclical schedule and compare resumed runs with
uninterrupted ones (a run restarted from scratch gives the same samples), so chain starts other than the MAP, the
polynomial schedule's options, the divergence-check steps, the burn-in edge, the verdict thresholds and what
``resume_states`` reads were not checked. References: the formulas of the module docstring written out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayespeft.sgmcmc import SampleStore, SamplerConfig, sgld
from bayespeft.sgmcmc.resume import capture_rng, chain_state
from bayespeft.sgmcmc.runner import (ChainWalker, chain_schedule, convergence, initial_params, resume_states,
                                     step_counts)


def test_burn_in_rounded_up_to_the_whole_run_is_refused():
    assert step_counts(SamplerConfig(epochs=2, burn_in_epochs=1.5), 3) == (6, 4)  # round(4.5) = 4
    with pytest.raises(ValueError, match=r"^burn-in \(2 steps\) must be shorter than the run \(2 steps\)$"):
        step_counts(SamplerConfig(epochs=2, burn_in_epochs=1.9), 1)


def test_polynomial_schedule_takes_b_and_gamma_from_the_config():
    s = chain_schedule(SamplerConfig(schedule="polynomial", lr=0.1, poly_b=2.0, poly_gamma=0.6), 10)
    assert [s.lr(t) for t in (0, 3)] == pytest.approx([0.1 * 2.0**-0.6, 0.1 * 5.0**-0.6], rel=1e-12)


@pytest.mark.parametrize("centre", ["zero", "init"])
def test_chain_starts_are_the_map_the_jittered_map_or_a_prior_draw(centre):
    theta = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64), "b": torch.tensor([0.5], dtype=torch.float64)}

    def noise(seed):
        g = torch.Generator().manual_seed(seed)
        return {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in theta.items()}

    assert initial_params(SamplerConfig(init="map"), theta, 3) is theta
    z = noise(5 + 3 + 7919)  # seed + chain + 7919
    got = initial_params(SamplerConfig(init="jitter", init_jitter=0.01, seed=5), theta, 3)
    for k in theta:
        torch.testing.assert_close(got[k], theta[k] + 0.01 * z[k], rtol=0, atol=1e-15)
    got = initial_params(SamplerConfig(init="prior", prior_std=2.0, prior_center=centre, seed=5), theta, 3)
    for k in theta:
        torch.testing.assert_close(got[k], 2.0 * z[k] + (theta[k] if centre == "init" else 0.0), rtol=0, atol=1e-15)


def walker(total: int, burn_in: int, **cfg) -> ChainWalker:
    c = SamplerConfig(**cfg)
    return ChainWalker(None, chain_schedule(c, total), c, None, None, None, torch.device("cpu"), total, burn_in)


def test_keep_check_and_expected_draws_follow_burn_in_thin_and_the_check_period():
    w = walker(10, 2, thin=3, divergence_check_every=4)
    assert [s for s in range(1, 11) if w.keep(s, s - 1)] == [5, 8]  # (step - burn_in) % thin == 0 after burn-in
    assert [s for s in range(1, 11) if w.check_due(s, False)] == [4, 8, 10]  # every 4 steps and the last
    assert all(w.check_due(s, True) for s in range(1, 11))
    assert w.expected_draws() == 2
    assert walker(3, 0).expected_draws() == 3  # no burn-in, thin 1: the first step is kept
    # cyclical, 8 steps, 2 cycles of 4, half exploration: sampling at schedule index t with t % 4 in {2, 3}
    cyc = walker(8, 0, schedule="cyclical", cycles=2, exploration_fraction=0.5)
    kept = [s for s in range(1, 9) if (s - 1) % 4 >= 2]
    assert kept == [3, 4, 7, 8] and cyc.expected_draws() == len(kept)
    assert [s for s in range(1, 9) if cyc.keep(s, s - 1)] == kept
    assert walker(8, 2, schedule="cyclical", cycles=2, exploration_fraction=0.5).expected_draws() == 4  # all of `kept` > 2


def test_convergence_needs_four_draws_and_uses_the_configured_thresholds(tmp_path):
    store = SampleStore(tmp_path)
    rng = np.random.default_rng(0)
    for c in range(2):
        for _ in range(3):
            store.add(c, {"w": torch.zeros(1)}, step=1, diagnostics={"lp": float(rng.normal())})
    cfg = SamplerConfig(rhat_strict=1.2, rhat_lenient=1.5, min_ess_per_chain=0.5)
    assert convergence(store, cfg)[1] is None
    for c in range(2):
        store.add(c, {"w": torch.zeros(1)}, step=1, diagnostics={"lp": float(rng.normal())})
    arrays, v = convergence(store, cfg)
    assert arrays["lp"].shape == (2, 4)
    assert (v.rhat_strict, v.rhat_lenient, v.min_ess_per_chain, v.n_draws) == (1.2, 1.5, 0.5, 4)


def test_resume_states_read_each_chains_state_and_cut_the_store_back_to_it(tmp_path):
    store = SampleStore(tmp_path)
    for c, n in {0: 3, 1: 2, 2: 1}.items():
        for _ in range(n):
            store.add(c, {"w": torch.zeros(2)}, step=1)
    state = sgld.init({"w": torch.zeros(2)}, seed=4)
    state.step = 5
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4)))
    tensors, meta = chain_state(state, {"chain": 0, "status": "running", "draws": 2},
                                {"epoch": capture_rng(loader), "now": capture_rng(loader)})
    store.save_chain_state(0, tensors, meta)
    saved = resume_states(store, [0, 1])
    assert saved[1] is None  # never started
    assert (saved[0]["status"], saved[0]["draws"], saved[0]["step"], sorted(saved[0]["rngs"])) == ("running", 2, 5, ["epoch", "now"])
    assert torch.equal(saved[0]["tensors"]["rng/sampler"], state.rng.get_state())
    # chain 0 back to the 2 draws of its state, chain 1 to none, chain 2 (not resumed here) untouched
    assert [(e["chain"], e["draw"]) for e in store.entries] == [(0, 0), (0, 1), (2, 0)]
    assert [(e["chain"], e["draw"]) for e in SampleStore(tmp_path).entries] == [(0, 0), (0, 1), (2, 0)]
