"""R-hat / ESS against arviz-stats and an independent numpy implementation; verdict; plots."""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base import array_stats
from scipy import stats

from bayespeft.metrics.diagnostics import ess, plot_autocorr, plot_traces, rhat, summarize, verdict


def ar1(n_chains, n, phi, seed, offsets=None):
    rng = np.random.default_rng(seed)
    x = np.zeros((n_chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + rng.standard_normal(n_chains)
    return x + (0 if offsets is None else np.asarray(offsets)[:, None])


def rhat_reference(x):
    """Rank-normalised split R-hat written out from Vehtari et al. (2021), eqs. in Sec. 3 (independent of arviz)."""
    def split(a):
        h = a.shape[1] // 2
        return np.concatenate([a[:, :h], a[:, -h:]])

    def z(a):
        r = stats.rankdata(a, method="average").reshape(a.shape)
        return stats.norm.ppf((r - 3 / 8) / (a.size + 1 / 4))

    def basic(a):
        m, n = a.shape
        b = n * a.mean(1).var(ddof=1)
        w = a.var(1, ddof=1).mean()
        return np.sqrt(((n - 1) / n * w + b / n) / w)

    s = split(x)
    return max(basic(z(s)), basic(z(np.abs(s - np.median(s)))))


def test_rhat_ess_equal_arviz_and_reference():
    x = ar1(4, 500, 0.7, seed=0)
    assert rhat(x) == pytest.approx(array_stats.rhat(x.T, chain_axis=-1, draw_axis=-2, method="rank"), rel=1e-12)
    assert rhat(x) == pytest.approx(rhat_reference(x), rel=1e-10)
    assert ess(x, "bulk") == pytest.approx(array_stats.ess(x, method="bulk"), rel=1e-12)
    assert ess(x, "tail") == pytest.approx(array_stats.ess(x, method="tail", prob=(0.05, 0.95)), rel=1e-12)
    # AR(1) with φ = 0.7: ESS ≈ N (1-φ)/(1+φ) = 2000 · 0.176 ≈ 353
    assert ess(x, "bulk") == pytest.approx(2000 * 0.3 / 1.7, rel=0.2)


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
    x = ar1(1, 800, 0.3, seed=3)
    halves = np.stack([x[0, :400], x[0, 400:]])
    assert rhat(x) == pytest.approx(array_stats.rhat(halves, method="rank"), rel=1e-12)
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
