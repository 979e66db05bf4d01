r"""A metric over runs (seeds): mean ± std and a Student-t interval, and the same for many metrics at once.

For values :math:`x_1..x_n` of one metric over n runs: mean :math:`\bar x`, std :math:`s` (ddof = 1) and the
``level`` interval :math:`\bar x \pm t_{1-\alpha/2,n-1}\,s/\sqrt n` (:func:`bayespeft.stats.intervals.t_interval`,
whose result this is). Fewer than 2 runs: std and interval are None, not zero, and the text form says so.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from .intervals import TInterval, t_interval


def summarize_over_runs(values: Any, level: float = 0.95) -> TInterval:
    """Mean, std (ddof = 1), ``level`` t-interval and n of one metric's values (n,) over runs.

    ``std``/``half_width``/``lo``/``hi`` are None for fewer than 2 runs; ``mean`` is None for none.
    """
    return t_interval(values, level)


def format_summary(s: TInterval, digits: int = 4) -> str:
    """One line for a table: ``"0.8123 ± 0.0102 [0.7870, 0.8376] (n=3, 95% t)"``, or ``"0.8123 (n=1, no std)"``."""
    if s.mean is None:
        return "n/a (n=0)"
    if s.std is None or s.lo is None or s.hi is None:
        return f"{s.mean:.{digits}f} (n={s.n}, no std)"
    pct = f"{100 * s.level:g}%"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} [{s.lo:.{digits}f}, {s.hi:.{digits}f}] (n={s.n}, {pct} t)"


def summarize_metrics(runs: Iterable[Mapping[str, Any]], level: float = 0.95) -> dict[str, TInterval]:
    """Summary per metric name over run records ``[{metric: value, ...}, ...]`` (e.g. one dict per seed).

    A metric counts the runs that have it with a number (None, missing, bool and non-numeric values are skipped,
    so ``n`` may differ between metrics); keys keep their first-seen order. Non-finite numbers raise ``ValueError``.
    """
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, v in run.items():
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                values.setdefault(key, []).append(float(v))
    out = {}
    for key, vs in values.items():
        try:
            out[key] = t_interval(vs, level)
        except ValueError as exc:
            raise ValueError(f"metric {key!r}: {exc}") from exc
    return out
