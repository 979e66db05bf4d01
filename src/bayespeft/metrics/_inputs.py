"""Input checking shared by every metric: ``probs`` (N, C) class probabilities and ``labels`` (N,) class indices.

Both may be numpy arrays or torch tensors (any device). Metrics compute in float64 on CPU so that results do
not depend on the input dtype/device beyond the values themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Rows of ``probs`` must sum to 1 within this absolute tolerance (float32 softmax is within ~1e-6).
ROW_SUM_ATOL = 1e-3


def as_tensor(x: Any, name: str) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.detach().to("cpu")
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def check_inputs(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert; returns ``(probs float64 (N, C), labels int64 (N,))`` on CPU.

    Raises ``ValueError`` for wrong shapes, empty inputs, non-finite or negative probabilities, rows that do not
    sum to 1 (usually logits passed by mistake), non-integer labels or labels outside ``[0, C)``.
    """
    p = as_tensor(probs, "probs")
    y = as_tensor(labels, "labels")
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got shape {tuple(p.shape)}")
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got shape {tuple(y.shape)}")
    n, c = p.shape
    if n == 0 or c == 0:
        raise ValueError(f"probs must be non-empty with at least one class, got shape {tuple(p.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"probs has {n} rows but labels has {y.shape[0]} entries; they must match")
    if not p.is_floating_point():
        raise ValueError(f"probs must be floating point, got dtype {p.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    p = p.to(torch.float64)
    y = y.to(torch.int64)
    if not torch.isfinite(p).all():
        raise ValueError("probs contains NaN or Inf values")
    if (p < 0).any():
        raise ValueError(f"probs must be non-negative (min is {p.min().item():.4g}); pass probabilities, not logits")
    sums = p.sum(dim=1)
    worst = (sums - 1).abs().max().item()
    if worst > ROW_SUM_ATOL:
        raise ValueError(
            f"each row of probs must sum to 1 (largest deviation {worst:.4g} > {ROW_SUM_ATOL}); "
            "pass probabilities (e.g. logits.softmax(-1)), not logits"
        )
    if (y < 0).any() or (y >= c).any():
        raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got values in [{y.min().item()}, {y.max().item()}]")
    return p, y
