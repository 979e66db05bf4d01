"""What every command shares: config -> plain PyTorch objects -> run directory -> recorded metrics.

``build(cfg)`` turns an :class:`~bayespeft.config.ExperimentConfig` into plain PyTorch objects (model with its
adapter applied, datasets, loaders); ``start_run`` creates the run directory holding the resolved config;
``record_predictive`` / ``evaluate_map`` write the metrics of a predictive (reliability diagram, results-CSV row);
``load_checkpoint_into`` restores a saved adapter. The commands (:mod:`.train`, :mod:`.evaluate`, :mod:`.laplace`,
:mod:`.sample`, :mod:`.quickstart`) are built from these pieces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..adapters import apply_adapter, load_adapter, parameter_report
from ..config import ExperimentConfig, dump_config
from ..data import DataBundle, build_data, dataset_info
from ..metrics import classification_metrics, plot_reliability_diagram
from ..models import build_model
from ..seed import seed_everything
from ..train import predict_probs
from .records import append_result, new_run_dir

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


def load_checkpoint_into(built: Built, checkpoint: str | Path) -> None:
    """Load a saved adapter/checkpoint directory into a freshly built model (clear error on mismatch)."""
    ckpt = Path(checkpoint)
    if ckpt.is_dir() and (ckpt / "checkpoint").is_dir():  # a run directory
        ckpt = ckpt / "checkpoint"
    load_adapter(built.model, ckpt)
