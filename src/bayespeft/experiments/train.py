"""``bayespeft train``: MAP fine-tuning of a backbone with an adapter, into a run directory.

Writes the resolved config, ``history.json`` and the resume checkpoints (:func:`bayespeft.train.fit`), the adapter
in PEFT's format (``checkpoint/``), ``metrics.json`` (parameter counts, training summary, MAP metrics per split),
reliability diagrams and one results-CSV row per split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import io
from ..adapters import save_adapter
from ..config import ExperimentConfig
from ..train import fit
from .run import Built, build, evaluate_map, start_run


@dataclass
class TrainedRun:
    """What a MAP training run leaves in memory (the model is kept for posterior fitting)."""

    run_dir: Path
    built: Built
    metrics: dict[str, Any]
    train_time_s: float | None


def train_model(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> TrainedRun:
    """MAP fine-tuning: train, save the adapter (PEFT format), evaluate, write ``metrics.json`` and CSV rows.

    Passing the ``run_dir`` of an interrupted run resumes it from its last checkpoint.
    """
    path = start_run(cfg, run_dir)
    built = build(cfg)
    result = fit(built.model, built.loaders.train, built.loaders.val, cfg.train, path)
    rd = result.to_dict()
    save_adapter(built.model, path / "checkpoint", metadata={"config": cfg.model_dump(mode="json"), "params": built.params})
    extra = {"train_time_s": rd.get("train_time_s"), "epochs": rd.get("epochs_run")}
    metrics = {"params": built.params, "data": built.data.record(), "train": rd, "map": evaluate_map(cfg, built, path, extra)}
    io.write_json(path / "metrics.json", metrics)
    return TrainedRun(run_dir=path, built=built, metrics=metrics, train_time_s=rd.get("train_time_s"))


def train_run(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`train_model` as a JSON-ready summary (what ``bayespeft train`` prints)."""
    run = train_model(cfg, run_dir)
    return {"run_dir": str(run.run_dir), **run.metrics}
