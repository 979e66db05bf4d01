r"""Rank correlation: Spearman's ρ with its two-sided p-value (``scipy.stats.spearmanr``).

For paired values :math:`(x_i, y_i)`, i = 1..n, let :math:`R_i`, :math:`S_i` be their ranks (average ranks for
ties). Spearman's ρ is the Pearson correlation of the ranks; without ties it equals
:math:`1 - \frac{6\sum_i (R_i - S_i)^2}{n(n^2-1)}`. The p-value of H0: ρ = 0 uses
:math:`t = \rho\sqrt{(n-2)/(1-\rho^2)}` against Student's t with n − 2 degrees of freedom (scipy's default; an
approximation that is rough for very small n), and is 0 when :math:`|\rho| = 1`.

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
    return Correlation(n, float(res.statistic), float(res.pvalue))
