r"""Confidence intervals: Student-t over runs, percentile bootstrap over examples, and ΔECE's paired bootstrap.

**t-interval** (:func:`t_interval`), for values :math:`x_1..x_n` (e.g. one metric over n seeds):
:math:`\bar x = \frac1n\sum_i x_i`, :math:`s = \sqrt{\frac{1}{n-1}\sum_i (x_i-\bar x)^2}` (ddof = 1) and

.. math:: \bar x \pm t_{1-\alpha/2,\,n-1}\, s/\sqrt n, \qquad \alpha = 1 - \text{level}.

It assumes the values are independent draws from a roughly normal distribution. With ``n < 2`` there is no
standard deviation: ``std``, ``half_width``, ``lo`` and ``hi`` are ``None`` (never 0) and ``reason`` says why.

**Percentile bootstrap** (:func:`bootstrap_interval`; Efron & Tibshirani 1993, ch. 13), for a statistic
:math:`T` of N aligned examples: draw B index vectors :math:`I_b \in \{0..N-1\}^N` uniformly with replacement,
compute :math:`T_b = T(\text{arrays}[I_b])` and report the empirical :math:`\alpha/2` and :math:`1-\alpha/2`
quantiles of :math:`T_1..T_B` (linear interpolation, ``numpy.quantile``'s default). Every array is indexed with the
*same* :math:`I_b` (paired resampling), so a difference of two statistics on the same examples keeps their
correlation. The draws are ``numpy.random.default_rng(seed).integers(0, N, (B, N))`` taken in row blocks (the same
stream whatever the block size), which is also what ``scipy.stats.bootstrap(..., paired=True,
method="percentile")`` draws for the same seed, so the two agree on fixed inputs.

**ΔECE** (:func:`delta_ece_interval`): :math:`\Delta = \mathrm{ECE}_{MAP} - \mathrm{ECE}_{Bayes}` on the same test
examples (positive = the Bayesian predictive is better calibrated), with the top-label ECE of
:mod:`bayespeft.metrics.calibration` (M equal-width bins :math:`[b/M, (b+1)/M)`, confidence 1.0 in the last bin).
A bin's contribution :math:`\frac{|B_m|}{N}|\mathrm{acc}_m - \mathrm{conf}_m|` equals
:math:`\frac1N|\sum_{i\in B_m}(a_i - \hat p_i)|`, and an example's bin does not change under resampling, so with
:math:`W_{bi}` = how often example i is drawn in replicate b and :math:`A_{im} = (a_i - \hat p_i)[i \in B_m]`,

.. math:: \mathrm{ECE}_b = \frac1N \sum_m \bigl|(W A)_{bm}\bigr|,

one (B, N) @ (N, M) product per model for all replicates at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sps

from ._checks import as_1d_finite, check_level, fmt, same_length

#: Bootstrap index blocks hold at most this many entries (B_block * N), bounding memory to a few tens of MB.
BLOCK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class TInterval:
    """Mean, standard deviation (ddof = 1) and a Student-t confidence interval of ``n`` values.

    ``mean`` is None only for ``n == 0``; ``std``, ``half_width``, ``lo``, ``hi`` are None for ``n < 2``, and
    ``reason`` then says why (it is None when everything was computed).
    """

    n: int
    level: float
    mean: float | None
    std: float | None
    half_width: float | None
    lo: float | None
    hi: float | None
    reason: str | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(lo, hi)``, or None when there is no interval."""
        return None if self.lo is None or self.hi is None else (self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (None stays None)."""
        return {k: getattr(self, k) for k in ("n", "level", "mean", "std", "half_width", "lo", "hi", "reason")}


def t_interval(values: Any, level: float = 0.95) -> TInterval:
    r"""Student-t interval :math:`\bar x \pm t_{1-\alpha/2, n-1} s/\sqrt n` of ``values`` (n,), see module docstring.

    Raises ``ValueError`` for a non-finite value, a shape other than (n,) or a level outside (0, 1).
    """
    level = check_level(level)
    x = as_1d_finite(values)
    n = len(x)
    if n == 0:
        return TInterval(0, level, None, None, None, None, None, "no values")
    mean = float(x.mean())
    if n < 2:
        return TInterval(1, level, mean, None, None, None, None, "one value: a std and an interval need at least 2")
    std = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + level / 2.0, df=n - 1) * std / np.sqrt(n))
    return TInterval(n, level, mean, std, half, mean - half, mean + half)


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic on all ``n`` examples and its percentile-bootstrap interval over ``n_boot`` resamples.

    ``estimate`` is the statistic on the original examples; ``se`` the std (ddof = 1) of the replicates. ``lo``,
    ``hi`` and ``se`` are None when no interval could be formed (fewer than 2 examples, or replicates that are not
    finite), with ``reason`` saying why. ``replicates`` (n_boot,) is kept for inspection, not serialised.
    """

    estimate: float
    lo: float | None
    hi: float | None
    se: float | None
    level: float
    n: int
    n_boot: int
    seed: int
    reason: str | None = None
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.lo is None or self.hi is None else (self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without the replicates."""
        keys = ("estimate", "lo", "hi", "se", "level", "n", "n_boot", "seed", "reason")
        return {k: getattr(self, k) for k in keys}


def _check_boot_options(n_boot: int, seed: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2 (2000 is usual for a 95% interval), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def bootstrap_index_blocks(n: int, n_boot: int, seed: int, block: int | None = None) -> Iterator[np.ndarray]:
    """Yield the bootstrap index matrix (n_boot, n) in row blocks of at most ``block`` rows (int64).

    The concatenation of the blocks is ``numpy.random.default_rng(seed).integers(0, n, (n_boot, n))`` whatever
    the block size. Default block: as many rows as fit in :data:`BLOCK_ENTRIES` entries.
    """
    _check_boot_options(n_boot, seed)
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ENTRIES // max(n, 1)) if block is None else int(block)
    for start in range(0, n_boot, block):
        yield rng.integers(0, n, (min(block, n_boot - start), n))


def _percentile_result(
    estimate: float, reps: np.ndarray, level: float, n: int, n_boot: int, seed: int
) -> BootstrapInterval:
    bad = ~np.isfinite(reps)
    if bad.any():
        why = f"{int(bad.sum())} of {n_boot} bootstrap replicates are not finite (e.g. {reps[bad][0]!r})"
        return BootstrapInterval(estimate, None, None, None, level, n, n_boot, seed, why, reps)
    lo, hi = np.quantile(reps, [0.5 - level / 2.0, 0.5 + level / 2.0])
    se = float(reps.std(ddof=1))
    return BootstrapInterval(estimate, float(lo), float(hi), se, level, n, n_boot, seed, None, reps)


def bootstrap_interval(
    stat_fn: Callable[..., Any],
    *arrays: Any,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    vectorized: bool = True,
    block: int | None = None,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``stat_fn`` over examples, resampling all ``arrays`` with the same indices.

    Args:
        stat_fn: the statistic. ``vectorized=True``: called with each array indexed by a (B, N) index block, i.e.
            shapes (B, N, ...), and must return (B,) values, one per replicate (e.g. ``lambda a, b: (a - b).mean(-1)``).
            ``vectorized=False``: called with arrays of shape (N, ...) and must return one number.
        arrays: one or more arrays of shape (N, ...) aligned along axis 0 (entry i of each is example i).
        n_boot: number of bootstrap replicates B. level: confidence level. seed: seed of the index draws.
        block: replicates per block (vectorized only); default bounds memory, see :func:`bootstrap_index_blocks`.

    With N == 1 the estimate is returned with no interval (``reason`` set). Raises ``ValueError`` for no arrays,
    no examples, arrays of different lengths, or a statistic that does not return one value per replicate.
    """
    level = check_level(level)
    _check_boot_options(n_boot, seed)
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array of examples after stat_fn")
    arrs = [np.asarray(a) for a in arrays]
    for i, a in enumerate(arrs):
        if a.ndim == 0:
            raise ValueError(f"array {i} is a scalar; pass arrays of shape (N, ...) with one entry per example")
    n = same_length({f"array {i}": a for i, a in enumerate(arrs)})
    if n == 0:
        raise ValueError("bootstrap_interval got no examples (arrays of length 0)")

    def call(idx: np.ndarray) -> np.ndarray:
        if vectorized:
            out = np.asarray(stat_fn(*[a[idx] for a in arrs]), dtype=np.float64)
            if out.shape != (idx.shape[0],):
                raise ValueError(
                    f"vectorized stat_fn must return shape ({idx.shape[0]},) (one value per replicate) for inputs "
                    f"of shape {idx.shape} + example shape, got shape {out.shape}; reduce over axis -1 (or the "
                    "example axis 1), or pass vectorized=False"
                )
            return out
        return np.array([float(stat_fn(*[a[row] for a in arrs])) for row in idx], dtype=np.float64)

    estimate = float(call(np.arange(n)[None, :])[0])
    if n < 2:
        why = "one example: a bootstrap interval needs at least 2"
        return BootstrapInterval(estimate, None, None, None, level, n, n_boot, seed, why)
    reps = np.concatenate([call(idx) for idx in bootstrap_index_blocks(n, n_boot, seed, block)])
    return _percentile_result(estimate, reps, level, n, n_boot, seed)


def _ece_design(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> np.ndarray:
    """A (N, M): ``A[i, m] = (correct_i - conf_i) * [example i in bin m]``, bins as bayespeft.metrics."""
    import torch

    from bayespeft.metrics.calibration import equal_width_bin_index

    idx, _ = equal_width_bin_index(torch.from_numpy(conf), n_bins)
    a = np.zeros((len(conf), n_bins), dtype=np.float64)
    a[np.arange(len(conf)), idx.numpy()] = correct - conf
    return a


def _check_top_label(conf: Any, correct: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    c = as_1d_finite(conf, f"conf_{which}")
    if ((c < 0) | (c > 1)).any():
        span = f"[{fmt(c.min())}, {fmt(c.max())}]"
        raise ValueError(f"conf_{which} must be top-label confidences in [0, 1], got values in {span}")
    k = as_1d_finite(correct, f"correct_{which}")
    if not np.isin(k, (0.0, 1.0)).all():
        raise ValueError(f"correct_{which} must be 0/1 (or bool): whether the top label is right, got other values")
    return c, k


def delta_ece_interval(
    conf_map: Any,
    correct_map: Any,
    conf_bayes: Any,
    correct_bayes: Any,
    n_bins: int = 15,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    block: int | None = None,
) -> BootstrapInterval:
    r"""Paired percentile-bootstrap interval of :math:`\mathrm{ECE}_{MAP} - \mathrm{ECE}_{Bayes}` over test examples.

    Args:
        conf_map, conf_bayes: (N,) top-label confidences :math:`\hat p_i` of each predictive on the same N examples.
        correct_map, correct_bayes: (N,) 0/1 or bool, whether each predictive's top label is right.
        n_bins: equal-width bins M (15 as :func:`bayespeft.metrics.calibration_error`). n_boot, level, seed, block:
            as :func:`bootstrap_interval`, whose index stream this uses (same seed, same resamples).

    ``estimate`` equals ``calibration_error(probs_map, y) - calibration_error(probs_bayes, y)`` (to rounding); both
    ECEs of a replicate use the same resampled examples, so identical MAP and Bayes inputs give exactly 0.
    Vectorised over replicates (module docstring): 2000 replicates of 10k examples take well under a second.
    """
    level = check_level(level)
    _check_boot_options(n_boot, seed)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    cm, km = _check_top_label(conf_map, correct_map, "map")
    cb, kb = _check_top_label(conf_bayes, correct_bayes, "bayes")
    n = same_length({"conf_map": cm, "correct_map": km, "conf_bayes": cb, "correct_bayes": kb})
    if n == 0:
        raise ValueError("delta_ece_interval got no examples (arrays of length 0)")
    design = np.concatenate([_ece_design(cm, km, n_bins), _ece_design(cb, kb, n_bins)], axis=1)  # (N, 2M)

    def delta(weights: np.ndarray) -> np.ndarray:  # weights (B, N) -> (B,)
        per_bin = np.abs(weights @ design)
        return (per_bin[:, :n_bins].sum(axis=1) - per_bin[:, n_bins:].sum(axis=1)) / n

    estimate = float(delta(np.ones((1, n)))[0])
    if n < 2:
        why = "one example: a bootstrap interval needs at least 2"
        return BootstrapInterval(estimate, None, None, None, level, n, n_boot, seed, why)
    reps = []
    for idx in bootstrap_index_blocks(n, n_boot, seed, block):
        b = idx.shape[0]
        idx += n * np.arange(b)[:, None]  # row b's indices -> b*n + i, so one bincount counts every replicate
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        reps.append(delta(counts.astype(np.float64)))
    return _percentile_result(estimate, np.concatenate(reps), level, n, n_boot, seed)
