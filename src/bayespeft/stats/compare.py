r"""Paired comparisons of two methods on the same seeds: t-test, Wilcoxon, effect size, Holm over a family.

Inputs are two arrays ``a``, ``b`` of shape (n,) where entry i of each comes from the same seed (or split, or
example); every test works on the differences :math:`d_i = a_i - b_i` (positive = ``a`` higher).

* **Paired t-test** (``scipy.stats.ttest_rel``): :math:`t = \bar d / (s_d/\sqrt n)` with n − 1 degrees of
  freedom, two-sided :math:`p = 2\,P(T_{n-1} \ge |t|)`. Needs n ≥ 2 and :math:`s_d > 0`.
* **Wilcoxon signed-rank** (``scipy.stats.wilcoxon``, ``zero_method="wilcox"``: zero differences are dropped):
  rank :math:`|d_i|` (average ranks for ties), :math:`W^+ = \sum_{d_i>0} r_i`, :math:`W^- = \sum_{d_i<0} r_i`;
  the statistic is :math:`\min(W^+, W^-)`; the two-sided p-value (scipy's ``method="auto"``) comes from the exact
  null distribution of :math:`W^+` (all :math:`2^n` sign patterns equally likely) for up to 50 untied
  differences, from exhaustive sign permutations of the tied ranks for up to 13 tied ones, and from the normal
  approximation otherwise. With n non-zero differences the smallest attainable p is :math:`2/2^n`: 0.25 for 3
  seeds, 0.0625 for 5 — it cannot reach 0.05 with fewer than 6 seeds, whatever the data.
* **Effect size**: Cohen's :math:`d_z = \bar d / s_d` (Cohen 1988, paired design), and the mean difference with
  its t-interval (:func:`bayespeft.stats.intervals.t_interval` of the :math:`d_i`).
* **Holm–Bonferroni** (Holm 1979) over a family of m p-values: sort :math:`p_{(1)} \le \dots \le p_{(m)}`,
  adjusted :math:`\tilde p_{(i)} = \min\bigl(1, \max_{j \le i} (m - j + 1)\, p_{(j)}\bigr)`; reject
  :math:`H_{(i)}` iff :math:`\tilde p_{(i)} \le \alpha`. Controls the family-wise error rate at α.

A test that cannot be computed (n < 2, all differences equal, all zero) returns its value fields as None and a
``reason``; no NaN is ever returned. Non-finite inputs raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as _sps

from ._checks import as_1d_finite, check_level, fmt, same_length
from .intervals import TInterval, t_interval


@dataclass(frozen=True)
class PairedTest:
    """One paired test: ``statistic`` and two-sided ``p_value`` (None with a ``reason`` when not computable)."""

    test: str
    n: int
    statistic: float | None
    p_value: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("test", "n", "statistic", "p_value", "reason")}


@dataclass(frozen=True)
class EffectSize:
    """Cohen's d_z of paired differences (None with a ``reason`` when not computable)."""

    n: int
    d_z: float | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "d_z": self.d_z, "reason": self.reason}


def paired_differences(a: Any, b: Any) -> np.ndarray:
    """:math:`d = a - b`, shape (n,); raises ``ValueError`` for non-finite values or different lengths."""
    x, y = as_1d_finite(a, "a"), as_1d_finite(b, "b")
    same_length({"a": x, "b": y})
    return x - y


def _paired(a: Any, b: Any) -> tuple[np.ndarray, str | None]:
    """``(d, reason)``: the differences and why a variance-based statistic of them is undefined (else None).

    Differences that differ only by rounding (spread within 16 ulps of the inputs' magnitude, e.g.
    0.3 − 0.2 vs 0.5 − 0.4) count as equal: their variance is rounding noise and t would be ~1e16.
    """
    d = paired_differences(a, b)
    if len(d) < 2:
        return d, f"{len(d)} pair(s): a paired test needs at least 2"
    scale = max(np.abs(as_1d_finite(a, "a")).max(), np.abs(as_1d_finite(b, "b")).max())
    if np.ptp(d) <= 16 * np.finfo(np.float64).eps * scale:
        return d, f"all {len(d)} differences equal {fmt(d[0])}: zero variance, the statistic is undefined"
    return d, None


def paired_t_test(a: Any, b: Any) -> PairedTest:
    """Two-sided paired t-test of mean(a − b) = 0 (module docstring); None with a reason for n < 2 or s_d = 0."""
    d, why = _paired(a, b)
    if why is not None:
        return PairedTest("paired t", len(d), None, None, why)
    res = _sps.ttest_1samp(d, 0.0)  # = ttest_rel(a, b)
    return PairedTest("paired t", len(d), float(res.statistic), float(res.pvalue))


def wilcoxon_test(a: Any, b: Any) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test on a − b, zero differences dropped; ``n`` counts the non-zero ones.

    None with a reason when fewer than 2 pairs are given or every difference is zero.
    """
    d = paired_differences(a, b)
    if len(d) < 2:
        return PairedTest("wilcoxon", len(d), None, None, f"{len(d)} pair(s): a paired test needs at least 2")
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return PairedTest("wilcoxon", 0, None, None, f"all {len(d)} differences are zero: nothing to rank")
    res = _sps.wilcoxon(d, zero_method="wilcox", method="auto")
    return PairedTest("wilcoxon", nz, float(res.statistic), float(res.pvalue))


def cohens_dz(a: Any, b: Any) -> EffectSize:
    r"""Cohen's :math:`d_z = \bar d / s_d` of :math:`d = a - b` (ddof = 1); None with a reason for n < 2 or s_d = 0."""
    d, why = _paired(a, b)
    if why is not None:
        return EffectSize(len(d), None, why)
    return EffectSize(len(d), float(d.mean() / d.std(ddof=1)))


@dataclass(frozen=True)
class HolmResult:
    """Holm-adjusted p-values and decisions, in the order given; None where the input p-value was None."""

    alpha: float
    m: int
    adjusted: list[float | None]
    reject: list[bool | None]

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "m": self.m, "adjusted": self.adjusted, "reject": self.reject}


def holm(p_values: Sequence[float | None], alpha: float = 0.05) -> HolmResult:
    """Holm–Bonferroni step-down correction of a family of p-values (module docstring).

    ``None`` entries (tests that could not be run) are left out of the family: ``m`` counts only the others, and
    their adjusted value and decision are None. Raises ``ValueError`` for a NaN or a value outside [0, 1].
    """
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")
    keep = [i for i, p in enumerate(p_values) if p is not None]
    p = np.array([p_values[i] for i in keep], dtype=np.float64)
    if p.size and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise ValueError(f"p-values must be numbers in [0, 1] (None for a test not run), got {list(p_values)!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]  # (m - j + 1) p_(j), j 1-based
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted: list[float | None] = [None] * len(p_values)
    reject: list[bool | None] = [None] * len(p_values)
    for rank, j in enumerate(order):
        adjusted[keep[j]] = float(adj_sorted[rank])
        reject[keep[j]] = bool(adj_sorted[rank] <= alpha)
    return HolmResult(float(alpha), m, adjusted, reject)


@dataclass(frozen=True)
class PairedComparison:
    """Everything about a − b on paired values: the mean difference with its t-interval, d_z and both tests."""

    n: int
    mean_difference: TInterval
    effect: EffectSize
    t_test: PairedTest
    wilcoxon: PairedTest

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_difference": self.mean_difference.to_dict(),
            "effect": self.effect.to_dict(),
            "t_test": self.t_test.to_dict(),
            "wilcoxon": self.wilcoxon.to_dict(),
        }


def compare_paired(a: Any, b: Any, level: float = 0.95) -> PairedComparison:
    """Mean difference a − b with its ``level`` t-interval, Cohen's d_z, paired t-test and Wilcoxon test."""
    d = paired_differences(a, b)
    return PairedComparison(len(d), t_interval(d, level), cohens_dz(a, b), paired_t_test(a, b), wilcoxon_test(a, b))


@dataclass(frozen=True)
class MethodComparison:
    """``method`` − ``other`` on their common seeds, with Holm-adjusted p-values over the whole family."""

    method: str
    other: str
    seeds: list[Hashable]
    comparison: PairedComparison
    t_holm: float | None
    t_reject: bool | None
    wilcoxon_holm: float | None
    wilcoxon_reject: bool | None

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "other": self.other, "seeds": list(self.seeds)}
        out.update(self.comparison.to_dict())
        out.update(t_holm=self.t_holm, t_reject=self.t_reject)
        out.update(wilcoxon_holm=self.wilcoxon_holm, wilcoxon_reject=self.wilcoxon_reject)
        return out


def compare_methods(
    by_method: Mapping[str, Mapping[Hashable, float]],
    baseline: str | None = None,
    level: float = 0.95,
    alpha: float = 0.05,
) -> list[MethodComparison]:
    """Paired comparisons between methods, matched by seed, Holm-corrected over the family of comparisons.

    Args:
        by_method: ``{method: {seed: value}}``, e.g. test accuracy per seed. Values are paired by seed key, never
            by position; a seed missing from either method is left out of that comparison (``seeds`` lists those
            used, sorted).
        baseline: compare every other method with this one (``method − baseline``); None: every pair in the
            given order (``first − second``).
        level: level of the mean difference's t-interval. alpha: family-wise error rate of the Holm decisions,
            applied separately to the t-test p-values and the Wilcoxon p-values of all comparisons.
    """
    check_level(level)
    names = list(by_method)
    if baseline is not None and baseline not in by_method:
        raise ValueError(f"baseline {baseline!r} is not one of the methods: {', '.join(map(repr, names))}")
    if baseline is None:
        pairs = list(combinations(names, 2))
    else:
        pairs = [(name, baseline) for name in names if name != baseline]
    comps = []
    for first, second in pairs:
        seeds = sorted(set(by_method[first]) & set(by_method[second]), key=lambda s: (str(type(s)), s))
        a = [by_method[first][s] for s in seeds]
        b = [by_method[second][s] for s in seeds]
        comps.append((first, second, seeds, compare_paired(a, b, level)))
    t_holm = holm([c[3].t_test.p_value for c in comps], alpha)
    w_holm = holm([c[3].wilcoxon.p_value for c in comps], alpha)
    return [
        MethodComparison(f, s, seeds, c, t_holm.adjusted[i], t_holm.reject[i], w_holm.adjusted[i], w_holm.reject[i])
        for i, (f, s, seeds, c) in enumerate(comps)
    ]
