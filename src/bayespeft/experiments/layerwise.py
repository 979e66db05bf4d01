"""``bayespeft layerwise``: which group of tuned parameters buys the most calibration when made Bayesian.

On a trained checkpoint, :func:`bayespeft.laplace.layerwise_study` fits one curvature pass over all tuned parameters,
restricts it to each group (block / stage / head, or adapted module), tunes each group's prior precision, and
evaluates MAP vs the group's Bayesian predictive on every evaluation split of the config (``test`` and, when
configured, ``test_shift``):

    ΔECE = ECE_MAP − ECE_Bayes,   ΔNLL = NLL_MAP − NLL_Bayes        (positive: making the group Bayesian helps).

Each ΔECE carries a paired percentile-bootstrap 95% interval over the split's examples
(:func:`bayespeft.stats.delta_ece_interval`: MAP and Bayes ECE of the same resampled examples). Reference rows: all
groups at once and the last layer (head) alone. ``greedy=K`` adds groups one at a time by ECE on the *validation*
split and reports every evaluation split against the number of Bayesian groups.

Outputs in the output directory (``--out``; default ``<output.root>/<name>-layerwise-<structure>-<predictive>-<key>``
where the key hashes the checkpoint and the settings, so the same command finds its own directory again):

* ``layer_wise_results.json``: settings, config, seeds, package versions, the MAP metrics, one row per group (name,
  depth, parameter count, prior precision, per split MAP/Bayes ECE/NLL/acc/Brier, ΔECE, ΔNLL and the ΔECE
  interval, written with the row), the reference rows and the greedy curve; ``"status"`` is ``running`` until
  everything is written.
* ``per_example.safetensors``: per split the MAP's and each row's ``p_true`` / ``confidence`` (float32) and
  ``correct`` (bool), keys ``map/<split>/<field>``, ``group/<name>/<split>/<field>``, ``reference/<label>/...``
  (read by ``bayespeft analyze``).
* ``plots/reliability_<group>_<split>.png``: MAP and Bayes reliability diagrams in one figure.

Both files are rewritten atomically after every group (arrays first, then the JSON), so an interrupted command rerun
with the same arguments skips the groups already recorded; a directory holding results of other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .. import io
from ..config import ExperimentConfig, dump_config
from ..config.load import ConfigError, format_validation_error
from ..errors import RunError
from ..laplace import LayerwiseConfig, discover_groups, layerwise_study, select_groups
from ..table import format_table
from .records import check_output_dir
from .checkpoint_arg import checkpoint_dir
from .run import DATA_KEY_IGNORES, SPLITS, Built, build, load_checkpoint_into, model_key, split_fingerprint, split_loaders

RESULTS = "layer_wise_results.json"
ARRAYS = "per_example.safetensors"
FIELDS = ("p_true", "confidence", "correct")
#: CLI flag -> LayerwiseConfig field
FLAGS = {"structure": "structure", "predictive": "predictive", "link": "link", "samples": "n_samples",
         "group": "group", "groups": "groups", "prior": "prior", "greedy": "greedy"}


# ---- settings ------------------------------------------------------------------------------------------------------
def layerwise_settings(cfg: ExperimentConfig, cli: dict[str, Any] | None = None) -> LayerwiseConfig:
    """The config's ``layerwise`` section (defaults when absent) with the command-line flags over it, validated;
    a bad value is one :class:`ConfigError` line naming the flag (``--samples``) or the key (``layerwise.n_boot``)."""
    upd: dict[str, Any] = {}
    for flag, v in (cli or {}).items():
        if v is None:
            continue
        key = FLAGS[flag]
        upd[key] = [s.strip() for s in v.split(",") if s.strip()] if key == "groups" and isinstance(v, str) else v
    base = cfg.layerwise.model_dump() if cfg.layerwise is not None else {}
    try:
        return LayerwiseConfig.model_validate({**base, **upd})
    except ValidationError as e:
        by_field = {v: k for k, v in FLAGS.items()}
        lines = format_validation_error(e, "x").splitlines()[1:]
        msgs = []
        for err, line in zip(e.errors(), lines):
            name = str(err["loc"][0]) if err["loc"] else ""
            where = f"--{by_field[name]}" if name in upd and name in by_field else f"layerwise.{name}"
            msgs.append(where + line.strip().removeprefix("- ").removeprefix(name))
        raise ConfigError("invalid layer-wise settings: " + "; ".join(msgs)) from None


def fingerprint(cfg: ExperimentConfig, built: Built, lc: LayerwiseConfig) -> dict[str, Any]:
    """What determines the numbers of a layer-wise run: checkpoint weights, model/adapter/data settings, the content
    of every split it reads (:func:`~bayespeft.experiments.run.split_fingerprint`: the same files under another
    ``data.root`` are the same run, edited files another), seeds, settings."""
    return {
        "checkpoint_sha256": built.checkpoint,
        "model": model_key(cfg),
        "adapter": {k: v for k, v in cfg.adapter.model_dump(mode="json").items() if k != "dropout"},
        "data": {k: v for k, v in cfg.data.model_dump(mode="json").items() if k not in DATA_KEY_IGNORES},
        "data_fingerprint": {split: split_fingerprint(built, split) for split in study_loaders(built, lc)},
        "train_seed": cfg.train.seed,
        "layerwise": lc.model_dump(mode="json"),
    }


def default_out(cfg: ExperimentConfig, fp: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:10]
    lw = fp["layerwise"]
    return Path(cfg.output.root) / f"{cfg.name}-layerwise-{lw['structure']}-{lw['predictive']}-{key}"


def study_loaders(built: Built, lc: LayerwiseConfig) -> dict[str, Any]:
    """``train`` (curvature), ``val`` only for the greedy selection, then every evaluation split of the config."""
    loaders = {"train": built.loaders.train}
    if lc.greedy is not None:
        if getattr(built.loaders, "val", None) is None:
            raise ConfigError("--greedy selects groups on the validation split, and this config has none")
        loaders["val"] = built.loaders.val
    return {**loaders, **split_loaders(built.loaders)}


# ---- the command ---------------------------------------------------------------------------------------------------
def layerwise_run(cfg: ExperimentConfig, checkpoint: str | Path, cli: dict[str, Any] | None = None,
                  check_base: bool = True, out: str | Path | None = None,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the model of ``cfg``, load ``checkpoint``, run (or resume) the layer-wise study; returns the results
    (the contents of ``layer_wise_results.json``) with ``"out"``, the output directory."""
    lc = layerwise_settings(cfg, cli)
    cfg = cfg.model_copy(update={"layerwise": lc})
    checkpoint_dir(checkpoint)  # a wrong --checkpoint or output location fails before the model and data are built
    fix = "choose another with --out DIR (or fix its permissions)"
    check_output_dir(out if out is not None else cfg.output.root, "output directory", fix)
    built = build(cfg)
    load_checkpoint_into(built, checkpoint, check_base, cfg.data)
    fp = fingerprint(cfg, built, lc)
    if out is None:  # the default directory under output.root is named by the data's fingerprint
        out = default_out(cfg, fp)
        check_output_dir(out, "output directory", fix)
    out = Path(out)
    return run_study(cfg, built, lc, out, fp, checkpoint=str(checkpoint), echo=echo)


def run_study(cfg: ExperimentConfig, built: Built, lc: LayerwiseConfig, out: Path, fp: dict[str, Any] | None = None,
              *, checkpoint: str | None = None, plots: bool | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study on ``built.model`` (at its MAP) and write ``out`` group by group (module docstring)."""
    from .sweep.runner import versions

    fp = fp or fingerprint(cfg, built, lc)
    groups = discover_groups(built.model, lc.group)
    # unknown names, or none: an error listing the available groups
    todo = select_groups(groups, lc.groups) if lc.groups is not None else groups
    loaders = study_loaders(built, lc)
    state, arrays = resume_state(out, fp)
    if state is not None and state.get("status") == "finished":
        echo(f"{out / RESULTS} holds the finished results of these settings; nothing to do")
        return {**state, "out": str(out)}
    if state is None:
        state = {
            "status": "running", "command": "bayespeft layerwise", "checkpoint": checkpoint, "fingerprint": fp,
            "settings": lc.model_dump(mode="json"), "seed": lc.seed, "train_seed": cfg.train.seed,
            "versions": versions(), "config": cfg.model_dump(mode="json"),
            "eval_splits": [s for s in loaders if s != "train"],
            "select_split": "val" if lc.greedy is not None else None,
            "all_groups": [{"name": g.name, "depth": g.depth, "kind": g.kind, "n_params": g.n_params} for g in groups],
            "map": {}, "groups": [], "reference": {}, "greedy": [],
        }
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "config.yaml", dump_config(cfg))
    done = [r["name"] for r in state["groups"]]
    if done:
        echo(f"resuming {out}: {len(done)} group(s) already done ({', '.join(done)})")
    n_todo = len(todo)

    def save() -> None:
        io.save_tensors(out / ARRAYS, arrays)
        io.write_json(out / RESULTS, state)

    def on_map(maps: dict[str, Any]) -> None:
        state["map"] = {s: v["metrics"] for s, v in maps.items()}
        arrays.update({f"map/{s}/{k}": torch.from_numpy(a) for s, v in maps.items() for k, a in v["per_example"].items()})

    def on_row(row: dict[str, Any]) -> None:
        arrays.update(_flat(f"group/{row['name']}", row))
        stripped = _strip(row)
        add_intervals(stripped, arrays, "group", lc.n_boot, lc.seed)  # with the row, so an interrupted run keeps it
        state["groups"].append(stripped)
        save()
        first = state["eval_splits"][-1] if "test" not in row["splits"] else "test"
        s = row["splits"][first]
        echo(f"[{len(state['groups'])}/{n_todo}] {row['name']} (depth {row['depth']}, {row['n_params']} params, "
             f"prior {row['prior_precision']:.3g}): ΔECE {first} {s['delta_ece']:+.4f}, ΔNLL {s['delta_nll']:+.4f}")

    refs_done = bool(state["reference"])
    greedy_done = lc.greedy is None or bool(state["greedy"])
    try:
        res = layerwise_study(
            built.model, loaders, groups=groups, only=[g.name for g in todo], structure=lc.structure,
            predictive=lc.predictive, link=lc.link, n_samples=lc.n_samples, prior=lc.prior,
            greedy=None if greedy_done else lc.greedy, seed=lc.seed, references=not refs_done, skip=done,
            on_row=on_row, on_map=on_map, fit_kwargs={"curvature": lc.curvature, "seed": lc.seed}, on_stage=echo,
        )
        on_map(res["map"])
        for label, row in res["reference"].items():
            arrays.update(_flat(f"reference/{label}", row))
            state["reference"][label] = _strip(row)
            add_intervals(state["reference"][label], arrays, "reference", lc.n_boot, lc.seed)
        if not greedy_done:
            state["greedy"] = res["greedy"]
        order = {g.name: i for i, g in enumerate(groups)}
        state["groups"].sort(key=lambda r: order[r["name"]])
        for kind, rows in (("group", state["groups"]), ("reference", list(state["reference"].values()))):
            for row in rows:  # rows of an older run without their intervals
                if any("delta_ece_interval" not in sp for sp in row["splits"].values()):
                    add_intervals(row, arrays, kind, lc.n_boot, lc.seed)
        state["status"] = "finished"
        state.pop("error", None)
        save()
    except KeyboardInterrupt:
        _mark(out, state, "interrupted", "interrupted; rerun the same command to resume from the groups already done")
        raise
    except BaseException as e:
        _mark(out, state, "failed", f"{type(e).__name__}: {e}")
        raise
    if cfg.output.reliability_plots if plots is None else plots:
        write_plots(out, state, arrays)
    return {**state, "out": str(out)}


def _mark(out: Path, state: dict[str, Any], status: str, error: str) -> None:
    try:
        io.write_json(out / RESULTS, {**state, "status": status, "error": error})
    except OSError:
        pass  # the original exception is the one to report


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    """A study row without its per-example arrays (they go to the side file)."""
    return {**{k: v for k, v in row.items() if k != "splits"},
            "splits": {s: {k: v for k, v in sp.items() if k != "per_example"} for s, sp in row["splits"].items()}}


def _flat(prefix: str, row: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{s}/{k}": torch.from_numpy(a) for s, sp in row["splits"].items()
            for k, a in sp["per_example"].items()}


def resume_state(out: Path, fp: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """The recorded state of ``out`` (None if there is none) with its arrays; only groups whose arrays are all
    present count as done. A directory of other settings is a :class:`RunError`."""
    file = out / RESULTS
    if not file.is_file():
        return None, {}
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{file} is not readable JSON ({e}); delete it to start over, or use another --out") from None
    if state.get("fingerprint") != fp:
        old = state.get("fingerprint") or {}
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        raise RunError(f"{out} holds layer-wise results of other settings (differing: {', '.join(diff) or 'format'}); "
                       "use another --out, or delete it to start over")
    arrays = io.load_tensors(out / ARRAYS) if (out / ARRAYS).is_file() else {}
    if state.get("status") == "finished":
        return state, arrays
    keep = [r for r in state.get("groups", []) if all(f"group/{r['name']}/{s}/{k}" in arrays for s in r["splits"] for k in FIELDS)]
    kept = {f"group/{r['name']}/" for r in keep}
    arrays = {k: v for k, v in arrays.items() if any(k.startswith(p) for p in kept)}
    refs = {lab: r for lab, r in state.get("reference", {}).items()
            if all(f"reference/{lab}/{s}/{k}" in arrays for s in r["splits"] for k in FIELDS)}
    return {**state, "groups": keep, "reference": refs if len(refs) == 2 else {}, "status": "running"}, arrays


def row_arrays(arrays: dict[str, Any], kind: str, name: str, split: str) -> dict[str, dict[str, Any]]:
    """``{"map": {field: (N,)}, "bayes": {field: (N,)}}`` numpy arrays of one row and split; ``KeyError`` naming
    the missing key."""
    def get(key: str):
        if key not in arrays:
            raise KeyError(f"per-example array {key!r} is missing")
        v = arrays[key]
        return v.numpy() if torch.is_tensor(v) else v
    return {"map": {k: get(f"map/{split}/{k}") for k in FIELDS},
            "bayes": {k: get(f"{kind}/{name}/{split}/{k}") for k in FIELDS}}


def delta_ece_ci(ex: dict[str, dict[str, Any]], n_boot: int, seed: int, n_bins: int = 15) -> dict[str, Any]:
    """Paired bootstrap interval of ΔECE from :func:`row_arrays` output (JSON-ready)."""
    from ..stats import delta_ece_interval

    m, b = ex["map"], ex["bayes"]
    return delta_ece_interval(m["confidence"].astype("float64"), m["correct"], b["confidence"].astype("float64"),
                              b["correct"], n_bins=n_bins, n_boot=n_boot, seed=seed).to_dict()


def add_intervals(row: dict[str, Any], arrays: dict[str, Any], kind: str, n_boot: int, seed: int) -> None:
    for split, sp in row["splits"].items():
        sp["delta_ece_interval"] = delta_ece_ci(row_arrays(arrays, kind, row["name"], split), n_boot, seed)


def plot_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def write_plots(out: Path, state: dict[str, Any], arrays: dict[str, Any]) -> None:
    """``plots/reliability_<row>_<split>.png`` (MAP and Bayes in one figure) for every group and reference row."""
    from ..metrics import plot_reliability_comparison, reliability_from_top_label

    rows = [("group", r) for r in state["groups"]] + [("reference", r) for r in state["reference"].values()]
    for kind, row in rows:
        for split in row["splits"]:
            ex = row_arrays(arrays, kind, row["name"], split)
            curves = {"MAP": reliability_from_top_label(ex["map"]["confidence"], ex["map"]["correct"]),
                      f"Bayes [{row['name']}]": reliability_from_top_label(ex["bayes"]["confidence"], ex["bayes"]["correct"])}
            plot_reliability_comparison(curves, out / "plots" / f"reliability_{plot_name(row['name'])}_{split}.png",
                                        title=f"layer-wise Laplace: {row['name']} ({split})")


# ---- printing ------------------------------------------------------------------------------------------------------
def ranking_rows(state: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the ranked ΔECE table (groups by ΔECE on the first evaluation split, best first, then the reference
    rows) and its columns."""
    splits = [s for s in state["eval_splits"] if s in SPLITS] or state["eval_splits"]
    rank = splits[0]

    def line(row: dict[str, Any], ref: bool) -> dict[str, Any]:
        pp = row["prior_precision"]
        out = {"group": f"({row['name']})" if ref else row["name"], "depth": row["depth"], "n_params": row["n_params"],
               "prior": f"{pp:.3g}" if isinstance(pp, (int, float)) else "per group"}
        for s in splits:
            sp = row["splits"][s]
            ci = sp.get("delta_ece_interval") or {}
            out[f"ECE {s} MAP→Bayes"] = f"{sp['map']['ece']:.4f}→{sp['bayes']['ece']:.4f}"
            out[f"ΔECE {s} [95%]"] = f"{sp['delta_ece']:+.4f}" + (
                f" [{ci['lo']:+.4f}, {ci['hi']:+.4f}]" if ci.get("lo") is not None else "")
            out[f"ΔNLL {s}"] = f"{sp['delta_nll']:+.4f}"
        return out

    ranked = sorted(state["groups"], key=lambda r: -r["splits"][rank]["delta_ece"])
    rows = [line(r, False) for r in ranked] + [line(r, True) for r in state["reference"].values()]
    cols = ["group", "depth", "n_params", "prior"] + [c for s in splits for c in
                                                      (f"ECE {s} MAP→Bayes", f"ΔECE {s} [95%]", f"ΔNLL {s}")]
    return rows, cols


def format_ranking(state: dict[str, Any]) -> str:
    """The ranked ΔECE table, and the greedy curve when present."""
    rows, cols = ranking_rows(state)
    text = format_table(rows, cols)
    if state.get("greedy"):
        splits = [s for s in state["eval_splits"] if s in SPLITS] or state["eval_splits"]
        g = [{"n_groups": 0, "added": "(MAP)", **{f"ECE {s}": state["map"][s]["ece"] for s in splits},
              **{f"NLL {s}": state["map"][s]["nll"] for s in splits}}]
        g += [{"n_groups": st["n_groups"], "added": st["added"], f"ECE {state['select_split']} (selection)": st["select_ece"],
               **{f"ECE {s}": st["splits"][s]["bayes"]["ece"] for s in splits},
               **{f"NLL {s}": st["splits"][s]["bayes"]["nll"] for s in splits}} for st in state["greedy"]]
        gcols = ["n_groups", "added", f"ECE {state['select_split']} (selection)", *[f"ECE {s}" for s in splits],
                 *[f"NLL {s}" for s in splits]]
        text += "\n\ngreedy selection (by ECE on the validation split):\n" + format_table(g, gcols)
    return text
