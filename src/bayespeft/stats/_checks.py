"""Input checks shared by :mod:`bayespeft.stats`: 1-D finite float64 arrays and a confidence level in (0, 1).

Missing values are the caller's to drop: a NaN or an infinity is an error here, never silently propagated.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_1d_finite(values: Any, name: str = "values") -> np.ndarray:
    """``values`` as a float64 array of shape (n,); raises ``ValueError`` for another shape or a non-finite entry."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, got {values!r:.80}") from exc
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per run/example), got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at index {int(np.argmax(bad))}: "
            f"{a[bad][0]!r}); drop or fix them before computing statistics"
        )
    return a


def check_level(level: float) -> float:
    """A confidence level strictly between 0 and 1 (e.g. 0.95), as a float."""
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a confidence level strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def same_length(arrays: dict[str, np.ndarray]) -> int:
    """The common length of paired arrays; raises ``ValueError`` naming each length when they differ."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"paired inputs must have the same length (one entry per example/seed), got {shown}")
    return next(iter(lengths.values()))


def fmt(x: float) -> str:
    """A number for a message: 4 significant digits."""
    return f"{x:.4g}"
