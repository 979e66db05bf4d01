"""R-hat and ESS against estimators written out here from the papers (numpy/scipy only, no arviz), and ESS against
the AR(1) closed form.

* R-hat: rank-normalised split R-hat, Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
  folding, and localization", Bayesian Analysis 16(2), Sec. 3 (max of the bulk and the folded R-hat).
* ESS: same paper, Sec. 3.2 and App. A: multi-chain autocorrelation ``ρ_t = 1 − (W − mean_c γ_{c,t}) / var⁺`` and
  Geyer's (1992) initial positive and initial monotone sequences over pairs ``Γ_k = ρ_{2k} + ρ_{2k+1}``; bulk ESS on
  the rank-normalised split chains, tail ESS the smaller of the 5% and 95% quantile ESS (ESS of ``I(x ≤ q_p)``).
  Two details follow Stan's reference implementation (``stan/analyze/mcmc/compute_effective_sample_size.hpp``):
  the even autocorrelation of the first negative pair is added when positive (when the lags run out first, the
  last pair's even term only), and ``τ ≥ 1/log10(S)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from bayespeft.metrics.diagnostics import ess, rhat


def ar1(n_chains, n, phi, seed, offsets=None):
    """Stationary Gaussian AR(1) chains ``x_t = φ x_{t-1} + ε_t``, ``x_0 ~ N(0, 1/(1 − φ²))``."""
    eps = np.random.default_rng(seed).standard_normal((n_chains, n))
    eps[:, 0] /= math.sqrt(1 - phi * phi)
    x = lfilter([1.0], [1.0, -phi], eps, axis=1)
    return x + (0 if offsets is None else np.asarray(offsets)[:, None])


def split(a):
    """Each chain cut into its first and last halves (the middle draw of an odd length is dropped)."""
    h = a.shape[1] // 2
    return np.concatenate([a[:, :h], a[:, -h:]])


def z_scale(a):
    """Rank normalisation: Φ⁻¹((r − 3/8) / (S + 1/4)), average ranks over all S draws together."""
    r = stats.rankdata(a, method="average").reshape(a.shape)
    return stats.norm.ppf((r - 3 / 8) / (a.size + 1 / 4))


# ---- R-hat -----------------------------------------------------------------------------------------------------
def rhat_reference(x):
    def basic(a):
        m, n = a.shape
        b = n * a.mean(1).var(ddof=1)
        w = a.var(1, ddof=1).mean()
        return np.sqrt(((n - 1) / n * w + b / n) / w)

    s = split(x)
    return max(basic(z_scale(s)), basic(z_scale(np.abs(s - np.median(s)))))


# ---- ESS -------------------------------------------------------------------------------------------------------
def geyer_ess(a):
    """ESS of chains ``a`` (m, n): S / τ with τ = −1 + 2 Σ_k Γ_k (initial positive + monotone sequence)."""
    a = np.asarray(a, dtype=float)
    m, n = a.shape
    centred = a - a.mean(1, keepdims=True)

    def acov(t):  # biased autocovariance of each chain at lag t, averaged over chains
        return np.mean([centred[c, : n - t] @ centred[c, t:] / n for c in range(m)])

    w = acov(0) * n / (n - 1)  # mean within-chain variance s²
    var_plus = (n - 1) / n * w + (a.mean(1).var(ddof=1) if m > 1 else 0.0)

    def rho(t):  # ρ_0 = 1 by definition (the formula would give 1 − (W − γ_0)/var⁺ ≠ 1)
        return 1.0 if t == 0 else 1 - (w - acov(t)) / var_plus

    # initial positive sequence: pairs (ρ_{t+1}, ρ_{t+2}), t = 1, 3, ... while t < n − 3, up to the first negative one
    pairs, t = [1.0 + rho(1)], 1
    while t < n - 3:
        even, odd = rho(t + 1), rho(t + 2)
        if even + odd < 0:
            tail = max(even, 0.0)  # Stan: the positive even term of the first negative pair
            break
        pairs.append(even + odd)
        t += 2
    else:  # out of lags with every pair positive: Stan keeps the last pair's even term only
        tail = rho(t - 1)
        pairs.pop()
    pairs = np.minimum.accumulate(pairs)  # initial monotone sequence
    tau = -1 + 2 * sum(pairs) + tail
    return m * n / max(tau, 1 / math.log10(m * n))


def bulk_ess_reference(x):
    return geyer_ess(z_scale(split(x)))


def tail_ess_reference(x):
    return min(geyer_ess(split((x <= np.quantile(x, p)).astype(float))) for p in (0.05, 0.95))


CHAINS = {
    "ar1_0.7": lambda: ar1(4, 500, 0.7, seed=0),
    "antithetic": lambda: ar1(3, 401, -0.6, seed=1),  # ESS > S; odd length; the "positive even tail" branch
    "skewed": lambda: np.exp(1.5 * ar1(4, 300, 0.5, seed=2)),  # rank normalisation matters (bulk != mean ESS)
    "offset_chains": lambda: ar1(4, 300, 0.3, seed=3, offsets=[0.0, 0.0, 0.5, -0.5]),
    "single_chain": lambda: ar1(1, 600, 0.4, seed=4),
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_ess_equals_hand_written_geyer_estimator(case):
    x = CHAINS[case]()
    assert float(ess(x, "bulk")) == pytest.approx(bulk_ess_reference(x), rel=1e-10)
    assert float(ess(x, "tail")) == pytest.approx(tail_ess_reference(x), rel=1e-10)


def test_reference_estimators_are_not_interchangeable():
    """The cases above tell bulk from plain (un-normalised) and un-split ESS apart, and find ESS > S when antithetic."""
    skewed, anti = CHAINS["skewed"](), CHAINS["antithetic"]()
    assert abs(bulk_ess_reference(skewed) / geyer_ess(split(skewed)) - 1) > 0.05
    assert abs(bulk_ess_reference(CHAINS["offset_chains"]()) / geyer_ess(z_scale(CHAINS["offset_chains"]())) - 1) > 0.05
    assert bulk_ess_reference(anti) > anti.size


def test_bulk_ess_of_long_ar1_chains_matches_closed_form():
    """Gaussian AR(1): integrated autocorrelation time τ = (1 + φ)/(1 − φ), so ESS = S (1 − φ)/(1 + φ).
    4 chains × 250,000 draws, φ = 0.5: ESS = 333,333. Tolerance 2.5%: the estimator's relative spread over seeds is
    0.6% at this length (12 seeds: −1.0% .. +1.3%), so this is ~4 standard deviations; reporting per-chain or
    relative ESS, or the autocorrelation time, would be off by a factor of 4 or more."""
    phi = 0.5
    x = ar1(4, 250_000, phi, seed=10)
    expected = x.size * (1 - phi) / (1 + phi)
    assert float(ess(x, "bulk")) == pytest.approx(expected, rel=0.025)


# ---- R-hat against the written-out reference --------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CHAINS))
def test_rhat_equals_hand_written_reference(case):
    x = CHAINS[case]()
    if x.shape[0] == 1:  # one chain: its two halves are compared (each split again)
        h = x.shape[1] // 2
        want = rhat_reference(np.stack([x[0, :h], x[0, h:2 * h]]))
    else:
        want = rhat_reference(x)
    assert float(rhat(x)) == pytest.approx(want, rel=1e-10)


def test_rhat_detects_offset_chains():
    """Chains 5 standard deviations apart: R-hat ≫ 1; identical-law chains: R-hat ≈ 1."""
    assert float(rhat(ar1(3, 400, 0.5, seed=5, offsets=[0.0, 5.0, -5.0]))) > 2.0
    assert float(rhat(ar1(4, 2000, 0.5, seed=6))) < 1.01
