"""``bayespeft analyze DIR [DIR ...]``: summarise one or more layer-wise runs (e.g. one per seed).

Reads each ``DIR/layer_wise_results.json`` and ``DIR/per_example.safetensors`` written by ``bayespeft layerwise``
(:mod:`.layerwise`) and writes to ``--out``:

* ``summary_table.csv``: one line per group (then the reference rows), ranked by the mean over runs of
  ΔECE = ECE_MAP − ECE_Bayes on the primary split (``test``; positive = the Bayesian group helps), with per split the
  mean MAP / Bayes ECE, mean ΔECE and ΔNLL, their std over runs and 95% t-interval over runs (empty with fewer than
  2 runs: no std is reported, not a zero), and with one run the paired bootstrap 95% interval over test examples.
* ``analysis_summary.json``: per split the best and worst group, the mean ΔECE over groups, the fraction of groups
  whose mean ΔECE is > 0, Spearman's ρ of mean ΔECE against depth with its p-value (:func:`bayespeft.stats.spearman`),
  and per group and run the bootstrap interval of ΔECE over test examples (recomputed from the per-example arrays,
  :func:`bayespeft.stats.delta_ece_interval`, with the run's seed and replicate count), plus the summaries over runs
  (:func:`bayespeft.stats.summarize_over_runs`: mean, std with ddof = 1, Student-t interval) and the greedy curve.
* ``plots/delta_ece_ranked.png``, ``plots/delta_ece_sequential.png``, ``plots/ece_comparison.png`` and, when the runs
  hold a greedy selection, ``plots/greedy_curve.png`` (:mod:`.layerwise_plots`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import io
from ..config import flatten_keys
from ..errors import RunError
from ..table import format_table
from .layerwise import ARRAYS, RESULTS, delta_ece_ci, row_arrays

#: |ΔECE from the per-example arrays − ΔECE in the JSON| above this means the two files do not belong together
#: (float32 confidences: the bin sums differ from the float64 ones by ~1e-7)
CONSISTENCY_ATOL = 1e-5


def load_run(d: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(results, per-example arrays)`` of one finished layer-wise output directory; :class:`RunError` naming
    what is missing otherwise."""
    import json

    d = Path(d)
    if not d.is_dir():
        raise RunError(f"{d} is not a directory; pass the output directory (--out) of `bayespeft layerwise`")
    file = d / RESULTS
    if not file.is_file():
        raise RunError(f"{d} holds no layer-wise results: {RESULTS} is missing (pass the --out directory of "
                       "`bayespeft layerwise`)")
    try:
        res = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{file} is not readable JSON ({e})") from None
    if res.get("status") != "finished":
        raise RunError(f"{file} is not finished (status {res.get('status')!r}); rerun the same `bayespeft layerwise` "
                       "command to complete it")
    if not (d / ARRAYS).is_file():
        raise RunError(f"{d} lacks {ARRAYS} (the per-example arrays of {RESULTS}); rerun `bayespeft layerwise`")
    return res, io.load_tensors(d / ARRAYS)


#: what may differ between the runs of one analysis (one per seed): the checkpoint, its training seed and the
#: layer-wise seed (posterior samples, bootstrap draws); anything else in the runs' fingerprints must agree
SEED_KEYS = ("checkpoint_sha256", "train_seed", "layerwise.seed")


def check_comparable(runs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """:class:`RunError` when two of ``runs`` are the same run (same checkpoint, settings and seed: a directory
    given twice or copied) or were made with different settings (structure, predictive, model, data, ...): the
    statistics over runs are over seeds of one setting. Runs without a fingerprint (older files) are not checked."""
    seen: list[tuple[str, dict[str, Any]]] = []
    for d, res, _ in runs:
        fp = res.get("fingerprint")
        if not isinstance(fp, dict):
            continue
        flat = flatten_keys(fp)
        for od, ofl in seen:
            if flat == ofl:
                raise RunError(f"{d} and {od} are the same layer-wise run (same checkpoint, settings and seed); give "
                               "each run once (other seeds: another checkpoint or --set layerwise.seed=N)")
        if seen:
            od, ofl = seen[0]
            diff = [k for k in sorted(set(flat) | set(ofl)) if k not in SEED_KEYS and flat.get(k) != ofl.get(k)]
            if diff:
                what = "; ".join(f"{k}: {ofl.get(k)!r} in {od}, {flat.get(k)!r} in {d}" for k in diff[:3])
                raise RunError(f"the runs were made with different settings ({what}); analyze the runs of one setting "
                               "together (one per seed) and each setting on its own")
        seen.append((d, flat))


def default_out(dirs: list[str]) -> Path:
    if len(dirs) == 1:
        return Path(dirs[0]) / "analysis"
    return Path(os.path.commonpath([str(Path(d).resolve()) for d in dirs])) / "analysis"


def _bootstrap(res: dict[str, Any], arrays: dict[str, Any], kind: str, row: dict[str, Any], split: str, run: str) -> dict[str, Any]:
    """The row's ΔECE interval over examples, recomputed from the arrays; checks they match the JSON's ΔECE."""
    try:
        ex = row_arrays(arrays, kind, row["name"], split)
    except KeyError as e:
        raise RunError(f"{run}/{ARRAYS}: {e.args[0]}; the file does not match {RESULTS}") from None
    ci = delta_ece_ci(ex, res["settings"]["n_boot"], res["settings"]["seed"])
    if abs(ci["estimate"] - row["splits"][split]["delta_ece"]) > CONSISTENCY_ATOL:
        raise RunError(f"{run}: ΔECE of {row['name']} on {split} is {row['splits'][split]['delta_ece']:.6g} in {RESULTS} "
                       f"but {ci['estimate']:.6g} from {ARRAYS}; the two files do not belong together")
    return {"run": run, **ci}


def _summarise_rows(runs: list[tuple[str, dict, dict]], kind: str, splits: list[str]) -> dict[str, dict[str, Any]]:
    """Per row name: depth, n_params, and per split the summaries over runs and the per-run bootstrap intervals."""
    from ..stats import summarize_over_runs

    out: dict[str, dict[str, Any]] = {}
    for run, res, arrays in runs:
        rows = res["groups"] if kind == "group" else list(res["reference"].values())
        for row in rows:
            entry = out.setdefault(row["name"], {"name": row["name"], "kind": kind, "depth": row["depth"],
                                                 "n_params": row["n_params"], "runs": [], "splits": {}})
            entry["runs"].append(run)
            for s in splits:
                sp = row["splits"][s]
                e = entry["splits"].setdefault(s, {"values": {"delta_ece": [], "delta_nll": [], "ece_map": [], "ece_bayes": []},
                                                   "bootstrap": []})
                for k, v in (("delta_ece", sp["delta_ece"]), ("delta_nll", sp["delta_nll"]),
                             ("ece_map", sp["map"]["ece"]), ("ece_bayes", sp["bayes"]["ece"])):
                    e["values"][k].append(v)
                e["bootstrap"].append(_bootstrap(res, arrays, kind, row, s, run))
    for entry in out.values():
        for e in entry["splits"].values():
            vals = e.pop("values")
            e.update({k: summarize_over_runs(v).to_dict() for k, v in vals.items()})
    return out


def _split_summary(groups: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    from ..stats import spearman

    means = {n: g["splits"][split]["delta_ece"]["mean"] for n, g in groups.items()}
    best, worst = max(means, key=means.get), min(means, key=means.get)
    vals = list(means.values())
    rho = spearman([groups[n]["depth"] for n in means], vals)
    return {
        "best_group": {"name": best, "mean_delta_ece": means[best]},
        "worst_group": {"name": worst, "mean_delta_ece": means[worst]},
        "mean_delta_ece": sum(vals) / len(vals),
        "fraction_helping": sum(v > 0 for v in vals) / len(vals),
        "spearman_depth": rho.to_dict(),
    }


def _greedy(runs: list[tuple[str, dict, dict]], splits: list[str]) -> list[dict[str, Any]]:
    """Per number of Bayesian groups k (0 = MAP): the groups added in each run and the Bayes ECE / NLL over runs."""
    from ..stats import summarize_over_runs

    with_greedy = [(run, res) for run, res, _ in runs if res.get("greedy")]
    if not with_greedy:
        return []
    k_max = min(len(res["greedy"]) for _, res in with_greedy)
    curve = [{"n_groups": 0, "added": [None] * len(with_greedy),
              **{f"{m}_{s}": summarize_over_runs([res["map"][s][m] for _, res in with_greedy]).to_dict()
                 for s in splits for m in ("ece", "nll")}}]
    for k in range(k_max):
        steps = [res["greedy"][k] for _, res in with_greedy]
        curve.append({"n_groups": k + 1, "added": [st["added"] for st in steps],
                      **{f"{m}_{s}": summarize_over_runs([st["splits"][s]["bayes"][m] for st in steps]).to_dict()
                         for s in splits for m in ("ece", "nll")}})
    return curve


def analyze_runs(dirs: list[str] | tuple[str, ...], out: str | Path | None = None, plots: bool = True) -> dict[str, Any]:
    """Analyse the layer-wise output directories ``dirs``; write the table, the summary and the plots to ``out``."""
    if not dirs:
        raise RunError("give at least one output directory of `bayespeft layerwise`")
    runs = [(str(d), *load_run(d)) for d in dirs]
    check_comparable(runs)
    splits = [s for s in runs[0][1]["eval_splits"] if s != "val" and all(s in r["eval_splits"] for _, r, _ in runs)]
    if not splits:
        raise RunError(f"the runs share no evaluation split ({[r['eval_splits'] for _, r, _ in runs]})")
    primary = "test" if "test" in splits else splits[0]
    groups = _summarise_rows(runs, "group", splits)
    refs = _summarise_rows(runs, "reference", splits)
    ranked = sorted(groups.values(), key=lambda g: -g["splits"][primary]["delta_ece"]["mean"])
    summary = {
        "runs": [r for r, _, _ in runs], "n_runs": len(runs), "primary_split": primary, "splits": splits,
        "convention": "delta_ece = ECE_MAP - ECE_Bayes (positive: the Bayesian group helps); intervals: 'bootstrap' "
                      "= paired percentile bootstrap over test examples per run, 'delta_ece.lo/hi' = Student-t over runs",
        "per_split": {s: _split_summary(groups, s) for s in splits},
        "ranking": [g["name"] for g in ranked],
        "groups": groups, "reference": refs, "greedy": _greedy(runs, splits),
    }
    out = Path(out) if out is not None else default_out([r for r, _, _ in runs])
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "analysis_summary.json", summary)
    import pandas as pd

    table = [table_row(g, splits, len(runs)) for g in [*ranked, *refs.values()]]
    with io.atomic_path(out / "summary_table.csv") as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)
    if plots:
        from .layerwise_plots import write_analysis_plots

        write_analysis_plots(out / "plots", summary, ranked)
    return {**summary, "table": table, "out": str(out)}


def table_row(g: dict[str, Any], splits: list[str], n_runs: int) -> dict[str, Any]:
    """One line of ``summary_table.csv`` (std and t-interval columns empty with fewer than 2 runs)."""
    row: dict[str, Any] = {"group": g["name"], "kind": g["kind"], "depth": g["depth"], "n_params": g["n_params"],
                           "n_runs": len(g["runs"])}
    for s in splits:
        sp = g["splits"][s]
        d = sp["delta_ece"]
        row.update({f"ece_map_{s}": sp["ece_map"]["mean"], f"ece_bayes_{s}": sp["ece_bayes"]["mean"],
                    f"delta_ece_{s}": d["mean"], f"delta_ece_{s}_std": d["std"],
                    f"delta_ece_{s}_t_lo": d["lo"], f"delta_ece_{s}_t_hi": d["hi"]})
        boot = sp["bootstrap"][0] if len(sp["bootstrap"]) == 1 else {}
        row.update({f"delta_ece_{s}_boot_lo": boot.get("lo"), f"delta_ece_{s}_boot_hi": boot.get("hi"),
                    f"delta_nll_{s}": sp["delta_nll"]["mean"], f"delta_nll_{s}_std": sp["delta_nll"]["std"]})
    return row


def format_summary(res: dict[str, Any]) -> str:
    """The ranked table (primary split) and one line per split with ρ, fraction helping, best and worst."""
    s = res["primary_split"]
    # the interval that exists: over test examples for one run, the t-interval over runs for several
    iv = "boot" if res["n_runs"] < 2 else "t"
    cols = ["group", "depth", "n_params", "n_runs", f"ece_map_{s}", f"ece_bayes_{s}", f"delta_ece_{s}",
            f"delta_ece_{s}_std", f"delta_ece_{s}_{iv}_lo", f"delta_ece_{s}_{iv}_hi", f"delta_nll_{s}"]
    lines = [format_table(res["table"], cols)]
    for split, ps in res["per_split"].items():
        rho = ps["spearman_depth"]
        corr = (f"Spearman ρ(ΔECE, depth) = {rho['rho']:+.3f} (p = {rho['p_value']:.3g}, n = {rho['n']})"
                if rho["rho"] is not None else f"Spearman ρ undefined ({rho['reason']})")
        lines.append(f"{split}: best {ps['best_group']['name']} ({ps['best_group']['mean_delta_ece']:+.4f}), worst "
                     f"{ps['worst_group']['name']} ({ps['worst_group']['mean_delta_ece']:+.4f}), mean ΔECE "
                     f"{ps['mean_delta_ece']:+.4f}, {100 * ps['fraction_helping']:.0f}% of groups help; {corr}")
    return "\n".join(lines)
