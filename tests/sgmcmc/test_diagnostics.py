"""Convergence verdict and plots (R-hat / ESS against written-out estimators: tests/metrics/test_convergence_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bayespeft.metrics.diagnostics import plot_autocorr, plot_traces, rhat, summarize, verdict


def ar1(n_chains, n, phi, seed, offsets=None):
    rng = np.random.default_rng(seed)
    x = np.zeros((n_chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + rng.standard_normal(n_chains)
    return x + (0 if offsets is None else np.asarray(offsets)[:, None])


def test_stuck_chains_fail_the_verdict():
    x = ar1(3, 400, 0.5, seed=1, offsets=[0.0, 5.0, -5.0])  # three chains at different modes
    v = verdict({"loglik": x})
    assert v.rhat_max > 2.0 and not v.strict and not v.lenient and "FAIL" in str(v)


def test_good_chains_pass_and_ess_threshold_is_applied():
    x = ar1(4, 1000, 0.2, seed=2)
    v = verdict({"a": x, "vec": np.stack([x, -x], axis=-1)})
    assert v.rhat_max <= 1.01 and v.strict and v.lenient
    v2 = verdict({"a": x}, min_ess_per_chain=10_000)
    assert not v2.strict and not v2.lenient and v2.ess_per_chain_min < 10_000


def test_single_chain_uses_split_halves():
    """(R-hat of one chain = R-hat of its halves: tests/metrics/test_convergence_reference.py.)"""
    x = ar1(1, 800, 0.3, seed=3)
    drifting = x + np.linspace(0, 6, 800)  # non-stationary single chain
    v = verdict({"a": drifting})
    assert v.single_chain_split and not v.lenient and "single chain" in str(v)


def test_too_few_draws_is_a_failure_not_a_pass():
    v = verdict({"a": np.random.default_rng(0).standard_normal((2, 3))})
    assert not v.strict and not v.lenient


def test_summary_and_plots(tmp_path):
    x = ar1(2, 200, 0.5, seed=4)
    s = summarize({"a": x, "p": np.stack([x, x**2], -1)})
    assert set(s) == {"a", "p[0]", "p[1]"} and s["a"]["rhat"] == pytest.approx(float(rhat(x)))
    for fn, name in [(plot_traces, "trace.png"), (plot_autocorr, "acf.png")]:
        path = fn({"a": x, "b": -x}, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KeyError, match="unknown diagnostic"):
        plot_traces({"a": x}, tmp_path / "x.png", names=["zzz"])
