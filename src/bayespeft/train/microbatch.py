r"""Micro-batches with gradient accumulation, and halving them on out-of-memory errors (``train.auto_batch_size``).

A batch of :math:`B` examples is cut into consecutive micro-batches of at most :math:`m` examples (the last one
may be shorter, and so may a short last batch of the epoch). Micro-batch :math:`i` with :math:`n_i` examples and
mean loss :math:`\bar\ell_i` is backpropagated with the weight :math:`n_i / B`, so the accumulated gradient is

.. math:: \sum_i \frac{n_i}{B} \nabla \bar\ell_i = \nabla \frac1B \sum_{j=1}^{B} \ell_j ,

the gradient of the whole batch's mean loss: the optimiser step is the full-batch one, equal up to the order of
float summation (:math:`\lceil B/m \rceil` backward passes instead of one). The equality needs a forward pass that
treats examples independently: BatchNorm in training mode normalises each micro-batch by its own statistics.

:class:`MicroBatcher` runs one training step's forward/backward passes. With ``auto=True`` an out-of-memory error
(:func:`is_out_of_memory`) during them halves :math:`m` (the first time: from :math:`B`) and retries the same batch
from a clean state: gradients set to None, cached device memory returned, the torch RNG states (dropout) put back to
where the failed attempt started; the optimiser has not stepped yet. Each halving logs a warning line (logger
``bayespeft.train.microbatch``). It gives up with
:class:`TrainingOutOfMemoryError` (one line) when :math:`m` is already 1. With ``auto=False`` the error propagates.
The micro-batch a run settled on is part of its resumable state, so a resumed run uses it from its first step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..batch import batch_size
from ..errors import BayesPeftError

log = logging.getLogger(__name__)

#: ``loss_fn(batch) -> (mean loss (), logits (b, C), labels (b,))`` for one (micro-)batch
LossFn = Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class TrainingOutOfMemoryError(BayesPeftError, RuntimeError):
    """Out of memory with a micro-batch of one example: halving cannot help any more."""


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (CUDA, and other accelerators since torch 2.5), or a ``RuntimeError`` whose
    message says "out of memory" (older torch, MPS, XPU)."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def chunks(batch: Any, m: int | None) -> list[Any]:
    """``batch`` cut along dim 0 into consecutive pieces of at most ``m`` examples (``[batch]`` if ``m`` is None or
    not smaller than the batch). Mappings: every tensor entry is sliced, other entries are kept; pairs: both."""
    b = batch_size(batch)
    if m is None or m >= b:
        return [batch]

    def piece(v: Any, i: int) -> Any:
        return v[i: i + m] if torch.is_tensor(v) else v

    if isinstance(batch, Mapping):
        return [{k: piece(v, i) for k, v in batch.items()} for i in range(0, b, m)]
    return [type(batch)(piece(v, i) for v in batch) for i in range(0, b, m)]


def accumulate(loss_fn: LossFn, batch: Any, m: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Forward + backward over ``batch`` in micro-batches of at most ``m`` examples, gradients accumulated (added to
    ``.grad``) with the weights :math:`n_i / B`. Returns ``(mean loss of the batch (), correct predictions (), B)``;
    the loss is detached. One micro-batch: exactly ``loss.backward()`` on the whole batch, no rescaling."""
    parts = chunks(batch, m)
    b = batch_size(batch)
    total = correct = None
    for part in parts:
        loss, logits, labels = loss_fn(part)
        if len(parts) > 1:
            loss = loss * (int(labels.shape[0]) / b)
        loss.backward()
        hits = (logits.detach().argmax(dim=-1) == labels).sum()
        total = loss.detach() if total is None else total + loss.detach()
        correct = hits if correct is None else correct + hits
    return total, correct, b


class MicroBatcher:
    """One training step's forward/backward passes; halves :attr:`micro` on out-of-memory errors when ``auto``.

    ``micro``: the micro-batch cap (None = whole batches), updated when an error halves it; ``halvings``: how many
    times it was halved in this process.
    """

    def __init__(self, micro: int | None, auto: bool, device: torch.device) -> None:
        self.micro, self.auto, self.device = micro, auto, device
        self.halvings = 0

    def step(self, loss_fn: LossFn, batch: Any, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Zero the gradients, then :func:`accumulate` over ``batch``; retried with half the micro-batch on an
        out-of-memory error (``auto``). Returns what :func:`accumulate` returns."""
        while True:
            rng = self._rng_state() if self.auto else None
            optimizer.zero_grad(set_to_none=True)
            try:
                return accumulate(loss_fn, batch, self.micro)
            except Exception as e:  # noqa: BLE001  re-raised unless it is an OOM that halving can help
                if not (self.auto and is_out_of_memory(e)):
                    raise
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
            # outside the except block: the failed attempt's traceback (and the activations it holds) is gone
            self._halve(batch_size(batch), message, optimizer, rng)

    def _halve(self, b: int, message: str, optimizer: torch.optim.Optimizer, rng: list[torch.Tensor] | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        size = b if self.micro is None else min(self.micro, b)
        if size <= 1:
            raise TrainingOutOfMemoryError(
                f"out of memory in a training step even with a micro-batch of 1 example ({message}); use a smaller "
                "model or inputs, train.precision=bf16, or a device with more memory"
            )
        self.micro = size // 2
        self.halvings += 1
        self._set_rng_state(rng)
        log.warning(
            "out of memory with a micro-batch of %d examples (%s); train.auto_batch_size: retrying with micro-batches "
            "of %d (%d accumulation steps per batch of %d)", size, message, self.micro, math.ceil(b / self.micro), b,
        )

    def _rng_state(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    def _set_rng_state(self, states: list[torch.Tensor] | None) -> None:
        if states is None:
            return
        torch.set_rng_state(states[0])
        if len(states) > 1:
            torch.cuda.set_rng_state(states[1], self.device)
