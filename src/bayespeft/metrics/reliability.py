"""Reliability diagram PNG (matplotlib, Agg canvas; no global pyplot state, safe in worker threads).

Bars: per equal-width bin, accuracy (bar height) against the bin; the gap to the mean confidence of the bin is
drawn as a hatched bar; the diagonal is perfect calibration. Bins are those of
:func:`bayespeft.metrics.calibration_error` (edges ``b/M``, left-closed, last bin includes 1). A lower panel shows
the fraction of examples per bin. The file is written atomically (temp file + rename).

:func:`plot_reliability_comparison` draws several predictives of the same examples in one figure (e.g. MAP and
Bayes): side-by-side accuracy bars per bin, each predictive's mean confidence per bin as a marker, ECE in the legend.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..io import atomic_path
from .calibration import ReliabilityData, reliability_diagram_data


def plot_reliability_diagram(
    probs: Any, labels: Any, path: str | os.PathLike, title: str = "", n_bins: int = 15, dpi: int = 120
) -> Path:
    """Write a reliability diagram of ``probs`` (N, C) against ``labels`` (N,) to ``path`` (PNG); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = reliability_diagram_data(probs, labels, n_bins=n_bins)
    left, width = d.edges[:-1], np.diff(d.edges)
    centers = left + width / 2
    filled = d.count > 0
    acc = np.where(filled, d.accuracy, 0.0)
    conf = np.where(filled, d.confidence, 0.0)

    fig = Figure(figsize=(4.5, 5.2))
    FigureCanvasAgg(fig)
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(left, acc, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    ax.bar(
        left, conf - acc, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
        edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap to confidence",
    )
    ax.text(0.97, 0.05, f"ECE {100 * d.ece:.2f}%\nMCE {100 * d.mce:.2f}%\nN = {int(d.count.sum())}",
            ha="right", va="bottom", transform=ax.transAxes, fontsize=8)
    axc.bar(centers, d.count / d.count.sum(), width=width, color="gray", edgecolor="black", linewidth=0.5)
    return _finish(fig, ax, axc, "accuracy", title, path, dpi)


def _finish(fig, ax, axc, ylabel: str, title: str, path: str | os.PathLike, dpi: int) -> Path:
    """The diagonal, limits, labels and legend of a reliability figure; written atomically to ``path`` (PNG)."""
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "reliability diagram", fontsize=10)
    axc.set_xlabel("confidence (top-label probability)")
    axc.set_ylabel("fraction")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_reliability_comparison(
    curves: Mapping[str, ReliabilityData], path: str | os.PathLike, title: str = "", dpi: int = 120,
    ece_label: str = "ECE",
) -> Path:
    """Write one reliability diagram comparing ``curves`` ``{label: ReliabilityData}`` (same bins) to ``path`` (PNG).

    Per bin, each predictive's accuracy is a bar (side by side) and its mean confidence a marker above the bar's
    centre; a lower panel shows each predictive's fraction of examples per bin. The legend gives each curve's ECE as
    ``"{label} ({ece_label} x.xx%)"`` (e.g. ``"pooled ECE"`` for bins pooled over runs). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_reliability_comparison needs at least one curve")
    edges = next(iter(curves.values())).edges
    if any(len(d.edges) != len(edges) or not np.allclose(d.edges, edges) for d in curves.values()):
        raise ValueError("all curves must use the same bins")
    left, width = edges[:-1], np.diff(edges)
    k = len(curves)
    fig = Figure(figsize=(5.0, 5.4))
    FigureCanvasAgg(fig)
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colors = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, (label, d) in enumerate(curves.items()):
        filled = d.count > 0
        x = left + width * i / k
        color = colors[i % len(colors)]
        ax.bar(x, np.where(filled, d.accuracy, 0.0), width=width / k, align="edge", color=color, alpha=0.75,
               edgecolor="black", linewidth=0.4, label=f"{label} ({ece_label} {100 * d.ece:.2f}%)")
        ax.plot((x + width / (2 * k))[filled], d.confidence[filled], "v", color=color, markeredgecolor="black",
                markersize=4)
        axc.bar(x, d.count / max(d.count.sum(), 1), width=width / k, align="edge", color=color, alpha=0.75,
                edgecolor="black", linewidth=0.4)
    return _finish(fig, ax, axc, "accuracy (bars); mean confidence (markers)", title, path, dpi)
