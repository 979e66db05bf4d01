"""``bayespeft train``: MAP fine-tuning of a backbone with an adapter, into a run directory.

Writes the resolved config, ``history.json`` and the resume checkpoints (:func:`bayespeft.train.fit`), the adapter
in PEFT's format (``checkpoint/``), ``metrics.json`` (parameter counts, training summary, MAP metrics per split),
reliability diagrams and one results-CSV row per split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import save_adapter
from ..config import ExperimentConfig, flatten_keys, validate
from ..errors import RunError
from ..train import fit
from .run import Built, build, check_outputs, checkpoint_id, evaluate_map, finish_run, recording, start_run


#: Config keys (dotted prefixes) that may differ between an interrupted run and its resumption, because they do
#: not change the trained weights: the run's name and output settings, the posterior sections (``bayespeft
#: train`` does not read them), progress display, checkpoint frequency, device, out-of-memory handling
#: (``train.auto_batch_size``: the micro-batch already settled on is kept), and where/how the data files are
#: found. Everything else must equal the run's ``config.yaml``.
RESUME_MAY_DIFFER = (
    "name", "output.", "laplace", "layerwise", "sgmcmc", "train.progress", "train.checkpoint_every_epoch", "train.device",
    "model.offline", "train.auto_batch_size", "data.root", "data.download", "data.verify_checksums", "data.num_workers",
)


def check_resumable(cfg: ExperimentConfig, run_dir: str | Path) -> Path:
    """The run directory ``run_dir`` if it holds an unfinished run of ``cfg``; otherwise :class:`RunError` saying
    what was found there. Nothing is created or changed. See :data:`RESUME_MAY_DIFFER` for the keys that may
    differ."""
    path = Path(run_dir)
    if not path.exists():
        raise RunError(f"cannot resume {path}: it does not exist; pass the run directory of an interrupted "
                       "`bayespeft train` (printed when it started, under output.root), or drop --resume to start a new run")
    if not path.is_dir():
        raise RunError(f"cannot resume {path}: it is a file, not a run directory")
    saved = path / "config.yaml"
    if not saved.is_file():
        found = sorted(p.name for p in path.iterdir())
        what = "an empty directory" if not found else "a directory holding " + ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        raise RunError(f"cannot resume {path}: it is not a run directory (no config.yaml; found {what}); pass the "
                       "directory `bayespeft train` printed, or drop --resume to start a new run")
    import yaml

    try:
        old = flatten_keys(validate(yaml.safe_load(saved.read_text()) or {}, str(saved)).model_dump(mode="json"))
    except Exception as e:
        raise RunError(f"cannot resume {path}: its {saved.name} is not a valid config ({str(e).splitlines()[0]})") from None
    new = flatten_keys(cfg.model_dump(mode="json"))
    diff = [k for k in sorted(set(old) | set(new))
            if not any(k == m or k.startswith(m if m.endswith(".") else m + ".") for m in RESUME_MAY_DIFFER)
            and old.get(k) != new.get(k)]
    if diff:
        what = "; ".join(f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in diff[:4])
        more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
        raise RunError(f"cannot resume {path}: it is a run of another config ({what}{more}); resume with the run's "
                       f"own config ({saved}), or drop --resume to start a new run")
    mfile = path / "metrics.json"
    if mfile.is_file():
        try:
            status = json.loads(mfile.read_text()).get("status", "finished")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            status = "unreadable"
        if status in ("finished", "unreadable"):
            raise RunError(f"cannot resume {path}: the run is already finished (its results are in {mfile}); "
                           "drop --resume to train a new run")
    return path


@dataclass
class TrainedRun:
    """What a MAP training run leaves in memory (the model is kept for posterior fitting)."""

    run_dir: Path
    built: Built
    metrics: dict[str, Any]
    train_time_s: float | None


def train_model(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False) -> TrainedRun:
    """MAP fine-tuning: train, save the adapter (PEFT format), evaluate, write ``metrics.json`` and CSV rows.

    ``resume=True`` (``bayespeft train --resume RUN_DIR``): ``run_dir`` must exist and hold an unfinished run of
    ``cfg`` (:func:`check_resumable`, otherwise :class:`~bayespeft.errors.RunError`); it continues from its last
    checkpoint. Without ``resume`` a given ``run_dir`` (a sweep's stage directory) is created if missing, and a
    training checkpoint already in it (a stage killed mid-run) is continued.
    """
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs the run_dir of the interrupted run")
        check_resumable(cfg, run_dir)
    check_outputs(cfg, run_dir if resume else None)
    path = start_run(cfg, run_dir)
    with recording(path, interrupted_hint=f"resume it with `bayespeft train CONFIG --resume {path}`"):
        built = build(cfg)
        result = fit(built.model, built.loaders.train, built.loaders.val, cfg.train, path)
        rd = result.to_dict()
        save_adapter(built.model, path / "checkpoint", metadata={"config": cfg.model_dump(mode="json"), "params": built.params})
        built.checkpoint = checkpoint_id(path / "checkpoint")
        extra = {"train_time_s": rd.get("train_time_s"), "epochs": rd.get("epochs_run")}
        metrics = {"params": built.params, "data": built.data.record(), "train": rd, "map": evaluate_map(cfg, built, path, extra)}
    metrics = finish_run(cfg, path, metrics)
    return TrainedRun(run_dir=path, built=built, metrics=metrics, train_time_s=rd.get("train_time_s"))


def train_run(cfg: ExperimentConfig, run_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """:func:`train_model` as a JSON-ready summary (what ``bayespeft train`` prints)."""
    run = train_model(cfg, run_dir, resume)
    return {"run_dir": str(run.run_dir), **run.metrics}
