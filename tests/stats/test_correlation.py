"""Spearman's rho: the rank-difference formula, Pearson of average ranks, and the closed-form t p-value."""

from __future__ import annotations

import numpy as np
import pytest

from bayespeft.stats import spearman


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values share the mean of their positions (by brute force)."""
    return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])


def test_spearman_rank_difference_formula_and_p_value():
    # depths 1..6, ΔECE whose ranks are 2 1 4 3 6 5: sum d^2 = 6, rho = 1 - 6*6/(6*35) = 0.828571...
    # t = rho sqrt(4 / (1 - rho^2)); Student's t with 4 df has the closed-form CDF
    # F(t) = 1/2 + (3/8) (t / sqrt(1 + t^2/4)) (1 - t^2 / (12 (1 + t^2/4))), p = 2 (1 - F(t)).
    depth = [1, 2, 3, 4, 5, 6]
    delta = [0.011, -0.004, 0.020, 0.013, 0.051, 0.030]
    rho = 1 - 36 / 210
    t = rho * np.sqrt(4 / (1 - rho**2))
    q = 1 + t * t / 4
    p = 2 * (1 - (0.5 + 3 / 8 * (t / np.sqrt(q)) * (1 - t * t / (12 * q))))
    r = spearman(depth, delta)
    assert (r.n, r.reason) == (6, None)
    assert r.rho == pytest.approx(rho, abs=1e-12)
    assert r.p_value == pytest.approx(p, abs=1e-12)


def test_spearman_with_ties_is_pearson_of_average_ranks():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0])
    y = np.array([2.7, 1.8, 2.8, 1.8, 2.8, 4.5, 9.0, 4.5, 2.3, 5.3])
    want = np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1]
    assert spearman(x, y).rho == pytest.approx(want, abs=1e-12)


def test_spearman_perfect_monotone():
    x = np.arange(1.0, 8.0)
    up, down = spearman(x, np.exp(x)), spearman(x, -(x**3))
    assert (up.rho, up.p_value) == (pytest.approx(1.0), 0.0)
    assert (down.rho, down.p_value) == (pytest.approx(-1.0), 0.0)


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
