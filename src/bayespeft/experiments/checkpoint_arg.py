"""The ``--checkpoint`` argument of ``evaluate``, ``laplace``, ``layerwise`` and ``sample``: a run directory (its
``checkpoint/``) or an adapter directory, resolved and checked before anything is built (a wrong path fails in a
second, not after the model and data were loaded). A run directory without a checkpoint says what it is instead:
an unfinished training run (resume it), a failed one (its error), or a ``sample`` / ``evaluate`` / ``laplace`` run
(the checkpoint it used)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..adapters.checkpoint import META, read_meta
from ..errors import CheckpointError


def _metrics(run: Path) -> dict[str, Any] | None:
    try:
        out = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _not_a_checkpoint(run: Path) -> str | None:
    """Why the directory ``run`` (no ``bayespeft_meta.json``) is a run without a checkpoint; None if it is no run."""
    metrics = _metrics(run)
    status = (metrics or {}).get("status")
    if status == "failed":
        error = metrics.get("error", "see its metrics.json")
        return f"{run} is a run that failed ({error}), so it has no checkpoint; fix that and train again"
    if (metrics or {}).get("checkpoint"):
        return (f"{run} is a run that used the checkpoint {metrics['checkpoint']} (it writes no checkpoint of its "
                "own); pass that one")
    if status in ("interrupted", "running") or (metrics is None and (run / "checkpoints").is_dir()):
        state = f"status '{status}'" if status else "stopped before metrics.json was written"
        return (f"{run} is a training run that did not finish ({state}), so it has no final checkpoint yet; finish it "
                f"with `bayespeft train CONFIG --resume {run}`, then pass it again")
    return None


def checkpoint_dir(checkpoint: str | Path) -> Path:
    """The adapter directory of ``checkpoint`` (``RUN_DIR/checkpoint`` for a run directory), with its metadata read;
    :class:`~bayespeft.errors.CheckpointError` (or ``FileNotFoundError``) naming what the path is and the fix."""
    ckpt = Path(checkpoint)
    if ckpt.is_dir() and (ckpt / "checkpoint").is_dir():  # a run directory
        ckpt = ckpt / "checkpoint"
    if ckpt.exists() and not ckpt.is_dir():
        raise CheckpointError(f"--checkpoint {ckpt} is a file, not a directory: pass the run directory that `bayespeft "
                              "train` printed (or its checkpoint/ subdirectory)")
    if ckpt.is_dir() and not (ckpt / META).is_file():
        why = _not_a_checkpoint(ckpt)
        if why:
            raise CheckpointError(why)
    read_meta(ckpt)
    return ckpt
