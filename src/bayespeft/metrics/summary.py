"""All classification metrics of one predictive in one JSON-ready dict."""

from __future__ import annotations

from typing import Any

from ._inputs import check_inputs
from .calibration import adaptive_calibration_error, calibration_error
from .classification import accuracy, brier, confusion_matrix, nll, per_class_accuracy, precision_recall_f1


def classification_metrics(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, Any]:
    """Every metric of :mod:`bayespeft.metrics` on ``probs`` (N, C) and ``labels`` (N,).

    Keys (scalars are Python floats/ints; conventions in :mod:`~bayespeft.metrics.classification` and
    :mod:`~bayespeft.metrics.calibration`):

    ``n``, ``num_classes``, ``n_bins``; ``acc`` (top-1), ``top5_acc`` (only when C >= 5); ``nll`` (nats);
    ``brier`` (sum over classes, in [0, 2]); ``ece``, ``mce``, ``rmsce`` (equal-width bins), ``ace`` (equal-mass
    ECE); ``precision_macro``, ``recall_macro``, ``f1_macro``; lists of length C: ``per_class_accuracy`` (None for a
    class with no examples), ``per_class_f1``; ``confusion_matrix`` (C x C nested list, rows true, columns predicted).
    """
    p, y = check_inputs(probs, labels)  # validate once, then pass the float64 tensors on
    n, c = p.shape
    prf = precision_recall_f1(p, y)
    out: dict[str, Any] = {"n": int(n), "num_classes": int(c), "n_bins": int(n_bins), "acc": accuracy(p, y, k=1)}
    if c >= 5:
        out["top5_acc"] = accuracy(p, y, k=5)
    out.update(
        nll=nll(probs, labels),  # original dtype decides the clamp of exact zeros
        brier=brier(p, y),
        ece=calibration_error(p, y, n_bins=n_bins, norm="l1"),
        mce=calibration_error(p, y, n_bins=n_bins, norm="max"),
        rmsce=calibration_error(p, y, n_bins=n_bins, norm="l2"),
        ace=adaptive_calibration_error(p, y, n_bins=n_bins, norm="l1"),
        precision_macro=prf["precision_macro"],
        recall_macro=prf["recall_macro"],
        f1_macro=prf["f1_macro"],
        per_class_accuracy=[None if v != v else float(v) for v in per_class_accuracy(p, y).tolist()],
        per_class_f1=[float(v) for v in prf["f1"].tolist()],
        confusion_matrix=confusion_matrix(p, y).tolist(),
    )
    return out
