r"""The report's reliability overlay: one reliability curve per method, the bins of its runs pooled.

Every predictive a run records carries its per-bin reliability data (:func:`bayespeft.experiments.run.
record_predictive`: ``count`` :math:`n_{rb}`, ``accuracy`` :math:`a_{rb}`, ``confidence`` :math:`c_{rb}` over the
:math:`M` equal-width bins of the ECE). Pooling runs :math:`r \in R` of one curve is exact, because the bins are
fixed intervals of the confidence: the pooled bin :math:`b` is the bin :math:`b` of the concatenated predictions,

.. math:: n_b = \sum_r n_{rb}, \qquad a_b = \frac{\sum_r n_{rb} a_{rb}}{n_b}, \qquad
          c_b = \frac{\sum_r n_{rb} c_{rb}}{n_b}, \qquad \mathrm{ECE} = \sum_b \frac{n_b}{N} |a_b - c_b|

(empty bins: :math:`a_b, c_b` undefined, None/NaN). One figure per (dataset, split) -- the test split, else the
last split a run reports -- one curve per method (and posterior, for Laplace / SG-MCMC predictives), each pooling
all done runs of the plan with that method: their seeds, ranks and backbones. The figure's title says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...metrics.calibration import ReliabilityData
from .keys import MISSING, get_key


def curve_label(rec: dict[str, Any]) -> str:
    method = get_key(rec["config"], "adapter.method")
    method = "?" if method is MISSING else str(method)
    return method if rec["posterior"] == "map" else f"{method} / {rec['posterior']}"


def _split(recs: list[dict[str, Any]]) -> str:
    splits = [r["split"] for r in recs]
    return "test" if "test" in splits else splits[-1]


def pool(bins: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Pool per-run bins ``[{count, accuracy, confidence}]`` (same number of bins) as in the module docstring."""
    count = np.array([b["count"] for b in bins], dtype=np.float64)  # (R, M)
    nan = lambda key: np.array([[np.nan if v is None else v for v in b[key]] for b in bins], dtype=np.float64)  # noqa: E731
    acc, conf = nan("accuracy"), nan("confidence")
    n = count.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(n > 0, np.nansum(count * np.nan_to_num(acc), axis=0) / n, np.nan)
        c = np.where(n > 0, np.nansum(count * np.nan_to_num(conf), axis=0) / n, np.nan)
    return {"count": [int(v) for v in n], "accuracy": [None if np.isnan(v) else float(v) for v in a],
            "confidence": [None if np.isnan(v) else float(v) for v in c]}


def as_reliability_data(pooled: dict[str, list[Any]]) -> ReliabilityData:
    count = np.asarray(pooled["count"], dtype=np.float64)
    acc = np.array([np.nan if v is None else v for v in pooled["accuracy"]], dtype=np.float64)
    conf = np.array([np.nan if v is None else v for v in pooled["confidence"]], dtype=np.float64)
    gap = np.where(count > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(conf)), 0.0)
    total = count.sum()
    return ReliabilityData(edges=np.linspace(0.0, 1.0, len(count) + 1), count=count, accuracy=acc, confidence=conf,
                           ece=float((count * gap).sum() / total) if total else float("nan"),
                           mce=float(gap[count > 0].max()) if (count > 0).any() else float("nan"))


def overlay_data(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{dataset, split, curves: {label: {count, accuracy, confidence, ece, n_runs, runs}}}]`` (see module)."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("reliability"):
            by_dataset.setdefault(str(get_key(r["config"], "data.name")), []).append(r)
    out = []
    for dataset, recs in sorted(by_dataset.items()):
        split = _split(recs)
        curves: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            if r["split"] == split:
                curves.setdefault(curve_label(r), []).append(r)
        fig = {"dataset": dataset, "split": split, "curves": {}}
        for label, rs in sorted(curves.items()):
            if len({len(r["reliability"]["count"]) for r in rs}) != 1:
                continue  # runs binned differently cannot be pooled
            pooled = pool([r["reliability"] for r in rs])
            fig["curves"][label] = {**pooled, "ece": as_reliability_data(pooled).ece,
                                    "n_runs": len({r["run"] for r in rs}), "runs": sorted({r["run"] for r in rs})}
        if fig["curves"]:
            out.append(fig)
    return out


def reliability_plots(overlays: list[dict[str, Any]], plot_dir: Path) -> list[dict[str, Any]]:
    """One PNG per overlay of :func:`overlay_data`; returns the figure records of the report."""
    from ...metrics import plot_reliability_comparison

    figs = []
    for ov in overlays:
        curves = {label: as_reliability_data(c) for label, c in ov["curves"].items()}
        n_runs = sum(c["n_runs"] for c in ov["curves"].values())
        title = (f"reliability, {ov['dataset']} {ov['split']}: one curve per method,\n"
                 "bins pooled over its runs (seeds, ranks, models)")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{ov['dataset']}_{ov['split']}")
        path = plot_dir / f"reliability_{name}.png"
        # the ECE of the pooled bins, not the mean of the runs' ECEs that the summary table shows
        plot_reliability_comparison(curves, path, title=title, ece_label="pooled ECE")
        per_curve = "; ".join(f"{label}: {c['n_runs']} runs" for label, c in ov["curves"].items())
        figs.append({"path": str(path), "title": f"reliability overlay per method, {ov['dataset']} {ov['split']} "
                     f"(bins pooled over seeds, ranks and models)", "n_runs": n_runs,
                     "n_points": len(ov["curves"]), "detail": per_curve})
    return figs
