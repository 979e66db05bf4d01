r"""Classification metrics on predicted probabilities.

Inputs: ``probs`` (N, C) class probabilities (rows sum to 1), ``labels`` (N,) class indices in ``[0, C)``; numpy
or torch. The predicted class is ``argmax_c p_ic`` with ties going to the lowest index (``torch.argmax``).

* :func:`nll`: :math:`-\frac1N\sum_i \log p_{i y_i}`, natural log. A probability of exactly 0 is clamped to the
  smallest positive normal number of the input dtype (float32: 1.2e-38, i.e. at most 87.3 nats per example;
  float64: 2.2e-308, 708 nats; float16 inputs use float32's), because such a value only says "below what this dtype can hold".
* :func:`brier`: multi-class Brier score :math:`\frac1N\sum_i\sum_c (p_{ic}-[y_i=c])^2`, in ``[0, 2]`` (Brier 1950;
  the "sum over classes" convention of torch-uncertainty and of scikit-learn's multi-class
  ``brier_score_loss(..., scale_by_half=False)``; some papers divide by 2 or by C).
* :func:`accuracy` with ``k``: example ``i`` counts if the rank of its true class is below ``k``, where the rank is the
  number of classes with a strictly larger probability plus the number of lower-indexed classes with an equal one
  (deterministic tie rule; ``k=1`` equals arg-max accuracy).
* :func:`confusion_matrix`: ``M[t, p]`` = number of examples of true class ``t`` predicted as ``p`` (scikit-learn's
  convention: rows true, columns predicted), shape (C, C).
* :func:`precision_recall_f1`: per class :math:`P_c = TP_c/(TP_c+FP_c)`, :math:`R_c = TP_c/(TP_c+FN_c)`,
  :math:`F1_c = 2TP_c/(2TP_c+FP_c+FN_c)`; a 0/0 is 0 (scikit-learn ``zero_division=0``). Macro values are the
  unweighted mean of the per-class values over the classes that occur in the labels or in the predictions
  (:math:`TP_c+FP_c+FN_c>0`), which is what scikit-learn (default ``labels``) and torchmetrics (``average="macro"``)
  both do. Macro F1 is the mean of per-class F1, not the F1 of macro precision and recall.
* :func:`per_class_accuracy`: :math:`TP_c/N_c` (= per-class recall), NaN for a class with no examples.
"""

from __future__ import annotations

from typing import Any

import torch

from ._inputs import as_tensor, check_inputs


def nll(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class (nats); see module docstring for the clamp."""
    raw = as_tensor(probs, "probs")
    tiny = torch.finfo(raw.dtype if raw.is_floating_point() and raw.dtype != torch.float16 else torch.float32).tiny
    p, y = check_inputs(probs, labels)
    py = p.gather(1, y[:, None]).squeeze(1).clamp(min=tiny)
    return float(-py.log().mean())


def brier(probs: Any, labels: Any) -> float:
    """Multi-class Brier score, mean over examples of the sum over classes of squared errors (range [0, 2])."""
    p, y = check_inputs(probs, labels)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(p.dtype)
    return float(((p - onehot) ** 2).sum(dim=1).mean())


def true_class_rank(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rank (N,) of the true class with the deterministic tie rule of the module docstring (0 = top)."""
    py = p.gather(1, y[:, None])
    cls = torch.arange(p.shape[1])[None, :]
    return ((p > py) | ((p == py) & (cls < y[:, None]))).sum(dim=1)


def accuracy(probs: Any, labels: Any, k: int = 1) -> float:
    """Top-``k`` accuracy in [0, 1]."""
    p, y = check_inputs(probs, labels)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= p.shape[1]:
        raise ValueError(f"k must be an integer in [1, {p.shape[1]}] (the number of classes), got {k!r}")
    return float((true_class_rank(p, y) < k).to(torch.float64).mean())


def confusion_matrix(probs: Any, labels: Any) -> torch.Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted (arg-max) class."""
    p, y = check_inputs(probs, labels)
    c = p.shape[1]
    pred = p.argmax(dim=1)
    return torch.bincount(y * c + pred, minlength=c * c).reshape(c, c)


def _div0(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def precision_recall_f1(probs: Any, labels: Any) -> dict[str, Any]:
    """Per-class and macro precision, recall and F1 (see module docstring for 0/0 and which classes count).

    Returns ``{"precision", "recall", "f1", "support"}`` as (C,) tensors (float64; support int64) and
    ``{"precision_macro", "recall_macro", "f1_macro"}`` as floats.
    """
    cm = confusion_matrix(probs, labels).to(torch.float64)
    tp = cm.diagonal()
    fp = cm.sum(dim=0) - tp
    fn = cm.sum(dim=1) - tp
    prec, rec, f1 = _div0(tp, tp + fp), _div0(tp, tp + fn), _div0(2 * tp, 2 * tp + fp + fn)
    present = (tp + fp + fn) > 0  # at least one example exists, so at least one class is present
    return {
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "support": cm.sum(dim=1).to(torch.int64),
        "precision_macro": float(prec[present].mean()),
        "recall_macro": float(rec[present].mean()),
        "f1_macro": float(f1[present].mean()),
    }


def per_class_accuracy(probs: Any, labels: Any) -> torch.Tensor:
    """(C,) float64 accuracy within each true class; NaN where the class has no examples."""
    cm = confusion_matrix(probs, labels).to(torch.float64)
    n = cm.sum(dim=1)
    return torch.where(n > 0, cm.diagonal() / n.clamp(min=1), torch.full_like(n, float("nan")))
