"""One run of a sweep: its stages chained in its own directory, its output in a log, its outcome as a dict.

Layout of ``<sweep>/runs/<id>/``: ``config.yaml`` (the resolved config), ``run.json`` (id, stages, what differs),
``log.txt`` (everything the run printed, over all attempts), one directory per stage (``train/`` with the
resume checkpoints ``checkpoints/`` and the adapter ``checkpoint/``, ``evaluate/``, ``laplace-kfac/``, ...), each
with its ``metrics.json`` and ``results.csv`` rows, and ``result.json`` (the outcome of the last attempt).

Stages call the commands of the application layer: ``train`` -> :func:`bayespeft.experiments.train.train_run`
(given the stage directory, so a rerun resumes from the last epoch checkpoint), ``evaluate`` ->
:func:`~bayespeft.experiments.evaluate.evaluate_run`, ``laplace`` -> :func:`~bayespeft.experiments.laplace.laplace_run`,
``sample`` -> :func:`~bayespeft.experiments.sample.sample_run`, the last three on the train stage's checkpoint. A
finished stage writes ``stage.json``; on a rerun it is skipped. An unfinished sample stage whose sample store exists
continues it (:func:`~bayespeft.experiments.sample.resume_sample_run`, bit-exact: finished chains kept, the others
from their last kept sample); any other unfinished non-train stage starts over in an emptied directory.

:func:`execute_run` never raises for a failing run (the outcome says ``failed`` with the error and traceback);
``KeyboardInterrupt`` and ``SystemExit`` pass through.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ... import io
from ...config import ExperimentConfig, deep_merge, dump_config, validate
from .spec import STAGE_SECTION

#: versions recorded with every run
PACKAGES = ("bayespeft", "torch", "numpy", "scipy", "transformers", "timm", "peft", "pydantic")
#: metric names of the report <- keys of :func:`bayespeft.metrics.classification_metrics`
METRIC_KEYS = {"acc@1": "acc", "acc@5": "top5_acc", "f1": "f1_macro", "nll": "nll", "ece": "ece", "brier": "brier"}
STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to execute one run (plain data: it travels to Ray workers)."""

    id: str
    run_dir: str
    config: dict[str, Any]
    stages: list[dict[str, Any]]
    differs: dict[str, Any]


# ---- provenance --------------------------------------------------------------------------------------------------
@functools.cache
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    from ... import __version__

    out["bayespeft"] = __version__
    return out


@functools.cache
def git_commit() -> str | None:
    """The git commit of the bayespeft source tree (None outside a git checkout), with ``+dirty`` if modified."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---- output capture ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def captured_output(log_path: Path) -> Iterator[None]:
    """Send ``sys.stdout``/``sys.stderr`` (prints, warnings, progress bars, logging to stderr) to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        import logging

        handler = logging.StreamHandler(f)
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)


# ---- stages ------------------------------------------------------------------------------------------------------
def stage_config(config: dict[str, Any], stage: dict[str, Any], run_dir: Path) -> ExperimentConfig:
    """The run's config with the stage's options merged into its section and the output paths of the run."""
    raw = copy.deepcopy(config)
    section = STAGE_SECTION[stage["kind"]]
    if section is not None and stage.get("options"):
        raw = deep_merge(raw, {section: stage["options"]})
    raw["output"] = {**(raw.get("output") or {}), "root": str(run_dir),
                     "results_csv": str(run_dir / stage["label"] / "results.csv")}
    return validate(raw, source=f"stage {stage['label']}")


def _train(cfg: ExperimentConfig, stage_dir: Path, checkpoint: Path) -> dict[str, Any]:
    from ..train import train_run

    return train_run(cfg, run_dir=stage_dir)


def _evaluate(cfg: ExperimentConfig, stage_dir: Path, checkpoint: Path) -> dict[str, Any]:
    from ..evaluate import evaluate_run

    return evaluate_run(cfg, checkpoint, run_dir=stage_dir)


def _laplace(cfg: ExperimentConfig, stage_dir: Path, checkpoint: Path) -> dict[str, Any]:
    from ..laplace import laplace_run

    return laplace_run(cfg, checkpoint, run_dir=stage_dir)


def _sample(cfg: ExperimentConfig, stage_dir: Path, checkpoint: Path) -> dict[str, Any]:
    from ..sample import finished_sample_output, sample_run

    if not sample_resumable(stage_dir):
        return sample_run(cfg, checkpoint, run_dir=stage_dir)
    print(f"--- resuming the interrupted sample stage from its store {stage_dir / 'samples'}", flush=True)
    out = sample_run(cfg, checkpoint, resume=stage_dir)
    # every chain had finished and metrics.json was written, but the stage was stopped before its stage.json
    return finished_sample_output(stage_dir) if "nothing_to_do" in out else out


def sample_resumable(stage_dir: Path) -> bool:
    """Whether ``stage_dir`` holds the sample store of an interrupted sample stage that ``bayespeft sample
    --resume`` can continue (its index, the config and the sampling plan it recorded)."""
    from ...sgmcmc.store import INDEX

    index = stage_dir / "samples" / INDEX
    if not index.is_file():
        return False
    try:
        meta = json.loads(index.read_text()).get("metadata") or {}
    except (OSError, ValueError):
        return False
    return "config" in meta and "plan" in meta


STAGES: dict[str, Callable[[ExperimentConfig, Path, Path], dict[str, Any]]] = {
    "train": _train, "evaluate": _evaluate, "laplace": _laplace, "sample": _sample,
}


def run_stage(config: dict[str, Any], stage: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], float, bool]:
    """Run one stage (or load its finished output); returns ``(output, seconds, skipped)``."""
    stage_dir = run_dir / stage["label"]
    marker = stage_dir / STAGE_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["output"], 0.0, True
    if stage["kind"] == "train":
        (stage_dir / "results.csv").unlink(missing_ok=True)  # rows of an attempt that died before finishing
    elif stage["kind"] == "sample" and sample_resumable(stage_dir):
        pass  # continued from its sample store (bayespeft sample --resume), see _sample
    elif stage_dir.exists():
        shutil.rmtree(stage_dir)
    cfg = stage_config(config, stage, run_dir)
    t0 = time.perf_counter()
    out = STAGES[stage["kind"]](cfg, stage_dir, run_dir / "train" / "checkpoint")
    seconds = time.perf_counter() - t0
    io.write_json(marker, {"label": stage["label"], "seconds": seconds, "output": out})
    return json.loads(marker.read_text())["output"], seconds, False


# ---- summaries ---------------------------------------------------------------------------------------------------
def _pick(m: dict[str, Any]) -> dict[str, Any]:
    return {name: m.get(key) for name, key in METRIC_KEYS.items()}


def tidy_metrics(outputs: dict[str, dict[str, Any]], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"rows": [{stage, posterior, split, acc@1, acc@5, f1, nll, ece, brier, reliability}], "run": {...},
    "diagnostics": {...}}`` (``reliability``: the per-bin ``{count, accuracy, confidence}`` of the predictive).

    One row per (posterior, split), the first stage that reports it winning (the MAP rows of the train stage).
    ``run``: tuned-parameter %, time per epoch, throughputs, peak memory, epochs, training time, the epoch a
    resumed training started from, the micro-batch after out-of-memory errors (``train.auto_batch_size``).
    ``diagnostics``: the SG-MCMC verdicts per sample stage.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    run: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    for st in stages:
        out = outputs.get(st["label"])
        if out is None:
            continue
        if "table" in out:
            entries = [(r["posterior"], r["split"], r) for r in out["table"]]
        else:
            entries = [("map", s, m) for s, m in (out.get("map") or {}).items()]
        for posterior, split, m in entries:
            rows.setdefault((posterior, split), {"stage": st["label"], "posterior": posterior, "split": split, **_pick(m),
                                                 "reliability": m.get("reliability")})
        params = out.get("params") or {}
        run.setdefault("tuned_%", params.get("trainable_pct"))
        run.setdefault("tuned_params", params.get("trainable_params"))
        if st["kind"] == "train":
            tr = out.get("train") or {}
            hist = tr.get("history") or []
            run.update({
                "time_per_epoch_s": sum(h["epoch_time_s"] for h in hist) / len(hist) if hist else None,
                "train_time_s": tr.get("train_time_s"), "epochs": tr.get("epochs_run"),
                "throughput": tr.get("train_throughput"), "inference_throughput": tr.get("inference_throughput"),
                "peak_memory_mb": tr["peak_memory_bytes"] / 2**20 if tr.get("peak_memory_bytes") else None,
                "peak_memory_kind": tr.get("peak_memory_kind"), "device": tr.get("device"),
                "resumed_from_epoch": tr.get("resumed_from_epoch"), "micro_batch_size": tr.get("micro_batch_size"),
            })
        if st["kind"] == "sample":
            sg = out.get("sgmcmc") or {}
            diagnostics[st["label"]] = {"verdict_text": out.get("verdict"), "verdict": sg.get("verdict"),
                                        "diverged": out.get("diverged")}
    return {"rows": list(rows.values()), "run": run, "diagnostics": diagnostics}


def read_rows(run_dir: Path, task: RunTask) -> list[dict[str, Any]]:
    """The results-CSV rows the stages appended (``run`` = ``<id>/<stage>``), in stage order."""
    out = []
    for st in task.stages:
        path = run_dir / st["label"] / "results.csv"
        if path.is_file():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    out.append({**row, "run": f"{task.id}/{st['label']}"})
    return out


# ---- one run -----------------------------------------------------------------------------------------------------
def write_run_files(task: RunTask) -> Path:
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = stage_config(task.config, task.stages[0], run_dir)
    io.write_text(run_dir / "config.yaml", dump_config(cfg))
    io.write_json(run_dir / "run.json", {"id": task.id, "differs": task.differs, "stages": task.stages})
    return run_dir


def execute_run(task: RunTask) -> dict[str, Any]:
    """Run every stage of ``task`` in its directory; the outcome dict goes to :meth:`SweepStore.finish`.

    Keys: ``status`` (done/failed), ``metrics`` (:func:`tidy_metrics`), ``rows`` (CSV rows), ``timings``
    (seconds per stage and in total), ``resources`` (peak memory, throughput, time per epoch, device, the
    micro-batch ``train.auto_batch_size`` settled on),
    ``error`` and ``traceback`` (failed runs), ``versions``, ``git_commit``, ``host``, ``pid``.
    """
    t_start = time.perf_counter()
    run_dir = write_run_files(task)
    outputs: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    outcome: dict[str, Any] = {"status": "failed", "versions": versions(), "git_commit": git_commit(),
                               "host": platform.node(), "pid": os.getpid()}
    with captured_output(run_dir / "log.txt"):
        print(f"=== run {task.id} attempt at {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()}) ===", flush=True)
        try:
            for st in task.stages:
                out, seconds, skipped = run_stage(task.config, st, run_dir)
                outputs[st["label"]] = out
                timings[st["label"]] = seconds
                print(f"--- stage {st['label']}: {'already finished' if skipped else f'{seconds:.1f} s'}", flush=True)
            outcome["status"] = "done"
        except Exception as e:  # noqa: BLE001  a failing run is recorded, the sweep goes on
            outcome["error"] = f"{type(e).__name__}: {e}"
            outcome["traceback"] = traceback.format_exc()
            print(outcome["traceback"], file=sys.stderr, flush=True)
        finally:
            _free_memory()
    timings["total"] = time.perf_counter() - t_start
    metrics = tidy_metrics(outputs, task.stages)
    outcome.update(metrics=metrics, timings=timings, rows=read_rows(run_dir, task) if outcome["status"] == "done" else [])
    outcome["resources"] = {k: metrics["run"].get(k) for k in (
        "peak_memory_mb", "peak_memory_kind", "throughput", "inference_throughput", "time_per_epoch_s", "device",
        "micro_batch_size")}
    io.write_json(run_dir / "result.json", {"id": task.id, **{k: v for k, v in outcome.items() if k != "rows"},
                                            "stages": outputs})
    return outcome


def _free_memory() -> None:
    """On CUDA, collect the run's reference cycles and return cached blocks, so the next run starts with the
    device's memory free. Skipped on CPU: a full ``gc.collect`` after every run costs ~0.8 s with torch loaded
    (measured by benchmarks/sweep_overhead.py) and CPU memory is returned as the objects die anyway."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def task_dict(task: RunTask) -> dict[str, Any]:
    return asdict(task)
