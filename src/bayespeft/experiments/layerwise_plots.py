"""The plots of ``bayespeft analyze`` (matplotlib Agg canvas, no global pyplot state; files written atomically).

* ``delta_ece_ranked.png``: groups ranked by mean ΔECE on the primary split, horizontal bars with the 95% interval
  (t over runs with ≥ 2 runs, else the paired bootstrap over test examples of the single run), 0 marked.
* ``delta_ece_sequential.png``: mean ΔECE against group depth (forward-pass order), one line per split.
* ``ece_comparison.png``: mean MAP vs Bayes ECE per group (depth order) on the primary split.
* ``greedy_curve.png``: Bayes ECE and NLL per split against the number of Bayesian groups (0 = MAP), mean over runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def interval(entry: dict[str, Any]) -> tuple[float, float] | None:
    """``(lo, hi)`` of a group's ΔECE on one split: t over runs, else the single run's bootstrap, else None."""
    d = entry["delta_ece"]
    if d["lo"] is not None:
        return d["lo"], d["hi"]
    boot = entry["bootstrap"]
    if len(boot) == 1 and boot[0]["lo"] is not None:
        return boot[0]["lo"], boot[0]["hi"]
    return None


def _errors(entries: list[dict[str, Any]]) -> np.ndarray:
    """(2, n) distances below/above the mean for ``errorbar``/``barh`` (0 where there is no interval)."""
    err = np.zeros((2, len(entries)))
    for i, e in enumerate(entries):
        iv, m = interval(e), e["delta_ece"]["mean"]
        if iv is not None:
            err[:, i] = [max(m - iv[0], 0.0), max(iv[1] - m, 0.0)]
    return err


def plot_ranked(path: Path, ranked: list[dict[str, Any]], split: str, n_runs: int) -> Path:
    entries = [g["splits"][split] for g in ranked]
    means = np.array([e["delta_ece"]["mean"] for e in entries])
    fig, ax = _figure(6.0, 1.2 + 0.35 * len(ranked))
    y = np.arange(len(ranked))[::-1]
    ax.barh(y, means, xerr=_errors(entries), color=np.where(means > 0, "tab:green", "tab:red"), alpha=0.8,
            edgecolor="black", linewidth=0.5, capsize=3)
    ax.set_yticks(y, [g["name"] for g in ranked], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    what = "95% t-interval over runs" if n_runs >= 2 else "95% bootstrap over test examples"
    ax.set_xlabel(f"ΔECE = ECE_MAP − ECE_Bayes on {split} (> 0: helps)")
    ax.set_title(f"layer-wise Laplace: ΔECE by group ({what})", fontsize=9)
    return _save(fig, path)


def plot_sequential(path: Path, groups: list[dict[str, Any]], splits: list[str]) -> Path:
    order = sorted(groups, key=lambda g: g["depth"])
    fig, ax = _figure(6.0, 3.6)
    x = np.arange(len(order))
    for k, s in enumerate(splits):
        entries = [g["splits"][s] for g in order]
        ax.errorbar(x + 0.06 * k, [e["delta_ece"]["mean"] for e in entries], yerr=_errors(entries), marker="o",
                    capsize=3, label=s)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{g['name']}\n(depth {g['depth']})" for g in order], fontsize=7)
    ax.set_ylabel("ΔECE (> 0: helps)")
    ax.set_title("ΔECE along the forward pass", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ece_comparison(path: Path, groups: list[dict[str, Any]], split: str) -> Path:
    order = sorted(groups, key=lambda g: g["depth"])
    fig, ax = _figure(6.0, 3.6)
    x = np.arange(len(order))
    ax.bar(x - 0.2, [g["splits"][split]["ece_map"]["mean"] for g in order], width=0.4, label="MAP", color="tab:gray")
    ax.bar(x + 0.2, [g["splits"][split]["ece_bayes"]["mean"] for g in order], width=0.4, label="Bayes (this group)",
           color="tab:blue")
    ax.set_xticks(x, [g["name"] for g in order], fontsize=7)
    ax.set_ylabel(f"ECE on {split}")
    ax.set_title("MAP vs Bayesian ECE per group", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_greedy(path: Path, curve: list[dict[str, Any]], splits: list[str]) -> Path:
    fig, axes = _figure(8.0, 3.4, ncols=2)
    k = [c["n_groups"] for c in curve]
    for ax, metric in zip(axes, ("ece", "nll")):
        for s in splits:
            ax.plot(k, [c[f"{metric}_{s}"]["mean"] for c in curve], marker="o", label=s)
        ax.set_xticks(k)
        ax.set_xlabel("number of Bayesian groups (0 = MAP; chosen on the validation split)")
        ax.set_ylabel(metric.upper())
        ax.legend(fontsize=8)
    axes[0].set_title("greedy selection: how few groups are enough", fontsize=9)
    return _save(fig, path)


def write_analysis_plots(out: Path, summary: dict[str, Any], ranked: list[dict[str, Any]]) -> list[Path]:
    split, splits = summary["primary_split"], summary["splits"]
    paths = [
        plot_ranked(out / "delta_ece_ranked.png", ranked, split, summary["n_runs"]),
        plot_sequential(out / "delta_ece_sequential.png", ranked, splits),
        plot_ece_comparison(out / "ece_comparison.png", ranked, split),
    ]
    if summary["greedy"]:
        paths.append(plot_greedy(out / "greedy_curve.png", summary["greedy"], splits))
    return paths
