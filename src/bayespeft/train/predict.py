"""Evaluation passes: class probabilities of a model on a loader, and metrics + throughput.

Probabilities are ``softmax(logits.float())`` computed in float32 even under bf16 autocast; the loss is the mean
cross-entropy from the float32 logits (no label smoothing). The model is put in eval mode for the pass (no grad)
and returned to its previous mode afterwards.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import forward_batch, to_device
from ..evalmode import eval_mode
from ..metrics import classification_metrics
from ..progress import progress as progress_bar


@dataclass
class EvalPass:
    """Result of one pass: ``probs`` (N, C) float32 CPU (None unless requested), ``labels`` (N,) int64 CPU,
    mean loss and accuracy, example count and wall time (s, CUDA-synchronised)."""

    probs: torch.Tensor | None
    labels: torch.Tensor
    loss: float
    acc: float
    n: int
    seconds: float

    @property
    def throughput(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def eval_pass(
    model: nn.Module,
    loader: Any,
    *,
    keep_probs: bool,
    amp_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    desc: str = "eval",
) -> EvalPass:
    """One no-grad pass over ``loader`` in eval mode on the model's device."""
    device = model_device(model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    probs, labels_all, n = [], [], 0
    sync_device(device)
    t0 = time.perf_counter()
    with eval_mode(model):
        for batch in progress_bar(loader, desc=desc, enabled=progress):
            batch = to_device(batch, device)
            with autocast(device, amp_dtype):
                logits, labels = forward_batch(model, batch)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=-1) == labels).sum()
            n += int(labels.shape[0])
            labels_all.append(labels)
            if keep_probs:
                probs.append(logits.softmax(dim=-1))
        if n == 0:
            raise ValueError("the evaluation loader yielded no examples")
        labels_cpu = torch.cat(labels_all).cpu()
        probs_cpu = torch.cat(probs).cpu() if keep_probs else None
        loss, acc = float(loss_sum) / n, int(correct) / n  # these syncs end the timed region
        sync_device(device)
        seconds = time.perf_counter() - t0
    return EvalPass(probs=probs_cpu, labels=labels_cpu, loss=loss, acc=acc, n=n, seconds=seconds)


def _amp(precision: Literal["fp32", "bf16"], model: nn.Module) -> torch.dtype | None:
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.bfloat16 if precision == "bf16" and model_device(model).type == "cuda" else None


def predict_probs(
    model: nn.Module, loader: Any, progress: bool | None = None, precision: Literal["fp32", "bf16"] = "fp32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(probs (N, C) float32, labels (N,) int64)`` on CPU, in loader order, on the model's device.

    ``precision="bf16"`` autocasts the forward pass on CUDA (ignored on CPU); softmax is always float32.
    """
    r = eval_pass(model, loader, keep_probs=True, amp_dtype=_amp(precision, model), progress=progress, desc="predict")
    return r.probs, r.labels  # type: ignore[return-value]  # keep_probs=True


def evaluate(
    model: nn.Module,
    loader: Any,
    n_bins: int = 15,
    progress: bool | None = None,
    precision: Literal["fp32", "bf16"] = "fp32",
) -> dict[str, Any]:
    """:func:`bayespeft.metrics.classification_metrics` of the model on ``loader`` plus ``loss`` (mean cross-entropy
    from float32 logits), ``eval_time_s`` and ``inference_throughput`` (examples/s of the whole pass, data loading
    included)."""
    r = eval_pass(model, loader, keep_probs=True, amp_dtype=_amp(precision, model), progress=progress, desc="evaluate")
    out = classification_metrics(r.probs, r.labels, n_bins=n_bins)
    out.update(loss=r.loss, eval_time_s=r.seconds, inference_throughput=r.throughput)
    return out
