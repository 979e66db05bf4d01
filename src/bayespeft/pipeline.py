"""Config -> objects -> run directory. Every CLI command is a thin layer over these functions.

``build(cfg)`` turns an :class:`~bayespeft.config.ExperimentConfig` into plain PyTorch objects (model with its
adapter applied, datasets, loaders); ``train_run`` / ``evaluate_run`` produce a run directory with the resolved
config, metrics JSON, reliability diagrams and a checkpoint, and append rows to the results CSV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import io
from .adapters import apply_adapter, load_adapter, parameter_report, save_adapter
from .config import ExperimentConfig, dump_config
from .data import DataBundle, build_data, dataset_info
from .experiments.records import append_result, new_run_dir
from .metrics import classification_metrics, plot_reliability_diagram
from .models import build_model
from .seed import seed_everything
from .train import fit, predict_probs

SPLITS = ("test", "test_shift")


@dataclass
class Built:
    model: torch.nn.Module
    data: DataBundle
    loaders: Any
    params: dict[str, Any]


def build(cfg: ExperimentConfig) -> Built:
    """Seed, build the backbone for the dataset's classes, apply the adapter, build datasets and loaders."""
    seed_everything(cfg.train.seed)
    info = dataset_info(cfg.data.name)
    model = build_model(cfg.model, info.num_classes)
    model = apply_adapter(model, cfg.adapter)
    data = build_data(cfg.data, model.input_spec)
    loaders = data.loaders(seed=cfg.train.seed)
    return Built(model=model, data=data, loaders=loaders, params=parameter_report(model))


def split_loaders(loaders: Any) -> dict[str, Any]:
    """The evaluation loaders that exist: ``test`` and, when configured, ``test_shift``."""
    return {s: getattr(loaders, s) for s in SPLITS if getattr(loaders, s, None) is not None}


def record_predictive(
    cfg: ExperimentConfig,
    built: Built,
    run_dir: Path,
    posterior: str,
    split: str,
    probs: torch.Tensor,
    labels: torch.Tensor,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics for one predictive on one split: JSON-ready dict, reliability PNG, one results-CSV row."""
    m = classification_metrics(probs, labels)
    tag = f"{posterior}_{split}"
    if cfg.output.reliability_plots:
        plot_reliability_diagram(probs, labels, run_dir / "plots" / f"reliability_{tag}.png", title=f"{posterior} ({split})")
    extra = dict(extra or {})
    append_result(
        cfg.output.csv_path(),
        {
            "run": run_dir.name,
            "method": cfg.adapter.method,
            "posterior": posterior,
            "dataset": cfg.data.name,
            "split": split,
            "backbone": cfg.model.name,
            "tuned_params": built.params.get("trainable_params"),
            "tuned_params_%": built.params.get("trainable_pct"),
            "acc@1": m["acc"],
            "nll": m["nll"],
            "ece": m["ece"],
            "brier": m["brier"],
            "train_time_s": extra.get("train_time_s"),
            "eval_time_s": extra.get("eval_time_s"),
            "epochs": extra.get("epochs"),
            "seed": cfg.train.seed,
            "run_dir": str(run_dir),
        },
    )
    return {**m, **extra}


def evaluate_map(cfg: ExperimentConfig, built: Built, run_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the MAP model on every evaluation split."""
    out = {}
    for split, loader in split_loaders(built.loaders).items():
        t0 = time.perf_counter()
        probs, labels = predict_probs(built.model, loader)
        ev = {"eval_time_s": time.perf_counter() - t0, **(extra or {})}
        out[split] = record_predictive(cfg, built, run_dir, "map", split, probs, labels, ev)
    return out


def start_run(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> Path:
    """Create (or reuse, for resuming) the run directory and store the resolved config in it."""
    path = Path(run_dir) if run_dir is not None else new_run_dir(cfg.output.root, cfg.name)
    path.mkdir(parents=True, exist_ok=True)
    io.write_text(path / "config.yaml", dump_config(cfg))
    return path


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
    metrics = {"params": built.params, "train": rd, "map": evaluate_map(cfg, built, path, extra)}
    io.write_json(path / "metrics.json", metrics)
    return TrainedRun(run_dir=path, built=built, metrics=metrics, train_time_s=rd.get("train_time_s"))


def train_run(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`train_model` as a JSON-ready summary (what ``bayespeft train`` prints)."""
    run = train_model(cfg, run_dir)
    return {"run_dir": str(run.run_dir), **run.metrics}


def load_checkpoint_into(built: Built, checkpoint: str | Path) -> None:
    """Load a saved adapter/checkpoint directory into a freshly built model (clear error on mismatch)."""
    ckpt = Path(checkpoint)
    if ckpt.is_dir() and (ckpt / "checkpoint").is_dir():  # a run directory
        ckpt = ckpt / "checkpoint"
    load_adapter(built.model, ckpt)


def evaluate_run(cfg: ExperimentConfig, checkpoint: str | Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint (MAP) on the test split(s); writes a new run directory."""
    built = build(cfg)
    load_checkpoint_into(built, checkpoint)
    path = start_run(cfg)
    metrics = {"params": built.params, "checkpoint": str(checkpoint), "map": evaluate_map(cfg, built, path)}
    io.write_json(path / "metrics.json", metrics)
    return {"run_dir": str(path), **metrics}
