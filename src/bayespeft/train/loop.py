r"""The one MAP training loop, for every adapter method and task.

Objective: mean cross-entropy of ``forward_batch(model, batch)`` logits (B, C) against the labels (optionally label
smoothed), minimised over the trainable parameters :math:`\theta` (``requires_grad=True``) with AdamW (decoupled weight
decay on tensors with ndim >= 2 unless ``decay_1d``), a linear warmup then cosine decay to 0 of the learning rate
(``transformers.get_cosine_schedule_with_warmup``, one scheduler step per optimiser step), and optional clipping of
the global gradient L2 norm. After each epoch the model is evaluated on the validation loader; the epoch with the best
``monitor`` value (``val_loss`` lowest / ``val_acc`` highest, first one wins ties) is kept as the MAP checkpoint and
early stopping ends the run after ``patience`` epochs without improvement. At the end the model holds the best
weights.

Exact resumption: after every epoch the loop writes the weights, the optimiser/scheduler state and every RNG state
(python, numpy, torch CPU/CUDA, the train loader's generators); ``fit(..., resume=True)`` on the same ``run_dir``
continues from there and ends with the same weights, bit for bit on CPU, as an uninterrupted run. (Data loaders with
``persistent_workers=True`` keep worker RNG state that cannot be captured; resumption then reproduces everything
but per-worker randomness.)

Out of memory: with ``auto_batch_size`` an out-of-memory error in a training step halves the micro-batch and keeps
the batch (and so the optimiser step) by gradient accumulation, retrying the step from a clean state
(:mod:`.microbatch`); the micro-batch it settles on is kept in the resumable state and reported as
``micro_batch_size``. Without it the error ends the run.

Divergence: the loss (and, with clipping, the gradient norm) is checked every step before the optimiser step, and
the validation loss and the weights before any checkpoint write; a non-finite value raises
:class:`TrainingDivergedError` and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import io
from ..batch import forward_batch, to_device
from ..errors import CheckpointError
from ..metrics import classification_metrics
from ..progress import progress as progress_bar
from ..seed import seed_everything
from .checkpoint import (
    get_rng_state,
    load_state,
    load_weights,
    loader_generators,
    save_state,
    save_weights,
    set_rng_state,
    weights_epoch,
)
from .config import TrainConfig
from .microbatch import MicroBatcher
from .predict import EvalPass, autocast, eval_pass, sync_device
from .result import EpochRecord, TrainingDivergedError, TrainResult

Callback = Callable[[EpochRecord], None]
#: Config fields that may change between an interrupted run and its resumption.
RESUME_MAY_CHANGE = frozenset({"progress", "checkpoint_every_epoch", "device", "auto_batch_size"})


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any | None,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model``'s trainable parameters (MAP) and return a :class:`TrainResult`.

    Args:
        model: an ``nn.Module`` called as in :mod:`bayespeft.batch`; returns logits (B, C).
        train_loader / val_loader: iterables of batches (dicts with ``labels`` or ``(x, y)`` pairs); ``val_loader``
            may be None (then every epoch counts as the best and ``patience`` must be None).
        cfg: :class:`TrainConfig`.
        run_dir: checkpoints go to ``run_dir/checkpoints/``, the history to ``run_dir/history.json``.
        resume: continue from ``run_dir/checkpoints/last_state.pt`` if it exists (the config must be the same
            except for ``progress``, ``checkpoint_every_epoch`` and ``device``); a finished run is not retrained.
        callbacks: called with each :class:`EpochRecord` after that epoch's checkpoints are written.
    """
    _check_arguments(cfg, val_loader)
    run = _setup(model, train_loader, cfg, Path(run_dir), resume)
    todo = [] if run.st["stopped_early"] else list(range(run.st["epoch"] + 1, cfg.epochs + 1))
    # off a terminal: one line per epoch with the losses, elapsed time and ETA (bayespeft.progress)
    epochs = progress_bar(todo, desc="epochs", total=cfg.epochs, initial=run.st["epoch"], enabled=cfg.progress,
                          leave=True, every_s=0)
    for epoch in epochs:
        t_epoch = time.perf_counter()
        tr, val = _train_and_validate(run, model, train_loader, val_loader, epoch)
        rec = _record_epoch(run, epoch, tr, val, t_epoch)
        epochs.set_postfix(**{k: v for k, v in (("train_loss", rec.train_loss), ("val_loss", rec.val_loss)) if v is not None})
        _save_epoch(run, model, epoch, rec.improved)
        for cb in callbacks:
            cb(rec)
        if run.st["stopped_early"]:
            break
    epochs.close()  # off a terminal: the line of an epoch that ended the loop early
    return _finish(run, model, val_loader)


@dataclass
class _Run:
    """What one :func:`fit` call sets up once, and the resumable state ``st`` it updates after every epoch.

    ``st`` holds exactly what ``last_state.pt`` stores besides the optimiser/scheduler/RNG states: ``epoch``,
    ``global_step``, ``best_metric``, ``best_epoch``, ``bad_epochs``, ``stopped_early``, ``history``, ``config``,
    ``steps_per_epoch`` and ``micro_batch`` (the micro-batch cap of :mod:`.microbatch`, None = whole batches).
    ``last_saved``: the epoch of the last written ``last_state.pt`` (None before any).
    """

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    named: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generators: list[torch.Generator]
    steps_per_epoch: int
    st: dict[str, Any]
    resumed_from: int | None
    last_saved: int | None
    batcher: MicroBatcher

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for _, p in self.named]


def _check_arguments(cfg: TrainConfig, val_loader: Any | None) -> None:
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.patience is not None and val_loader is None:
        raise ValueError("early stopping (patience) needs a val_loader; pass one or set patience=None")


def _setup(model: nn.Module, train_loader: Any, cfg: TrainConfig, run_dir: Path, resume: bool) -> _Run:
    """Seed, move the model, build optimiser + schedule, then start fresh or restore ``last_state.pt``."""
    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.precision, device)
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    model.to(device)
    named = trainable_parameters(model)
    optimizer = build_optimizer(named, cfg, device)
    steps_per_epoch = count_steps(train_loader, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    generators = loader_generators(train_loader)
    ckpt_dir = run_dir / "checkpoints"
    st: dict[str, Any] = {
        "epoch": 0, "global_step": 0, "best_metric": None, "best_epoch": 0, "bad_epochs": 0,
        "stopped_early": False, "history": [], "config": cfg.model_dump(), "steps_per_epoch": steps_per_epoch,
        "micro_batch": None,
    }
    resumed_from = None
    if resume and (ckpt_dir / "last_state.pt").exists():
        st = _resume(ckpt_dir, model, optimizer, scheduler, generators, cfg, steps_per_epoch)
        resumed_from = st["epoch"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return _Run(cfg=cfg, run_dir=run_dir, device=device, amp_dtype=amp_dtype, named=named, optimizer=optimizer,
                scheduler=scheduler, generators=generators, steps_per_epoch=steps_per_epoch, st=st,
                resumed_from=resumed_from, last_saved=resumed_from,
                batcher=MicroBatcher(st.get("micro_batch"), cfg.auto_batch_size, device))


def _train_and_validate(run: _Run, model: nn.Module, train_loader: Any, val_loader: Any | None,
                        epoch: int) -> tuple[dict[str, Any], EvalPass | None]:
    """One training epoch and the validation pass, with the divergence checks (recorded in history.json)."""
    cfg, ckpt_dir = run.cfg, run.ckpt_dir
    try:
        tr = _train_epoch(model, train_loader, run.optimizer, run.scheduler, run.params, cfg, run.device,
                          run.amp_dtype, epoch, run.steps_per_epoch, run.st["global_step"], ckpt_dir, run.last_saved,
                          run.batcher)
        val = None
        if val_loader is not None:
            val = eval_pass(model, val_loader, keep_probs=False, amp_dtype=run.amp_dtype, progress=cfg.progress, desc="val")
            if not math.isfinite(val.loss):
                _diverged(cfg, epoch, tr["steps"], val.loss, "the validation loss", ckpt_dir, run.last_saved)
        if not torch.stack([torch.isfinite(p).all() for p in run.params]).all():  # one host sync
            bad = [n for n, p in run.named if not torch.isfinite(p).all()]
            _diverged(cfg, epoch, tr["steps"], float("nan"), f"parameter {bad[0]}", ckpt_dir, run.last_saved)
    except TrainingDivergedError as e:
        io.write_json(run.run_dir / "history.json", {"status": "diverged", "error": str(e), **_public(run.st)})
        raise
    return tr, val


def _record_epoch(run: _Run, epoch: int, tr: dict[str, Any], val: EvalPass | None, t_epoch: float) -> EpochRecord:
    """Update the best metric, the early-stopping counter and the history in ``run.st``; return the epoch's record."""
    cfg, st = run.cfg, run.st
    st["global_step"] += tr["steps"]
    st["micro_batch"] = run.batcher.micro
    metric = None if val is None else (val.loss if cfg.monitor == "val_loss" else val.acc)
    improved = _improved(metric, st["best_metric"], cfg)
    if improved:
        st.update(best_metric=metric, best_epoch=epoch, bad_epochs=0)
    else:
        st["bad_epochs"] += 1
    st["stopped_early"] = cfg.patience is not None and st["bad_epochs"] >= cfg.patience
    rec = EpochRecord(
        epoch=epoch, train_loss=tr["loss"], train_acc=tr["acc"], val_loss=None if val is None else val.loss,
        val_acc=None if val is None else val.acc, lr=tr["lr"], steps=tr["steps"], train_examples=tr["n"],
        train_time_s=tr["seconds"], val_time_s=0.0 if val is None else val.seconds,
        epoch_time_s=time.perf_counter() - t_epoch, improved=improved,
    )
    st["history"].append(rec.to_dict())
    st["epoch"] = epoch
    return rec


def _save_epoch(run: _Run, model: nn.Module, epoch: int, improved: bool) -> None:
    """``last`` weights + resumable state (every epoch, or at the end), ``best`` weights, history.json."""
    cfg, st, ckpt_dir = run.cfg, run.st, run.ckpt_dir
    if cfg.checkpoint_every_epoch or st["stopped_early"] or epoch == cfg.epochs:
        save_weights(ckpt_dir / "last.safetensors", model, epoch)
        save_state(ckpt_dir / "last_state.pt", {
            **st, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "rng": get_rng_state(run.generators),
        })
        run.last_saved = epoch
    if improved:  # after last_state: a crash in between is repaired on resume from last.safetensors
        if run.last_saved == epoch:  # the same weights and epoch were just written: copy the bytes, no re-serialising
            io.copy_file(ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors")
        else:
            save_weights(ckpt_dir / "best.safetensors", model, epoch)
    io.write_json(run.run_dir / "history.json", {"status": "running", **_public(st)})


def _finish(run: _Run, model: nn.Module, val_loader: Any | None) -> TrainResult:
    """Load the best weights, evaluate them on the validation set, write and return the :class:`TrainResult`."""
    cfg, st = run.cfg, run.st
    if (run.ckpt_dir / "best.safetensors").exists():
        load_weights(run.ckpt_dir / "best.safetensors", model)
    val_metrics, infer_tp = None, None
    if val_loader is not None:
        final = eval_pass(model, val_loader, keep_probs=True, amp_dtype=run.amp_dtype, progress=cfg.progress, desc="final eval")
        val_metrics = {**classification_metrics(final.probs, final.labels), "loss": final.loss}
        infer_tp = final.throughput
    history = [EpochRecord(**h) for h in st["history"]]
    train_time = sum(h.train_time_s for h in history)
    mem, mem_kind = peak_memory(run.device)
    result = TrainResult(
        history=history, monitor=cfg.monitor, best_epoch=st["best_epoch"], best_metric=st["best_metric"],
        epochs_run=len(history), stopped_early=st["stopped_early"],
        train_time_s=sum(h.epoch_time_s for h in history),
        train_throughput=sum(h.train_examples for h in history) / train_time if train_time > 0 else 0.0,
        inference_throughput=infer_tp, peak_memory_bytes=mem, peak_memory_kind=mem_kind, device=str(run.device),
        precision="bf16" if run.amp_dtype is not None else "fp32", n_trainable_params=sum(p.numel() for p in run.params),
        total_steps=st["global_step"], resumed_from_epoch=run.resumed_from, checkpoint_dir=str(run.ckpt_dir),
        val_metrics=val_metrics, config=cfg.model_dump(), micro_batch_size=st.get("micro_batch"),
    )
    io.write_json(run.run_dir / "history.json", {"status": "finished", **result.to_dict()})
    return result


def _train_epoch(model, loader, optimizer, scheduler, params, cfg, device, amp_dtype, epoch, steps_per_epoch,
                 global_step, ckpt_dir, last_saved, batcher: MicroBatcher) -> dict[str, Any]:
    """One epoch of optimiser steps (forward/backward by ``batcher``, in micro-batches after an out-of-memory error
    with ``auto_batch_size``); returns mean loss/accuracy, last lr, steps, examples and seconds."""
    model.train()
    clip = cfg.clip_norm()
    loss_sum = 0.0
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = steps = 0
    lr = optimizer.param_groups[0]["lr"]
    sync_device(device)
    t0 = time.perf_counter()
    bar = progress_bar(loader, desc=f"epoch {epoch}/{cfg.epochs}", total=steps_per_epoch, enabled=cfg.progress)

    def loss_fn(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with autocast(device, amp_dtype):
            logits, labels = forward_batch(model, batch)
        logits = logits.float()
        return F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing), logits, labels

    try:
        for batch in bar:
            batch = to_device(batch, device)
            loss, hits, b = batcher.step(loss_fn, batch, optimizer)
            checks = [loss]
            if clip:
                checks.append(torch.nn.utils.clip_grad_norm_(params, clip).detach().float())
            values = torch.stack(checks).tolist()  # the one host sync per step
            if not math.isfinite(values[0]):
                _diverged(cfg, epoch, steps + 1, values[0], "the training loss", ckpt_dir, last_saved, global_step + steps + 1)
            if len(values) > 1 and not math.isfinite(values[1]):
                _diverged(cfg, epoch, steps + 1, values[1], "the gradient norm", ckpt_dir, last_saved, global_step + steps + 1)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            loss_sum += values[0] * b
            correct += hits
            n += b
            steps += 1
            if steps >= steps_per_epoch:
                break
    finally:
        if hasattr(bar, "close"):
            bar.close()
    if steps == 0:
        raise ValueError("the train loader yielded no batches")
    sync_device(device)
    seconds = time.perf_counter() - t0
    return {"loss": loss_sum / n, "acc": int(correct) / n, "lr": lr, "steps": steps, "n": n, "seconds": seconds}


def _diverged(cfg: TrainConfig, epoch: int, step: int, value: float, what: str, ckpt_dir: Path | None,
              last_saved: int | None, global_step: int | None = None) -> None:
    where = f"epoch {epoch}, step {step}" + (f" (global step {global_step})" if global_step else "")
    kept = (
        f"the last good checkpoint (epoch {last_saved}) is kept in {ckpt_dir}" if last_saved
        else "no checkpoint of this run was overwritten"
    )
    hint = f"a smaller grad_clip (now {cfg.grad_clip})" if cfg.clip_norm() else "gradient clipping (e.g. grad_clip=1.0)"
    raise TrainingDivergedError(
        f"training diverged at {where}: {what} is {value}; {kept}. "
        f"Try a lower learning rate (lr={cfg.lr:g}) or {hint}.",
        epoch=epoch, step=step, loss=value,
    )


def _improved(metric: float | None, best: float | None, cfg: TrainConfig) -> bool:
    if metric is None or best is None:
        return True
    if cfg.monitor == "val_loss":
        return metric < best - cfg.min_delta
    return metric > best + cfg.min_delta


def _public(st: dict[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "global_step", "best_epoch", "best_metric", "bad_epochs", "stopped_early", "history")
    return {k: st[k] for k in keys}


def _resume(ckpt_dir: Path, model, optimizer, scheduler, generators, cfg: TrainConfig, steps_per_epoch: int) -> dict:
    st = load_state(ckpt_dir / "last_state.pt")
    old, new = st["config"], cfg.model_dump()
    diff = [k for k in sorted(set(old) | set(new)) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k)]
    if diff:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{ckpt_dir} was written with a different train config ({changes}); resuming would not reproduce the run. "
            "Use the original values, or start a new run (CLI: without --resume; Python: a new run_dir or resume=False)."
        )
    if st["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"{ckpt_dir} was written with {st['steps_per_epoch']} steps per epoch, the train loader now gives "
            f"{steps_per_epoch}; resume with the same data and batch size"
        )
    epoch = load_weights(ckpt_dir / "last.safetensors", model)
    if epoch != st["epoch"]:
        raise CheckpointError(
            f"{ckpt_dir}: last.safetensors is from epoch {epoch} but last_state.pt from epoch {st['epoch']} "
            "(interrupted while writing?); start a new run (CLI: without --resume; Python: a new run_dir or resume=False)"
        )
    best = ckpt_dir / "best.safetensors"
    if st["best_epoch"] and (not best.exists() or weights_epoch(best) != st["best_epoch"]):
        if st["best_epoch"] != st["epoch"]:
            raise CheckpointError(
                f"{best} is missing or not from the best epoch {st['best_epoch']}; start a new run "
                "(CLI: without --resume; Python: a new run_dir or resume=False)"
            )
        save_weights(best, model, epoch)  # the crash came between last_state.pt and best.safetensors
    optimizer.load_state_dict(st.pop("optimizer"))
    scheduler.load_state_dict(st.pop("scheduler"))
    set_rng_state(st.pop("rng"), generators)
    return st


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='auto' or 'cpu'")
    return torch.device(name)


def resolve_amp(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 autocast dtype on CUDA for ``precision='bf16'``; None (fp32) otherwise, with a warning on fallback."""
    if precision != "bf16":
        return None
    if device.type != "cuda":
        warnings.warn("precision='bf16' autocast is only used on CUDA; training in fp32 on CPU", stacklevel=3)
        return None
    if not torch.cuda.is_bf16_supported():
        warnings.warn("this GPU does not support bfloat16; training in fp32", stacklevel=3)
        return None
    return torch.bfloat16


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter with ``requires_grad``; an error if there is none."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(
            "the model has no trainable parameters (none has requires_grad=True); apply an adapter "
            "(bayespeft.adapters.apply_adapter) or unfreeze the parameters to train"
        )
    return named


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """Linear warmup (``warmup_steps``, or ``warmup_ratio`` of all steps) then cosine decay to 0, stepped per step."""
    total_steps = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * total_steps))
    if warmup >= total_steps and warmup > 0:
        raise ValueError(f"warmup ({warmup} steps) must be shorter than the whole run ({total_steps} steps)")
    from transformers import get_cosine_schedule_with_warmup  # lazy: importing transformers costs seconds

    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


def build_optimizer(named: list[tuple[str, nn.Parameter]], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for _, p in named if cfg.decay_1d or p.ndim >= 2]
    no_decay = [p for _, p in named if not (cfg.decay_1d or p.ndim >= 2)]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def count_steps(loader: Any, cfg: TrainConfig) -> int:
    try:
        n = len(loader)
    except TypeError:
        n = None
    if n is None:
        if cfg.max_steps_per_epoch is None:
            raise ValueError("the train loader has no length (an IterableDataset?); set train.max_steps_per_epoch")
        return cfg.max_steps_per_epoch
    if n == 0:
        raise ValueError("the train loader is empty (0 batches); check the dataset and batch size / drop_last")
    return min(n, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else n


def peak_memory(device: torch.device) -> tuple[int, str]:
    """CUDA max allocated bytes since the start of training, or the process's peak RSS (bytes) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        import resource  # POSIX only
    except ImportError:
        import psutil  # Windows: peak working set

        return int(getattr(psutil.Process().memory_info(), "peak_wset", psutil.Process().memory_info().rss)), "process_max_rss"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"
