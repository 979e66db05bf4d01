"""``bayespeft evaluate --checkpoint``: the MAP metrics of a saved adapter on the test split(s), in a new run
directory (``metrics.json``, reliability diagrams, results-CSV rows). With ``--samples`` the command evaluates an
SG-MCMC sample store instead: :func:`bayespeft.experiments.sample.evaluate_samples_run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from .checkpoint_arg import checkpoint_dir
from .run import build, check_outputs, evaluate_map, finish_run, load_checkpoint_into, recording, start_run


def evaluate_run(cfg: ExperimentConfig, checkpoint: str | Path, check_base: bool = True,
                 run_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a saved checkpoint (MAP) on the test split(s); writes a new run directory (or ``run_dir``, a sweep's
    stage directory). ``check_base``: see :func:`~bayespeft.adapters.load_adapter`."""
    check_outputs(cfg)
    checkpoint_dir(checkpoint)  # a wrong --checkpoint fails before the model and data are built
    built = build(cfg)
    load_checkpoint_into(built, checkpoint, check_base, cfg.data)
    path = start_run(cfg, run_dir)
    with recording(path):
        metrics = {"params": built.params, "data": built.data.record(), "checkpoint": str(checkpoint), "map": evaluate_map(cfg, built, path)}
    metrics = finish_run(cfg, path, metrics)
    return {"run_dir": str(path), **metrics}
