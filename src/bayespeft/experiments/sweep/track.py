"""``--track mlflow``: each executed run's params, metrics and plots also go to an MLflow tracking location.

``bayespeft sweep``: the driver (whichever executor ran the run: Ray workers never log) calls
:meth:`MlflowTracker.log_run` after recording the run's outcome in the store; one MLflow run per attempt, named by the
run id, in the MLflow experiment named after the sweep. ``bayespeft train``: :meth:`MlflowTracker.log_train` after
the run finished, named after its run directory, in the experiment named after the config's ``name``. Each has

* params: the run's resolved config flattened to dotted keys (``train.lr``), values as JSON text (``0.01``,
  ``true``, ``null``, ``["q", "v"]``; strings as they are);
* metrics: ``{posterior}/{split}/{metric}`` for every result row of the store (``map/test/acc_at_1``; MLflow names
  allow neither ``@`` nor ``%``: ``acc@1`` -> ``acc_at_1``, ``tuned_%`` -> ``tuned_pct``), ``run/{figure}`` for the
  numeric run figures (time per epoch, throughputs, peak memory, tuned %, epochs, micro-batch, ...), ``time/{stage}``
  (seconds per stage and in total), and the training curves ``train/{train_loss,val_loss,train_acc,val_acc}`` with
  the epoch as step;
* artifacts: the :data:`ARTIFACTS` files of the run directory and every ``*.png`` plot under it (relative paths
  kept);
* tags: ``bayespeft.run_id`` and ``bayespeft.sweep`` (sweeps) or ``bayespeft.run_dir`` (train), ``bayespeft.status``
  and, for a failed run, ``bayespeft.error``; the MLflow run ends ``FINISHED`` or ``FAILED``.

Location: ``--track-uri``, else the ``MLFLOW_TRACKING_URI`` environment variable, else the directory
``<sweep dir>/mlruns`` (``<output.root>/mlruns`` for ``bayespeft train``; MLflow's file store, enabled for this process with ``MLFLOW_ALLOW_FILE_STORE=true``; read it
with ``mlflow.MlflowClient(DIR)`` or ``mlflow ui --backend-store-uri DIR``). A run that cannot be logged is a warning
on stderr: the store, not the tracker, is the sweep's record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .spec import SweepError
from .store import RunRecord

TRACKERS = ("mlflow",)
#: files of a run directory logged as artifacts (those that exist), besides every ``*.png`` under it
ARTIFACTS = ("config.yaml", "result.json", "log.txt", "metrics.json", "history.json")
CURVES = ("train_loss", "val_loss", "train_acc", "val_acc")


def metric_name(name: str) -> str:
    """A report metric name as MLflow accepts it: ``acc@1`` -> ``acc_at_1``, ``tuned_%`` -> ``tuned_pct``."""
    return name.replace("@", "_at_").replace("%", "pct")


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.01}}`` -> ``{"train.lr": "0.01"}``: leaves as JSON text (strings unquoted)."""
    if isinstance(config, dict) and config:
        out: dict[str, str] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)}


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def run_metrics(outcome: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of an outcome (:func:`~.runner.execute_run`), by their MLflow names."""
    m = outcome.get("metrics") or {}
    out: dict[str, float] = {}
    for row in m.get("rows") or []:
        for k, v in row.items():
            if k not in ("stage", "posterior", "split") and _number(v) is not None:
                out[f"{row['posterior']}/{row['split']}/{metric_name(k)}"] = float(v)
    for k, v in (m.get("run") or {}).items():
        if _number(v) is not None:
            out[f"run/{metric_name(k)}"] = float(v)
    for k, v in (outcome.get("timings") or {}).items():
        if _number(v) is not None:
            out[f"time/{k}"] = float(v)
    return out


def sweep_history(run_dir: Path) -> list[dict[str, Any]]:
    """The training stage's per-epoch history in a sweep run's ``result.json`` (empty if there is none)."""
    try:
        stages = json.loads((run_dir / "result.json").read_text()).get("stages") or {}
    except (OSError, ValueError):
        return []
    return ((stages.get("train") or {}).get("train") or {}).get("history") or []


def train_curves(history: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """``(train/<name>, value, epoch)`` for the :data:`CURVES` of each epoch record."""
    return [(f"train/{k}", float(h[k]), int(h["epoch"])) for h in history for k in CURVES if _number(h.get(k)) is not None]


class MlflowTracker:
    """Logs runs to one MLflow experiment (the sweep's name) at ``uri`` (see the module docstring)."""

    def __init__(self, uri: str, experiment: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise SweepError("--track mlflow needs MLflow: pip install 'bayespeft[track]' (or mlflow-skinny)") from None
        if "://" not in uri and not uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local directory: MLflow's file store
            Path(uri).mkdir(parents=True, exist_ok=True)
            uri = Path(uri).resolve().as_uri()
        self.uri, self.experiment = uri, experiment
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment_id()
        except Exception as e:  # noqa: BLE001  before any run: a one-line error
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SweepError(f"--track mlflow: cannot use the tracking location {uri} ({first}); pass a directory or "
                             "a reachable server with --track-uri") from None

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # noqa: BLE001  another driver created it first
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def log_run(self, rec: RunRecord, outcome: dict[str, Any]) -> str | None:
        """One MLflow run for this attempt of the sweep run ``rec``; returns its MLflow id (None and a warning if
        logging failed)."""
        run_dir = Path(rec.run_dir or "")
        tags = {"bayespeft.run_id": rec.id, "bayespeft.sweep": self.experiment}
        return self._safe(rec.id, rec.config, outcome, run_dir, sweep_history(run_dir), tags)

    def log_train(self, config: dict[str, Any], summary: dict[str, Any]) -> str | None:
        """One MLflow run for a finished ``bayespeft train`` run (``summary``: what
        :func:`~bayespeft.experiments.train.train_run` returns), named after its run directory."""
        from .runner import tidy_metrics

        run_dir = Path(summary["run_dir"])
        outcome = {"status": "done", "metrics": tidy_metrics({"train": summary}, [{"label": "train", "kind": "train"}])}
        history = (summary.get("train") or {}).get("history") or []
        return self._safe(run_dir.name, config, outcome, run_dir, history, {"bayespeft.run_dir": str(run_dir)})

    def _safe(self, name: str, *args: Any) -> str | None:
        try:
            return self._log(name, *args)
        except Exception as e:  # noqa: BLE001  the store / run directory holds the result; the tracker is a copy
            print(f"warning: --track mlflow: run {name} was not logged to {self.uri}: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return None

    def _log(self, name: str, config: dict[str, Any], outcome: dict[str, Any], run_dir: Path,
             history: list[dict[str, Any]], tags: dict[str, str]) -> str:
        from mlflow.entities import Metric, Param

        status = outcome.get("status", "failed")
        tags = {**tags, "bayespeft.status": status}
        if outcome.get("error"):
            tags["bayespeft.error"] = str(outcome["error"])[:5000]
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        rid = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(rid, params=params[i: i + 100])
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(outcome).items()]
        metrics += [Metric(k, v, now, step) for k, v, step in train_curves(history)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(rid, metrics=metrics[i: i + 1000])
        for path in [*(run_dir / a for a in ARTIFACTS), *sorted(run_dir.rglob("*.png"))]:
            if path.is_file():
                rel = path.parent.relative_to(run_dir).as_posix()
                self.client.log_artifact(rid, str(path), artifact_path=None if rel == "." else rel)
        self.client.set_terminated(rid, "FINISHED" if status == "done" else "FAILED")
        return rid


def make_tracker(kind: str | None, uri: str | None, default_dir: Path, experiment: str) -> MlflowTracker | None:
    """The tracker of ``--track KIND [--track-uri URI]`` (None without ``--track``): MLflow experiment
    ``experiment`` (the sweep's or the config's name) at ``URI``, ``$MLFLOW_TRACKING_URI`` or ``default_dir/mlruns``."""
    if kind is None:
        if uri is not None:
            raise SweepError("--track-uri is the location for --track mlflow; add --track mlflow")
        return None
    if kind not in TRACKERS:
        raise SweepError(f"unknown tracker {kind!r}; use one of: {', '.join(TRACKERS)}")
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or str(default_dir / "mlruns")
    return MlflowTracker(uri, experiment)
