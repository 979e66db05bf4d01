r"""Top-label calibration errors: ECE / MCE / RMS-CE over equal-width bins, and the equal-mass variant.

Inputs: ``probs`` (N, C) class probabilities (rows sum to 1), ``labels`` (N,) class indices; numpy or torch.

Top label: :math:`\hat y_i = \arg\max_c p_{ic}` (ties go to the lowest class index, as ``torch.argmax``), confidence
:math:`\hat p_i = p_{i\hat y_i}`, correctness :math:`a_i = [\hat y_i = y_i]`. Examples are grouped into bins
:math:`B_1..B_M`; for a non-empty bin, :math:`\mathrm{acc}_b = \frac{1}{|B_b|}\sum_{i\in B_b} a_i` and
:math:`\mathrm{conf}_b = \frac{1}{|B_b|}\sum_{i\in B_b}\hat p_i`. Empty bins are skipped. Then

* ``norm="l1"`` (ECE, Naeini et al. 2015; Guo et al. 2017): :math:`\sum_b \frac{|B_b|}{N}|\mathrm{acc}_b-\mathrm{conf}_b|`
* ``norm="max"`` (MCE): :math:`\max_b |\mathrm{acc}_b-\mathrm{conf}_b|`
* ``norm="l2"`` (RMS calibration error): :math:`\sqrt{\sum_b \frac{|B_b|}{N}(\mathrm{acc}_b-\mathrm{conf}_b)^2}`

**Equal-width bin edges** (:func:`calibration_error`): edges :math:`e_b = b/M`, ``b = 0..M``; bin ``b`` is the
left-closed interval :math:`[e_b, e_{b+1})`, except the last bin which is closed, :math:`[e_{M-1}, 1]`. This is
torchmetrics' ``MulticlassCalibrationError`` convention (``torch.bucketize(conf, edges, right=True) - 1``) with one
deliberate difference: torchmetrics puts confidences of exactly 1.0 into an extra, (M+1)-th bin of their own; here
they belong to the last of the M bins, so ``n_bins`` is always the number of bins. The two agree whenever no
confidence equals 1.0 exactly. (scikit-learn's ``calibration_curve`` uses right-closed bins ``(e_b, e_{b+1}]``.)

**Equal-mass bins** (:func:`adaptive_calibration_error`): examples sorted by confidence (stable sort) are split into
``n_bins`` contiguous groups whose sizes differ by at most one (the first ``N mod M`` groups get the extra example),
as ``numpy.array_split``. Ties in confidence may straddle a group boundary. This is the top-label equal-mass ECE
(Roelofs et al. 2022, "ECE_em"), not the class-wise ACE of Nixon et al. 2019.

All computations are in float64; results are Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._inputs import as_tensor, check_inputs

Norm = Literal["l1", "l2", "max"]
NORMS: tuple[str, ...] = ("l1", "l2", "max")


def _check_options(n_bins: int, norm: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)} (l1 = ECE, max = MCE, l2 = RMS-CE), got {norm!r}")


def top_label(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(confidence (N,), correct (N,) float 0/1)`` of the arg-max class (validated float64 inputs)."""
    pred = probs.argmax(dim=1)
    conf = probs.gather(1, pred[:, None]).squeeze(1)
    return conf, (pred == labels).to(probs.dtype)


def equal_width_bin_index(conf: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin index (N,) in ``[0, n_bins)`` of each confidence and the edges (n_bins + 1,); see module docstring."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf.to(torch.float64), edges, right=True) - 1
    return idx.clamp_(0, n_bins - 1), edges


def equal_mass_bin_index(conf: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin index (N,) for equal-mass bins: sorted ranks split as ``numpy.array_split`` would."""
    n = conf.shape[0]
    order = torch.sort(conf, stable=True).indices
    sizes = torch.full((n_bins,), n // n_bins, dtype=torch.int64)
    sizes[: n % n_bins] += 1
    idx = torch.empty(n, dtype=torch.int64)
    idx[order] = torch.repeat_interleave(torch.arange(n_bins), sizes)
    return idx


@dataclass
class BinStats:
    """Per-bin statistics. ``accuracy``/``confidence`` are NaN for empty bins; ``count`` is the number of examples."""

    count: torch.Tensor
    accuracy: torch.Tensor
    confidence: torch.Tensor


def bin_stats(conf: torch.Tensor, correct: torch.Tensor, idx: torch.Tensor, n_bins: int) -> BinStats:
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    s_acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct.to(torch.float64))
    s_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf.to(torch.float64))
    nan = torch.full_like(count, float("nan"))
    nonempty = count > 0
    return BinStats(
        count=count,
        accuracy=torch.where(nonempty, s_acc / count.clamp(min=1), nan),
        confidence=torch.where(nonempty, s_conf / count.clamp(min=1), nan),
    )


def reduce_bins(stats: BinStats, norm: str) -> float:
    """Combine per-bin gaps ``|acc_b - conf_b|`` with the chosen norm (empty bins skipped)."""
    keep = stats.count > 0
    w = stats.count[keep] / stats.count.sum()
    gap = (stats.accuracy[keep] - stats.confidence[keep]).abs()
    if norm == "l1":
        return float((w * gap).sum())
    if norm == "l2":
        return float(torch.sqrt((w * gap**2).sum()))
    return float(gap.max())


def calibration_error(probs: Any, labels: Any, n_bins: int = 15, norm: Norm = "l1") -> float:
    """Top-label calibration error over ``n_bins`` equal-width confidence bins (ECE / MCE / RMS-CE).

    Args:
        probs: (N, C) probabilities. labels: (N,) class indices.
        n_bins: number of equal-width bins over [0, 1]; bin ``b`` is ``[b/M, (b+1)/M)``, the last bin includes 1.
        norm: ``"l1"`` ECE, ``"max"`` MCE, ``"l2"`` RMS calibration error (see module docstring).
    """
    _check_options(n_bins, norm)
    p, y = check_inputs(probs, labels)
    conf, correct = top_label(p, y)
    idx, _ = equal_width_bin_index(conf, n_bins)
    return reduce_bins(bin_stats(conf, correct, idx, n_bins), norm)


def adaptive_calibration_error(probs: Any, labels: Any, n_bins: int = 15, norm: Norm = "l1") -> float:
    """Top-label calibration error over ``n_bins`` equal-mass bins (sizes differ by at most one).

    Bins are consecutive runs of the examples sorted by confidence; with ``N < n_bins`` some bins are empty and
    skipped. ``norm`` as in :func:`calibration_error`.
    """
    _check_options(n_bins, norm)
    p, y = check_inputs(probs, labels)
    conf, correct = top_label(p, y)
    idx = equal_mass_bin_index(conf, n_bins)
    return reduce_bins(bin_stats(conf, correct, idx, n_bins), norm)


@dataclass
class ReliabilityData:
    """Equal-width reliability diagram data (float64 numpy arrays).

    ``edges`` (M+1,), per bin (M,): ``count``, ``accuracy`` and ``confidence`` (NaN for empty bins); plus
    ``ece`` (l1) and ``mce`` (max) of the same bins.
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float
    mce: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists, NaN (empty bin) as None."""

        def lst(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "edges": lst(self.edges),
            "count": [int(v) for v in self.count],
            "accuracy": lst(self.accuracy),
            "confidence": lst(self.confidence),
            "ece": self.ece,
            "mce": self.mce,
        }


def reliability_diagram_data(probs: Any, labels: Any, n_bins: int = 15) -> ReliabilityData:
    """Per-bin accuracy/confidence/count over equal-width bins (same bins as :func:`calibration_error`)."""
    _check_options(n_bins, "l1")
    p, y = check_inputs(probs, labels)
    return _reliability(*top_label(p, y), n_bins)


def reliability_from_top_label(confidence: Any, correct: Any, n_bins: int = 15) -> ReliabilityData:
    """:func:`reliability_diagram_data` from the top-label ``confidence`` (N,) in [0, 1] and ``correct`` (N,) 0/1 or
    bool (e.g. per-example arrays saved by a run; numpy, or torch on any device), with the same bins."""
    _check_options(n_bins, "l1")
    conf = as_tensor(confidence, "confidence").to(torch.float64)
    hit = as_tensor(correct, "correct").to(torch.float64)
    if conf.ndim != 1 or conf.shape != hit.shape or conf.numel() == 0:
        raise ValueError(f"confidence and correct must be non-empty (N,) arrays of one length, got shapes "
                         f"{tuple(conf.shape)} and {tuple(hit.shape)}")
    if not torch.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidence must hold finite top-label probabilities in [0, 1]")
    if not ((hit == 0) | (hit == 1)).all():
        raise ValueError("correct must be 0/1 (or bool): whether the top label is right")
    return _reliability(conf, hit, n_bins)


def _reliability(conf: torch.Tensor, correct: torch.Tensor, n_bins: int) -> ReliabilityData:
    idx, edges = equal_width_bin_index(conf, n_bins)
    s = bin_stats(conf, correct, idx, n_bins)
    return ReliabilityData(
        edges=edges.numpy(),
        count=s.count.numpy(),
        accuracy=s.accuracy.numpy(),
        confidence=s.confidence.numpy(),
        ece=reduce_bins(s, "l1"),
        mce=reduce_bins(s, "max"),
    )
