"""What every command shares: config -> plain PyTorch objects -> run directory -> recorded metrics.

``build(cfg)`` turns an :class:`~bayespeft.config.ExperimentConfig` into plain PyTorch objects (model with its
adapter applied, datasets, loaders); ``start_run`` creates the run directory holding the resolved config;
``record_predictive`` / ``evaluate_map`` write the metrics of a predictive (reliability diagram, results-CSV row);
``load_checkpoint_into`` restores a saved adapter. The commands (:mod:`.train`, :mod:`.evaluate`, :mod:`.laplace`,
:mod:`.sample`, :mod:`.quickstart`) are built from these pieces.

A run's life: ``check_outputs`` (before any work: every output location writable), ``start_run``, then inside
``with recording(run_dir):`` the work, whose predictives ``record_predictive`` writes to the run's own ``rows.csv``;
``finish_run`` writes ``metrics.json`` (``"status": "finished"``) and only then appends the rows to the shared
results CSV (one row per distinct result, :mod:`.records`). An exception inside ``recording`` writes
``metrics.json`` with ``"status": "failed"`` (or ``"interrupted"``) and the error, and appends nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..adapters import apply_adapter, load_adapter, parameter_report
from ..adapters.checkpoint import read_meta
from ..config import ExperimentConfig, dump_config
from ..data import DataBundle, DataConfig, build_data, dataset_info
from ..data.fingerprint import dataset_fingerprint
from ..metrics import classification_metrics, plot_reliability_diagram, reliability_diagram_data
from ..models import build_model
from ..seed import seed_everything
from ..train import predict_probs
from ..train.loop import resolve_device
from ..errors import CheckpointError, CheckpointMismatchError, RunError
from .checkpoint_arg import checkpoint_dir
from .records import SPLITS, append_results, check_output_dir, check_results_csv, new_run_dir, read_rows

ROWS = "rows.csv"

#: Data settings that cannot change a test metric (file locations, training-only loader settings): left out of the
#: result key. What the files hold enters it instead, as the evaluated split's content fingerprint
#: (:func:`split_fingerprint`): the same data in another directory is the same result, edited data another.
DATA_KEY_IGNORES = frozenset({"root", "download", "verify_checksums", "batch_size", "eval_batch_size", "num_workers", "augment"})
#: Model settings that cannot change a result (whether missing weights may be downloaded): left out of the result key.
MODEL_KEY_IGNORES = frozenset({"offline"})


def model_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """The model section as it enters result keys (without :data:`MODEL_KEY_IGNORES`)."""
    return {k: v for k, v in cfg.model.model_dump(mode="json").items() if k not in MODEL_KEY_IGNORES}


@dataclass
class Built:
    model: torch.nn.Module
    data: DataBundle
    loaders: Any
    params: dict[str, Any]
    #: SHA-256 of the weights file of the checkpoint the model holds (None: not from a saved checkpoint)
    checkpoint: str | None = None
    #: where a loaded checkpoint is evaluated and its posterior fitted (``train.device``); training places the model
    #: itself
    device: torch.device | None = None
    #: content fingerprint of each evaluation split (:func:`split_fingerprint`), computed on first use
    fingerprints: dict[str, str] = field(default_factory=dict)


def build(cfg: ExperimentConfig) -> Built:
    """Seed, build the backbone for the dataset's classes, apply the adapter, build datasets and loaders."""
    seed_everything(cfg.train.seed)
    info = dataset_info(cfg.data.name)
    model = build_model(cfg.model, info.num_classes)
    model = apply_adapter(model, cfg.adapter)
    data = build_data(cfg.data, model.input_spec)
    loaders = data.loaders(seed=cfg.train.seed)
    return Built(model=model, data=data, loaders=loaders, params=parameter_report(model),
                 device=resolve_device(cfg.train.device))


def split_loaders(loaders: Any) -> dict[str, Any]:
    """The evaluation loaders that exist: ``test`` and, when configured, ``test_shift``."""
    return {s: getattr(loaders, s) for s in SPLITS if getattr(loaders, s, None) is not None}


def split_fingerprint(built: Built, split: str) -> str:
    """Content fingerprint of the examples the ``split`` loader evaluates
    (:func:`bayespeft.data.fingerprint.dataset_fingerprint`), computed once per split and kept in ``built``."""
    if split not in built.fingerprints:
        built.fingerprints[split] = dataset_fingerprint(getattr(built.loaders, split).dataset)
    return built.fingerprints[split]


# ---- output locations and run status -----------------------------------------------------------------------------
def check_outputs(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> None:
    """Before any work: ``output.root`` (or, when resuming, ``run_dir``) must be a writable directory and the
    results CSV appendable; otherwise :class:`~bayespeft.errors.RunError` naming the path and what to do."""
    if run_dir is None:
        check_output_dir(cfg.output.root, "output.root", "set another with --set output.root=DIR (or fix its permissions)")
    else:
        check_output_dir(run_dir, "run directory", "fix its permissions, or start a new run without --resume")
    check_results_csv(cfg.output.csv_path())


def mark_run(run_dir: Path, status: str, error: str) -> None:
    """Record an unfinished run in ``metrics.json`` (``status``, ``error``; earlier contents kept)."""
    mfile = run_dir / "metrics.json"
    try:
        old = json.loads(mfile.read_text()) if mfile.is_file() else {}
    except (OSError, ValueError):
        old = {}
    try:
        io.write_json(mfile, {**(old if isinstance(old, dict) else {}), "status": status, "error": error})
    except OSError:
        pass  # the original exception is the one to report


@contextmanager
def recording(run_dir: Path, interrupted_hint: str = "") -> Iterator[None]:
    """Mark the run ``failed`` (any exception, with its message) or ``interrupted`` (Ctrl-C) in ``metrics.json``; an
    interrupted run also prints its directory and ``interrupted_hint`` (how to continue it) on stderr."""
    try:
        yield
    except KeyboardInterrupt:
        note = "interrupted" + (f"; {interrupted_hint}" if interrupted_hint else "")
        mark_run(run_dir, "interrupted", note)
        print(f"{note} (run directory: {run_dir})", file=sys.stderr)
        raise
    except BaseException as e:
        mark_run(run_dir, "failed", f"{type(e).__name__}: {e}")
        raise


def finish_run(cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write ``metrics.json`` (``"status": "finished"``), then append the run's rows to the shared results CSV."""
    metrics = {"status": "finished", **{k: v for k, v in metrics.items() if k not in ("status", "error")}}
    io.write_json(run_dir / "metrics.json", metrics)
    publish_rows(cfg, run_dir)
    return metrics


def publish_rows(cfg: ExperimentConfig, run_dir: Path) -> int:
    """Append the rows of ``run_dir/rows.csv`` whose results the shared CSV does not hold yet; returns how many.

    A row skipped because another run recorded the same result first is reported on stderr. A CSV that cannot be
    written is a :class:`~bayespeft.errors.RunError` saying where the run's own results are.
    """
    csv_path = cfg.output.csv_path()
    rows = [{k: v for k, v in r.items() if v != ""} for r in read_rows(run_dir / ROWS)]
    try:
        appended, skipped = append_results(csv_path, rows)
    except (OSError, RunError) as e:
        why = f"{type(e).__name__}: {e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)
        raise RunError(f"could not append to the results CSV {csv_path} ({why}); the run's results are saved in "
                       f"{run_dir / 'metrics.json'} and {run_dir / ROWS}") from e
    others = [r for r in skipped if r.get("run_dir") != str(run_dir)]
    if others:
        print(f"note: {len(others)} result(s) already in {csv_path} (same checkpoint, data contents, posterior, "
              f"settings and split; first recorded by run {others[0].get('run')}); not appended again", file=sys.stderr)
    return len(appended)


def checkpoint_id(ckpt_dir: str | Path) -> str:
    """SHA-256 of the weights file of a saved adapter directory (recorded in its metadata, else computed)."""
    meta = read_meta(ckpt_dir)
    recorded = (meta.get("sha256") or {}).get(meta["weights"])
    return recorded or io.sha256_file(Path(ckpt_dir) / meta["weights"])


def result_key(cfg: ExperimentConfig, built: Built, run_dir: Path, posterior: str, split: str,
               settings: dict[str, Any] | None, data_fingerprint: str | None = None) -> str:
    """SHA-256 naming one result: the checkpoint's weights, model, adapter and (test-relevant) data settings, the
    content fingerprint of the evaluated split (:func:`split_fingerprint`; None: unknown), the posterior and its
    ``settings``, the split. With ``settings=None`` (settings not known) or without a saved checkpoint the run
    directory is part of the key, so such a result is never taken for another run's.

    Rows recorded before the fingerprint entered the key carry other keys, so an older row is never taken for a
    new result (re-evaluating such a checkpoint adds one new row, with its fingerprint)."""
    own = settings is None or built.checkpoint is None
    src = {
        "checkpoint": built.checkpoint, "run": str(run_dir.resolve()) if own else None,
        "model": model_key(cfg),
        "adapter": {k: v for k, v in cfg.adapter.model_dump(mode="json").items() if k != "dropout"},
        "data": {k: v for k, v in cfg.data.model_dump(mode="json").items() if k not in DATA_KEY_IGNORES},
        "data_fingerprint": data_fingerprint, "posterior": posterior, "settings": settings, "split": split,
    }
    return hashlib.sha256(json.dumps(src, sort_keys=True, default=str).encode()).hexdigest()


def _settings_columns(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The CSV cells of a posterior's settings (Laplace: structure, subset, curvature, prior, predictive, link)."""
    if not settings:
        return {}
    out = {k: settings[k] for k in ("structure", "curvature", "prior_method", "predictive") if k in settings}
    if "subset" in settings:
        sub = settings["subset"]
        out["subset"] = sub if isinstance(sub, str) else "+".join(sub)
    if settings.get("predictive") == "glm" and "link" in settings:
        out["link"] = settings["link"]
    if settings.get("predictive") == "mc" or settings.get("link") == "mc":
        out["n_samples"] = settings.get("n_samples")
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        flat = torch.as_tensor(v, dtype=torch.float64).flatten().tolist()
        return flat[0] if len(flat) == 1 else ";".join(f"{x:.6g}" for x in flat)
    return v


def record_predictive(
    cfg: ExperimentConfig,
    built: Built,
    run_dir: Path,
    posterior: str,
    split: str,
    probs: torch.Tensor,
    labels: torch.Tensor,
    extra: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    columns: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics for one predictive on one split: JSON-ready dict, reliability PNG, one row in the run's ``rows.csv``
    (published to the shared CSV by :func:`finish_run`).

    The dict holds :func:`bayespeft.metrics.classification_metrics` plus ``reliability``: ``{count, accuracy,
    confidence}``, lists over the ``n_bins`` equal-width bins of the ECE (None for an empty bin).

    ``settings``: what, besides the checkpoint, data and split, determines this predictive (``{}`` for the MAP;
    the Laplace config for a Laplace posterior); it enters the result key and fills the settings columns. ``extra``
    may carry ``train_time_s``, ``eval_time_s``, ``epochs``, ``n_samples`` and ``prior_precision`` (the tuned
    value) for the CSV; all of ``extra`` is returned with the metrics. ``columns``: further CSV cells only (the
    SG-MCMC ``samples_planned``, ``complete``, ``sampler_lr``, ``temperature``). The row also records the split's
    content fingerprint (``data_fingerprint``), which is part of its result key.
    """
    m = classification_metrics(probs, labels)
    # per-bin counts / accuracies / confidences (the equal-width bins of ``ece``): small, and what a sweep report
    # pools over runs into one reliability curve per method
    rel = reliability_diagram_data(probs, labels, n_bins=m["n_bins"]).to_dict()
    m["reliability"] = {k: rel[k] for k in ("count", "accuracy", "confidence")}
    tag = f"{posterior}_{split}"
    if cfg.output.reliability_plots:
        plot_reliability_diagram(probs, labels, run_dir / "plots" / f"reliability_{tag}.png", title=f"{posterior} ({split})")
    extra = dict(extra or {})
    fp = split_fingerprint(built, split)
    append_results(
        run_dir / ROWS,
        [{
            **_settings_columns(settings),
            "n_samples": extra.get("n_samples", _settings_columns(settings).get("n_samples")),
            "prior_precision": _cell(extra.get("prior_precision")),
            "checkpoint": built.checkpoint,
            "data_fingerprint": fp,
            "result_key": result_key(cfg, built, run_dir, posterior, split, settings, fp),
            **(columns or {}),
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
        }],
    )
    return {**m, **extra}


def evaluate_map(cfg: ExperimentConfig, built: Built, run_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the MAP model on every evaluation split."""
    out = {}
    for split, loader in split_loaders(built.loaders).items():
        t0 = time.perf_counter()
        probs, labels = predict_probs(built.model, loader)
        ev = {"eval_time_s": time.perf_counter() - t0, **(extra or {})}
        out[split] = record_predictive(cfg, built, run_dir, "map", split, probs, labels, ev, settings={})
    return out


def start_run(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> Path:
    """Create (or reuse, for resuming) the run directory and store the resolved config in it."""
    path = Path(run_dir) if run_dir is not None else new_run_dir(cfg.output.root, cfg.name)
    path.mkdir(parents=True, exist_ok=True)
    io.write_text(path / "config.yaml", dump_config(cfg))
    return path


#: data keys that decide which examples a run trained on (its validation and test examples are the rest of the pool)
SPLIT_KEYS = ("val_fraction", "test_fraction", "split_seed")


def check_same_split(ckpt: Path, data: DataConfig) -> None:
    """Refuse to evaluate (or fit a posterior for) a checkpoint on a split of its own dataset other than the one it
    was trained with: the held-out examples would then include some of its training examples. Checkpoints without
    a recorded config, or trained on another dataset, are not checked."""
    trained = (read_meta(ckpt).get("metadata") or {}).get("config", {}).get("data")
    if not isinstance(trained, dict) or trained.get("name") != data.name:
        return
    diff = [k for k in SPLIT_KEYS if k in trained and trained[k] != getattr(data, k)]
    if diff:
        was = ", ".join(f"data.{k}={trained[k]}" for k in diff)
        now = ", ".join(f"data.{k}={getattr(data, k)}" for k in diff)
        raise CheckpointError(f"{ckpt} was trained with {was} but this run has {now}: its validation/test examples "
                              f"would include training examples. Use the run's own config ({ckpt.parent}/config.yaml) "
                              f"or set {', '.join('data.' + k for k in diff)} back")


def load_checkpoint_into(built: Built, checkpoint: str | Path, check_base: bool = True,
                         data: DataConfig | None = None) -> None:
    """Load a saved adapter/checkpoint directory into a freshly built model (clear error on mismatch; with
    ``check_base=False`` base weights other than those the adapter was trained on are accepted). ``data``: the
    run's data config, checked against the split the checkpoint was trained on (:func:`check_same_split`)."""
    ckpt = checkpoint_dir(checkpoint)
    if data is not None:
        check_same_split(ckpt, data)
    try:
        load_adapter(built.model, ckpt, check_base=check_base)
    except CheckpointMismatchError as e:  # built from another config than the run's
        own = ckpt.parent / "config.yaml"
        if not own.is_file():
            raise
        raise CheckpointMismatchError(f"{e}. Fix: use the run's own config: {own}") from None
    built.checkpoint = checkpoint_id(ckpt)
    if built.device is not None:  # evaluate / laplace / sample run where training would (train.device)
        built.model.to(built.device)
