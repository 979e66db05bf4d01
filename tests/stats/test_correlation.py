"""Spearman's rho: the rank-difference formula, Pearson of average ranks, the exact permutation p-value (n <= 8,
counted by hand) and the t p-value above it."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
from scipy import stats

from bayespeft.stats import spearman


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values share the mean of their positions (by brute force)."""
    return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])


def test_spearman_rank_difference_formula_and_exact_p_value():
    # depths 1..6, ΔECE whose ranks are 2 1 4 3 6 5: sum d^2 = 6, rho = 1 - 6*6/(6*35) = 0.828571...
    # exact p by hand: orderings of 6 with sum d^2 <= 6 (rho >= 0.8286): the identity (0), 5 adjacent swaps (2),
    # 6 pairs of disjoint adjacent swaps (4), 1 triple (12)(34)(56) (6), 8 rotations of 3 consecutive (6) = 21;
    # two-sided (the mirror orderings have rho <= -0.8286): 42 of 6! = 720.
    depth = [1, 2, 3, 4, 5, 6]
    delta = [0.011, -0.004, 0.020, 0.013, 0.051, 0.030]
    r = spearman(depth, delta)
    assert (r.n, r.reason) == (6, None)
    assert r.rho == pytest.approx(1 - 36 / 210, abs=1e-12)
    assert r.p_value == pytest.approx(42 / 720, abs=1e-12)


@pytest.mark.parametrize(("x", "y", "p"), [
    ([0, 1, 3], [0.1, 0.2, 0.3], 2 / 6),            # n = 3, rho = 1: 2 of 3! orderings reach |rho| = 1
    ([1, 2, 3, 4], [4, 3, 2, 1], 2 / 24),           # n = 4, rho = -1
    ([1, 2, 3, 4, 5], [1, 3, 2, 4, 5], 10 / 120),   # rho = 0.9: identity + 4 adjacent swaps, both signs
])
def test_spearman_small_n_exact_p_value_never_zero(x, y, p):
    assert spearman(x, y).p_value == pytest.approx(p, abs=1e-12)


def test_spearman_exact_p_with_ties_agrees_with_brute_force():
    # every pairing of y with x, rho as the Pearson correlation of average ranks (by brute force), one loop
    x, y = np.array([1, 2, 2, 3, 4, 5, 6.0]), np.array([0.3, 0.1, 0.2, 0.2, 0.5, 0.4, 0.9])
    rx = _average_ranks(x)
    rho = np.corrcoef(rx, _average_ranks(y))[0, 1]
    hits = [abs(np.corrcoef(rx, _average_ranks(y[list(p)]))[0, 1]) >= abs(rho) - 1e-12 for p in permutations(range(7))]
    r = spearman(x, y)
    assert r.rho == pytest.approx(rho, abs=1e-12)
    assert r.p_value == pytest.approx(np.mean(hits), abs=1e-12)


def test_spearman_large_n_uses_the_t_approximation():
    # n = 10 > 8: t = rho sqrt(8 / (1 - rho^2)) against Student's t with 8 df, two-sided
    x = np.arange(10.0)
    y = np.array([0.2, 0.1, 0.5, 0.3, 0.4, 0.9, 0.6, 0.8, 0.7, 1.0])
    rho = np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1]
    t = rho * np.sqrt(8 / (1 - rho**2))
    r = spearman(x, y)
    assert r.rho == pytest.approx(rho, abs=1e-12)
    assert r.p_value == pytest.approx(2 * stats.t.sf(t, 8), abs=1e-12)


def test_spearman_with_ties_is_pearson_of_average_ranks():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0])
    y = np.array([2.7, 1.8, 2.8, 1.8, 2.8, 4.5, 9.0, 4.5, 2.3, 5.3])
    want = np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1]
    assert spearman(x, y).rho == pytest.approx(want, abs=1e-12)


def test_spearman_perfect_monotone():
    x = np.arange(1.0, 8.0)
    up, down = spearman(x, np.exp(x)), spearman(x, -(x**3))
    # n = 7: exact, only the ordering itself and its mirror reach |rho| = 1
    assert (up.rho, up.p_value) == (pytest.approx(1.0), pytest.approx(2 / 5040))
    assert (down.rho, down.p_value) == (pytest.approx(-1.0), pytest.approx(2 / 5040))
    big = spearman(np.arange(12.0), np.exp(np.arange(12.0)))  # the t approximation: 0 at |rho| = 1
    assert (big.rho, big.p_value) == (pytest.approx(1.0), 0.0)


def test_spearman_undefined_cases_say_why():
    two = spearman([1, 2], [3, 4])
    assert two.rho is None and two.p_value is None and "at least 3" in two.reason
    flat = spearman([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5])
    assert flat.rho is None and flat.p_value is None and "y is constant" in flat.reason
    assert "x is constant" in spearman([2, 2, 2], [1, 2, 3]).reason
    assert flat.to_dict() == {"n": 4, "rho": None, "p_value": None, "reason": flat.reason}
    with pytest.raises(ValueError, match="non-finite"):
        spearman([1.0, 2.0, float("inf")], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
