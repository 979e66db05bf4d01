"""The ``train`` config section: MAP training of the trainable (adapter) parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..section import Section


class TrainConfig(Section):
    """MAP training: AdamW + linear warmup + cosine decay, gradient clipping, early stopping, checkpoints."""

    epochs: int = Field(10, ge=1, description="Number of passes over the training loader (an upper bound with early stopping).")
    lr: float = Field(1e-3, description="Peak learning rate of AdamW (reached after warmup, then cosine decay to 0). Must be > 0.")
    weight_decay: float = Field(
        0.0, ge=0.0, description="AdamW decoupled weight decay (applied as lr * weight_decay * theta per step)."
    )
    decay_1d: bool = Field(
        False,
        description="Also apply weight decay to 1-D tensors (biases, norm scales). Off by default, as in nanoGPT and "
        "HF Trainer: decaying LayerNorm scales towards 0 hurts norm-tuning.",
    )
    warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Linear warmup length as a fraction of all optimiser steps (0 = none)."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warmup length in optimiser steps; overrides warmup_ratio (set only one)."
    )
    grad_clip: float | None = Field(
        1.0, ge=0.0, description="Clip the global L2 norm of the gradients to this value; None or 0 turns clipping off."
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing of the training cross-entropy (validation loss never smooths)."
    )
    patience: int | None = Field(
        None, ge=1, description="Early stopping: stop after this many epochs without improvement of `monitor`; None = off."
    )
    monitor: Literal["val_loss", "val_acc"] = Field(
        "val_loss", description="Validation quantity that selects the best checkpoint and drives early stopping."
    )
    min_delta: float = Field(
        0.0, ge=0.0, description="An epoch counts as an improvement only if `monitor` improves by more than this."
    )
    seed: int = Field(0, description="Seed of python, numpy and torch RNGs (data order, dropout).")
    deterministic: bool = Field(
        True, description="Ask torch for deterministic algorithms (bit-identical reruns on CPU; slower kernels on GPU)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train: auto = cuda if available, else cpu.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16 = bfloat16 autocast of the forward pass on CUDA (loss, weights and optimiser stay fp32); "
        "on CPU bf16 falls back to fp32 with a warning.",
    )
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap on optimiser steps per epoch (tiny runs, smoke tests); None = full loader."
    )
    checkpoint_every_epoch: bool = Field(
        True,
        description="Write the last checkpoint (weights + optimiser/scheduler/RNG state) after every epoch so an "
        "interrupted run can resume; if False only at the end.",
    )
    auto_batch_size: bool = Field(
        False,
        description="On an out-of-memory error in a training step, halve the micro-batch (examples per forward/backward "
        "pass) and accumulate gradients over the batch, so every optimiser step is still the whole batch's (mean "
        "loss; equal up to float rounding unless the model mixes examples, as BatchNorm does), retrying the step from a "
        "clean state; the micro-batch it settles on is recorded as train.micro_batch_size in metrics.json. An error "
        "with a micro-batch of 1 ends the run. Off: the error ends the run.",
    )
    progress: bool | None = Field(None, description=(
        "Progress of long loops (training epochs, Laplace fit, prior tuning, SG-MCMC chains, ensemble predictive): "
        "False = none; True or None = a bar on a terminal, plain lines on stderr elsewhere (one per epoch, one every "
        "10 s inside long stages); None also follows the environment variable BAYESPEFT_PROGRESS (0, 1, bar, lines)."))

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"lr must be > 0 (the peak learning rate), got {v}")
        return v

    @model_validator(mode="after")
    def _one_warmup(self) -> TrainConfig:
        if self.warmup_steps is not None and self.warmup_ratio > 0:
            raise ValueError(
                f"set either warmup_steps ({self.warmup_steps}) or warmup_ratio ({self.warmup_ratio}), not both"
            )
        return self

    def clip_norm(self) -> float | None:
        """Max gradient norm, or None when clipping is off."""
        return self.grad_clip if self.grad_clip else None
