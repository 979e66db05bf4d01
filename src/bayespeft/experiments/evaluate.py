"""``bayespeft evaluate --checkpoint``: the MAP metrics of a saved adapter on the test split(s), in a new run
directory (``metrics.json``, reliability diagrams, results-CSV rows). With ``--samples`` the command evaluates an
SG-MCMC sample store instead: :func:`bayespeft.experiments.sample.evaluate_samples_run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import io
from ..config import ExperimentConfig
from .run import build, evaluate_map, load_checkpoint_into, start_run


def evaluate_run(cfg: ExperimentConfig, checkpoint: str | Path) -> dict[str, Any]:
    """Evaluate a saved checkpoint (MAP) on the test split(s); writes a new run directory."""
    built = build(cfg)
    load_checkpoint_into(built, checkpoint)
    path = start_run(cfg)
    metrics = {"params": built.params, "data": built.data.record(), "checkpoint": str(checkpoint),
               "map": evaluate_map(cfg, built, path)}
    io.write_json(path / "metrics.json", metrics)
    return {"run_dir": str(path), **metrics}
