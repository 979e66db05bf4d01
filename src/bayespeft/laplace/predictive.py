"""Turning a Gaussian over logits into class probabilities, and splitting batches into chunks.

* probit link (MacKay 1992; Spiegelhalter & Lauritzen): ``p ≈ softmax(f_c / sqrt(1 + π/8 · Σ_cc))``;
* Monte-Carlo link: ``p ≈ (1/S) Σ_s softmax(f + L ε_s)``, ``L Lᵀ = Σ`` (``Σ`` the ``(C, C)`` logit covariance
  ``J Σ_θ Jᵀ``), ``ε_s ~ N(0, I)``. Probabilities — never logits — are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters
from bayespeft.seed import randn


def probit_probs(f: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``f`` ``(B, C)``, ``cov`` ``(B, C, C)`` -> probabilities ``(B, C)``."""
    kappa = torch.rsqrt(1.0 + math.pi / 8.0 * cov.diagonal(dim1=-2, dim2=-1))
    return torch.softmax(f * kappa, dim=-1)


def mc_link_probs(f: torch.Tensor, cov: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo over logits ``N(f, cov)``: average of ``n_samples`` softmax probabilities ``(B, C)``."""
    L = jittered_cholesky(cov, relative_jitters(cov, first=1e-10, factor=100.0, tries=4),
                          what="logit covariance", fix="it must be positive semi-definite")
    eps = randn(n_samples, *f.shape, generator=generator, dtype=f.dtype, device=f.device)
    logits = f + torch.einsum("bce,sbe->sbc", L, eps)
    return torch.softmax(logits, dim=-1).mean(0)


def as_batch(batch_or_inputs: Any) -> Any:
    """Accept a full batch (dict with ``labels`` / ``(x, y)``) or bare inputs (tensor / dict); return a batch."""
    if isinstance(batch_or_inputs, Mapping):
        if "labels" in batch_or_inputs:
            return batch_or_inputs
        first = next(v for v in batch_or_inputs.values() if torch.is_tensor(v))
        return {**batch_or_inputs, "labels": torch.zeros(first.shape[0], dtype=torch.long, device=first.device)}
    if torch.is_tensor(batch_or_inputs):
        x = batch_or_inputs
        return (x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    return batch_or_inputs


def chunks(batch: Any, size: int | None) -> Iterator[Any]:
    """Split a batch into consecutive chunks of at most ``size`` examples (``None``: the whole batch)."""
    if isinstance(batch, Mapping):
        n = next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
    else:
        n = batch[0].shape[0]
    if size is None or size >= n:
        yield batch
        return
    for i in range(0, n, size):
        if isinstance(batch, Mapping):
            yield {k: (v[i : i + size] if torch.is_tensor(v) else v) for k, v in batch.items()}
        else:
            yield type(batch)(v[i : i + size] for v in batch)
