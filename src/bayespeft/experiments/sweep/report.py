r"""``bayespeft report SWEEP_DIR``: the statistics, plots and Markdown report of a sweep's finished runs.

Records: one per (done run of the plan, posterior, split) with the run's grouping keys, its seed, the metrics of
that predictive (acc@1, acc@5, F1 (macro), NLL, ECE, Brier) and the run's figures (tuned-parameter %, time per
epoch, training throughput, peak memory).

* **Summary per group** (``--by`` keys, then posterior and split): for each metric over the group's runs (its
  seeds) mean, std (ddof = 1) and the 95% Student-t interval :math:`\bar x \pm t_{0.975,n-1} s/\sqrt n`
  (:func:`bayespeft.stats.summarize_over_runs`). With fewer than 2 runs std and interval are None (printed
  ``n/a``), never 0.
* **Paired comparisons**: within each context (the ``--by`` keys other than method and rank, posterior, split) the
  variants (method, and rank for methods that read it) are compared pairwise on their common seeds with the
  paired t-test, the Wilcoxon signed-rank test, Holm's correction over the context's family and Cohen's
  :math:`d_z` (:func:`bayespeft.stats.compare_methods`), for each metric of ``--compare``.
* **Plots**: acc@1 and ECE vs LoRA rank with t-interval error bars (one line per model/dataset/method); acc@1 vs
  tuned-parameter % per method; the reliability overlay per dataset, one curve per method with the per-bin
  reliability data of its runs pooled over seeds, ranks and models (:mod:`.reliability`; its data in
  ``report.json`` under ``reliability``).
* **Literature check** (:mod:`.literature`): every published number with the runs matching its setting.

Writes ``<SWEEP_DIR>/report/``: ``summary.csv``, ``comparisons.csv``, ``report.json``, ``report.md`` (embedding the
plots, each with the number of runs it rests on) and ``plots/*.png``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import io
from ...stats import compare_methods, summarize_over_runs
from .keys import MISSING, get_key
from .reliability import overlay_data, reliability_plots
from .store import SweepStore

#: short names of ``--by`` keys (any dotted config key is accepted too)
ALIASES = {"model": "model.name", "dataset": "data.name", "method": "adapter.method", "rank": "adapter.r",
           "seed": "train.seed", "sampler": "sgmcmc.sampler", "lr": "train.lr"}
DEFAULT_BY = ("model", "dataset", "method", "rank")
PREDICTIVE_METRICS = ("acc@1", "acc@5", "f1", "nll", "ece", "brier")
RUN_METRICS = ("tuned_%", "time_per_epoch_s", "throughput", "peak_memory_mb")
METRICS = PREDICTIVE_METRICS + RUN_METRICS
DEFAULT_COMPARE = ("acc@1", "ece")


@dataclass
class ReportOptions:
    metrics: Sequence[str] = METRICS
    by: Sequence[str] = DEFAULT_BY
    compare: Sequence[str] = DEFAULT_COMPARE
    level: float = 0.95
    plots: bool = True
    out: str | None = None
    literature: str | None = None  # a reference file in the format of the packaged literature.yaml (None: that one)


def resolve_by(by: Sequence[str]) -> list[tuple[str, str]]:
    """``[(name, dotted key)]`` for the ``--by`` names; unknown keys get the closest valid one."""
    from ...registry import closest
    from .keys import check_key

    out = []
    for name in by:
        key = ALIASES.get(name, name)
        if key == "base":  # the label of the base config, in sweeps with several bases
            out.append((name, key))
            continue
        msg = check_key(key)
        if msg:
            short = closest(name, list(ALIASES)) if "." not in name else None  # a misspelt short name
            if short:
                raise ValueError(f"--by {name}: not a short name or config key; did you mean {short!r}? short names: "
                                 f"{', '.join(ALIASES)} (or a dotted config key such as model.name)")
            raise ValueError(f"--by {name}: {msg}; short names: {', '.join(ALIASES)}")
        out.append((name, key))
    return out


def load_records(store: SweepStore, by: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One record per (done run, posterior, split); see the module docstring."""
    records = []
    for run in store.runs(status="done"):
        metrics = run.metrics or {}
        figures = metrics.get("run") or {}
        keys = {}
        for name, key in by:
            v = run.differs.get("base", MISSING) if key == "base" else get_key(run.config, key)
            keys[name] = None if v is MISSING else v
        seed = get_key(run.config, "train.seed")
        for i, row in enumerate(metrics.get("rows") or []):
            rec = {**keys, "posterior": row["posterior"], "split": row["split"], "seed": seed, "run": run.id,
                   "config": run.config}
            rec.update({m: row.get(m) for m in PREDICTIVE_METRICS})
            rec["reliability"] = row.get("reliability")
            # the run's own figures once, on its first record (the MAP on the first split)
            rec.update({m: figures.get(m) if i == 0 else None for m in RUN_METRICS})
            records.append(rec)
    return records


def _value(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def group(records: list[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def summarize(records: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str], level: float) -> list[dict[str, Any]]:
    """One row per (group, metric): n, mean, std, the t-interval (None for n < 2), and which runs."""
    rows = []
    keys = [*by, "posterior", "split"]
    for gkey, recs in group(records, keys).items():
        seeds = [r["seed"] for r in recs]
        for m in metrics:
            vals = [v for v in (_value(r[m]) for r in recs) if v is not None]
            if not vals:
                continue
            s = summarize_over_runs(vals, level)
            rows.append({**dict(zip(keys, gkey)), "metric": m, "n": s.n, "mean": s.mean, "std": s.std,
                         "lo": s.lo, "hi": s.hi, "reason": s.reason,
                         "seeds": seeds, "repeated_seeds": len(set(seeds)) != len(seeds)})
    return rows


def variant(rec: dict[str, Any]) -> str:
    """``lora-r8`` for methods that read a rank, else the method name."""
    method = rec.get("method") or get_key(rec["config"], "adapter.method")
    r = get_key(rec["config"], "adapter.r")
    return f"{method}-r{r}" if r is not MISSING else str(method)


def comparisons(records: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str], level: float) -> list[dict[str, Any]]:
    """Paired comparisons of the variants in each context (see the module docstring)."""
    ctx_keys = [k for k in by if k not in ("method", "rank")] + ["posterior", "split"]
    out = []
    for ckey, recs in group(records, ctx_keys).items():
        for m in metrics:
            by_variant: dict[str, dict[Any, float]] = {}
            for r in recs:
                v = _value(r[m])
                if v is not None:
                    by_variant.setdefault(variant(r), {})[r["seed"]] = v
            if len(by_variant) < 2:
                continue
            for c in compare_methods(by_variant, level=level):
                d = c.to_dict()
                out.append({**dict(zip(ctx_keys, ckey)), "metric": m, "a": c.method, "b": c.other,
                            "n": c.comparison.n, "mean_diff": c.comparison.mean_difference.mean,
                            "diff_lo": c.comparison.mean_difference.lo, "diff_hi": c.comparison.mean_difference.hi,
                            "t_p": c.comparison.t_test.p_value, "t_p_holm": c.t_holm,
                            "wilcoxon_p": c.comparison.wilcoxon.p_value, "wilcoxon_p_holm": c.wilcoxon_holm,
                            "cohens_dz": c.comparison.effect.d_z, "detail": d})
    return out


# ---- plots -------------------------------------------------------------------------------------------------------
def _errbar(ax, xs, rows, label):
    import numpy as np

    ys = [r["mean"] for r in rows]
    err = np.array([[r["mean"] - r["lo"] if r["lo"] is not None else 0.0 for r in rows],
                    [r["hi"] - r["mean"] if r["hi"] is not None else 0.0 for r in rows]])
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)


def rank_plots(summary: list[dict[str, Any]], plot_dir: Path) -> list[dict[str, Any]]:
    """acc@1 and ECE vs LoRA rank (MAP, test split): one line per model/dataset/method; returns figure records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for metric in ("acc@1", "ece"):
        rows = [r for r in summary if r["metric"] == metric and r.get("rank") is not None and r["posterior"] == "map"
                and r["split"] == "test"]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        lines = group(rows, [k for k in ("model", "dataset", "method") if k in rows[0]])
        n_runs = 0
        for key, rs in sorted(lines.items(), key=lambda kv: str(kv[0])):
            rs = sorted(rs, key=lambda r: r["rank"])
            _errbar(ax, [r["rank"] for r in rs], rs, " / ".join(str(k) for k in key))
            n_runs += sum(r["n"] for r in rs)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LoRA rank r")
        ax.set_ylabel(f"{metric} (test, MAP)")
        ax.set_title(f"{metric} vs rank (mean, 95% t-interval over seeds)")
        ax.legend(fontsize=7)
        path = plot_dir / f"rank_{metric.replace('@', '')}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        figs.append({"path": str(path), "title": f"{metric} vs LoRA rank", "n_runs": n_runs,
                     "n_points": len(rows)})
    return figs


def tuned_plot(summary: list[dict[str, Any]], records: list[dict[str, Any]], plot_dir: Path) -> list[dict[str, Any]]:
    """acc@1 (MAP, test) vs tuned-parameter % per method (mean and t-interval over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = {k: v for k, v in _index(summary, "acc@1").items()}
    tuned = _index(summary, "tuned_%")
    pts = [(k, acc[k], tuned[k]) for k in acc if k in tuned and k[-2:] == ("map", "test")]
    if not pts:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    methods: dict[str, list] = {}
    for k, a, t in pts:
        methods.setdefault(str(dict(k[:-2]).get("method")), []).append((t["mean"], a))
    n_runs = 0
    for m, items in sorted(methods.items()):
        items.sort(key=lambda it: it[0])
        _errbar(ax, [t for t, _ in items], [a for _, a in items], m)
        n_runs += sum(a["n"] for _, a in items)
    ax.set_xscale("log")
    ax.set_xlabel("tuned parameters (% of the backbone)")
    ax.set_ylabel("acc@1 (test, MAP)")
    ax.set_title("accuracy vs tuned-parameter %")
    ax.legend(fontsize=7)
    path = plot_dir / "acc_vs_tuned.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [{"path": str(path), "title": "acc@1 vs tuned-parameter %", "n_runs": n_runs, "n_points": len(pts)}]


def _index(summary: list[dict[str, Any]], metric: str) -> dict[tuple, dict[str, Any]]:
    skip = {"metric", "n", "mean", "std", "lo", "hi", "reason", "seeds", "repeated_seeds"}
    out = {}
    for r in summary:
        if r["metric"] == metric:
            key = tuple((k, v) for k, v in r.items() if k not in skip and k not in ("posterior", "split"))
            out[key + (r["posterior"], r["split"])] = r
    return out


# ---- output ------------------------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return str(v)


def _md_table(rows: list[dict[str, Any]], cols: list[str], keys: Sequence[str] = ()) -> list[str]:
    """Markdown table; a None grouping key (``keys``, e.g. the rank of ``full``) shows as ``-``, a None number as n/a."""
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join("-" if c in keys and r.get(c) is None else _fmt(r.get(c)) for c in cols) + " |"
            for r in rows]
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]], cols: list[str]) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in cols})


def build_report(sweep_dir: str | Path, opts: ReportOptions | None = None) -> dict[str, Any]:
    """Compute and write the report of ``sweep_dir`` (see the module docstring); returns the JSON document."""
    from .literature import check_literature, load_literature

    opts = opts or ReportOptions()
    sweep_dir = Path(sweep_dir)
    bad = [m for m in [*opts.metrics, *opts.compare] if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; metrics: {', '.join(METRICS)}")
    references = load_literature(opts.literature)  # a bad reference file fails before any work
    by = resolve_by(opts.by)
    store = SweepStore.open(sweep_dir, create=False)
    try:
        counts = store.counts()
        records = load_records(store, by)
        diagnostics = [{"run": r.id, **r.differs, "stage": st, **d} for r in store.runs(status="done")
                       for st, d in ((r.metrics or {}).get("diagnostics") or {}).items()]
        failed = [{"run": r.id, **r.differs, "error": r.error} for r in store.runs(status="failed")]
    finally:
        store.close()
    names = [n for n, _ in by]
    summary = summarize(records, names, opts.metrics, opts.level)
    comps = comparisons(records, names, opts.compare, opts.level)
    literature = check_literature(references, records, opts.level)
    out_dir = Path(opts.out) if opts.out else sweep_dir / "report"
    plot_dir = out_dir / "plots"
    figures: list[dict[str, Any]] = []
    overlays = overlay_data(records)
    if opts.plots and records:
        plot_dir.mkdir(parents=True, exist_ok=True)
        figures = rank_plots(summary, plot_dir) + tuned_plot(summary, records, plot_dir)
        figures += reliability_plots(overlays, plot_dir)
    doc = {"sweep_dir": str(sweep_dir), "counts": counts, "by": names, "level": opts.level,
           "n_records": len(records), "summary": summary,
           "comparisons": [{k: v for k, v in c.items() if k != "detail"} | {"detail": c["detail"]} for c in comps],
           "literature": literature, "diagnostics": diagnostics, "failed": failed, "figures": figures,
           "reliability": overlays}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "summary.csv", summary, [*names, "posterior", "split", "metric", "n", "mean", "std", "lo", "hi"])
    _write_csv(out_dir / "comparisons.csv", comps, [k for k in (comps[0] if comps else {}) if k != "detail"])
    io.write_json(out_dir / "report.json", doc)
    io.write_text(out_dir / "report.md", markdown(doc, names))
    return doc


def comparison_notes(comps: list[dict[str, Any]]) -> list[str]:
    """What a reader of the comparison table must know: the Holm family, and the Wilcoxon floor at small n."""
    out = ["Holm's family: the variant pairs of one context and one metric (not across metrics or splits). "
           "n: the seeds both variants finished (a failed run drops its seed from every comparison it is in)."]
    small = sorted({c["n"] for c in comps if c.get("wilcoxon_p") is not None and c["n"] < 6})
    if small:
        floors = ", ".join(f"n = {n}: {2 / 2**n:.3g}" for n in small)
        out.append(f"Wilcoxon with n < 6 pairs cannot reach p < 0.05 whatever the data (its smallest two-sided p is "
                   f"2/2^n; {floors}): read its p as 'too few seeds', not as 'no difference'.")
    return [*out, ""]


def markdown(doc: dict[str, Any], names: list[str]) -> str:
    c = doc["counts"]
    lines = [f"# Sweep report: {doc['sweep_dir']}", "",
             f"Runs: {c['done']} done, {c['failed']} failed, {c['running']} running, {c['pending']} pending. "
             f"Intervals: {100 * doc['level']:g}% Student-t over seeds; fewer than 2 seeds: no std or interval (n/a).", ""]
    lines += ["## Summary (mean ± std, t-interval, over seeds)", ""]
    rows = [{**r, "mean ± std": f"{_fmt(r['mean'])} ± {_fmt(r['std'])}", "interval": (
        f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if r["lo"] is not None else "n/a")} for r in doc["summary"]]
    lines += _md_table(rows, [*names, "posterior", "split", "metric", "n", "mean ± std", "interval"], names) + [""]
    if any(r["repeated_seeds"] for r in doc["summary"]):
        lines += ["Note: some groups hold several runs with the same seed (a key that differs is not in --by); "
                  "their spread is not seed variation.", ""]
    lines += ["## Paired comparisons (same seeds; Holm over each context's family)", ""]
    if doc["comparisons"]:
        lines += _md_table(doc["comparisons"], [k for k in doc["comparisons"][0] if k not in ("detail",)], names) + [""]
        lines += comparison_notes(doc["comparisons"])
    else:
        lines += ["No context has two variants with common seeds.", ""]
    lines += ["## Figures", ""]
    for f in doc["figures"]:
        rel = Path(f["path"]).relative_to(Path(f["path"]).parent.parent)
        detail = f" ({f['detail']})" if f.get("detail") else ""
        lines += [f"![{f['title']}]({rel})", "",
                  f"*{f['title']}: {f['n_points']} {'curves' if f.get('detail') else 'points'} resting on "
                  f"{f['n_runs']} runs{detail}.*", ""]
    if not doc["figures"]:
        lines += ["No figure: no done run with the needed metrics.", ""]
    if not doc["reliability"]:
        lines += ["Reliability overlay: no done run saved per-bin reliability data (runs made before it was "
                  "recorded); each run's own reliability diagrams are in its stage directories under plots/.", ""]
    lines += ["## Literature check", ""]
    lines += _md_table(doc["literature"], ["reference", "metric", "published", "interval", "runs", "measured",
                                           "measured_interval", "verdict", "note", "rule", "source"]) + [""]
    if doc["diagnostics"]:
        lines += ["## SG-MCMC convergence (R-hat / ESS verdicts)", ""]
        lines += _md_table(doc["diagnostics"], ["run", "stage", "verdict_text"]) + [""]
    if doc["failed"]:
        lines += ["## Failed runs", ""] + _md_table(doc["failed"], ["run", "error"]) + [""]
    return "\n".join(lines)
