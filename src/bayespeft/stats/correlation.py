r"""Rank correlation: Spearman's ρ with its two-sided p-value (``scipy.stats.spearmanr``).

For paired values :math:`(x_i, y_i)`, i = 1..n, let :math:`R_i`, :math:`S_i` be their ranks (average ranks for
ties). Spearman's ρ is the Pearson correlation of the ranks; without ties it equals
:math:`1 - \frac{6\sum_i (R_i - S_i)^2}{n(n^2-1)}`. The two-sided p-value of H0: ρ = 0 (x and y independent):

* n ≤ :data:`EXACT_MAX_N` (8): exact, from the permutation distribution — ρ of x against every one of the n!
  orderings of y (ties kept as they are), :math:`p = \#\{\pi: |\rho_\pi| \ge |\rho|\} / n!` (with a relative
  tolerance of 1e-12 for rounding). For n = 3 a perfect ρ = ±1 has p = 2/6 = 1/3, never 0: three points cannot show
  a significant rank correlation.
* larger n: :math:`t = \rho\sqrt{(n-2)/(1-\rho^2)}` against Student's t with n − 2 degrees of freedom (scipy's
  default), which is 0 when :math:`|\rho| = 1`.

Used by the layer-wise analysis for "does ΔECE grow with depth?" (x = depth, y = ΔECE per group).
Fewer than 3 points or a constant x or y leave ρ undefined: the result's ``rho`` and ``p_value`` are then None and
``reason`` says why (no NaN is returned). Non-finite inputs raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from ._checks import as_1d_finite, same_length

#: largest n whose p-value is exact (8! = 40,320 orderings); above it the t approximation
EXACT_MAX_N = 8


@dataclass(frozen=True)
class Correlation:
    """Spearman ``rho`` in [-1, 1] and two-sided ``p_value`` over ``n`` points (None with a ``reason``)."""

    n: int
    rho: float | None
    p_value: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "rho": self.rho, "p_value": self.p_value, "reason": self.reason}


def spearman(x: Any, y: Any) -> Correlation:
    """Spearman's ρ of ``x`` (n,) and ``y`` (n,) with its two-sided p-value (module docstring)."""
    a, b = as_1d_finite(x, "x"), as_1d_finite(y, "y")
    n = same_length({"x": a, "y": b})
    if n < 3:
        return Correlation(n, None, None, f"{n} point(s): a rank correlation needs at least 3")
    for name, v in (("x", a), ("y", b)):
        if np.all(v == v[0]):
            return Correlation(n, None, None, f"{name} is constant ({v[0]:.4g} for all {n} points): ρ is undefined")
    res = _sps.spearmanr(a, b)
    rho = float(res.statistic)
    p = exact_p_value(a, b, rho) if n <= EXACT_MAX_N else float(res.pvalue)
    return Correlation(n, rho, p)


def exact_p_value(x: np.ndarray, y: np.ndarray, rho: float) -> float:
    """Two-sided permutation p-value of Spearman's ``rho`` of ``x``, ``y`` (n,): the fraction of the n! orderings of
    ``y`` whose |ρ| reaches |rho| (module docstring)."""
    from itertools import permutations

    rx, ry = _sps.rankdata(x), _sps.rankdata(y)
    perms = ry[np.array(list(permutations(range(len(ry)))))]  # (n!, n): every ordering of y's ranks
    cx = rx - rx.mean()
    cy = perms - perms.mean(axis=1, keepdims=True)
    rhos = cy @ cx / np.sqrt((cx @ cx) * (cy * cy).sum(axis=1))
    return float(np.mean(np.abs(rhos) >= abs(rho) * (1 - 1e-12)))
