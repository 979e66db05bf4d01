"""The one batch convention used by training, Laplace, SG-MCMC and evaluation.

A batch is either

* a mapping of tensors with a ``"labels"`` entry (what every bayespeft dataset yields); the model is called as
  ``model(**inputs)`` with every other entry (``pixel_values`` or ``input_ids``/``attention_mask``/...), or
* a ``(x, y)`` pair (e.g. from a ``TensorDataset``); the model is called as ``model(x)``.

Models return logits of shape ``(B, C)`` (classification) or predictions ``(B, D)`` (regression).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]


def split_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """Return ``(inputs, labels)``; ``inputs`` is a dict (model(**inputs)) or a tensor (model(inputs))."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise KeyError(f"batch has no 'labels' entry (keys: {sorted(batch)})")
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        f"a batch must be a mapping with 'labels' or an (inputs, labels) pair, got {type(batch).__name__}"
    )


def forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Call ``model`` on batch inputs (as returned by :func:`split_batch`)."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def forward_batch(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(outputs, labels)`` for one batch."""
    inputs, labels = split_batch(batch)
    return forward(model, inputs), labels


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor of a batch to ``device`` (non-blocking)."""
    if isinstance(batch, Mapping):
        return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(v.to(device, non_blocking=True) if torch.is_tensor(v) else v for v in batch)
    return batch.to(device, non_blocking=True)


def batch_size(batch: Any) -> int:
    """Number of examples in a batch."""
    _, labels = split_batch(batch)
    return int(labels.shape[0])


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding position of every row: ``max{t : mask[b, t] = 1}``, shape ``(B,)``.

    ``attention_mask`` ``(B, T)`` (1 = token, 0 = padding; bool or integer) may be right- or left-padded, or have
    holes; computed as ``T - 1 - argmax(flip(mask))``. A row without any token raises ``ValueError``.
    """
    mask = attention_mask.to(torch.long)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got {tuple(mask.shape)}")
    if bool((mask.sum(-1) == 0).any()):
        raise ValueError("every row of attention_mask needs at least one non-pad token")
    return mask.shape[-1] - 1 - mask.flip(-1).argmax(-1)
