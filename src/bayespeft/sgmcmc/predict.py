"""Predictions from posterior samples: a single sample, or the ensemble average of **probabilities** (never logits).

``ensemble_predict`` computes ``p(y|x, D) ≈ (1/S) Σ_s softmax(f_{θ_s}(x))`` over the S samples of a store, loading
each sample into the model's trainable parameters in turn and restoring the original values (e.g. the MAP) after,
even on error. Inputs: a loader in the :mod:`bayespeft.batch` convention. Output: ``(N, C)`` float32 on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from ..batch import forward_batch, to_device
from ..evalmode import eval_mode
from ..progress import progress
from .model import load_params, trainable_params
from .store import SampleStore


@torch.no_grad()
def _probs(model: nn.Module, loader: Iterable, device: torch.device) -> Tensor:
    out = []
    for batch in loader:
        logits, _ = forward_batch(model, to_device(batch, device))
        out.append(logits.float().softmax(-1).cpu())
    if not out:
        raise ValueError("the loader yielded no batches")
    return torch.cat(out)


def predict_sample(model: nn.Module, sample: Mapping[str, Tensor], loader: Iterable) -> Tensor:
    """Class probabilities ``(N, C)`` of the model with its trainable parameters set to ``sample``; restores them."""
    return ensemble_predict(model, [sample], loader)


def ensemble_predict(model: nn.Module, store: SampleStore | Iterable[Mapping[str, Tensor]], loader: Iterable,
                     indices: list[int] | None = None, *, show_progress: bool | None = False,
                     desc: str = "ensemble predictive") -> Tensor:
    """Average of the per-sample class probabilities over ``store`` (or the given ``indices`` of it).

    ``show_progress``: one pass over ``loader`` per sample can be the longest stage of a sampling run (hundreds of
    samples x the test set); ``None`` / ``True`` show it like every long loop (:func:`bayespeft.progress.progress`:
    a bar on a terminal, a line every 10 s elsewhere, ``BAYESPEFT_PROGRESS``), ``False`` (default) prints nothing.
    """
    device = next(model.parameters()).device
    live = trainable_params(model)
    saved = {n: p.detach().clone() for n, p in live.items()}
    n_samples = None
    if isinstance(store, SampleStore):
        idx = range(len(store)) if indices is None else indices
        samples: Iterable = (store.load(i) for i in idx)
        n_samples = len(idx)
    else:
        samples = store
    if show_progress is not False:
        samples = progress(samples, desc=desc, total=n_samples, enabled=show_progress)
    total, count = None, 0
    with eval_mode(model):
        try:
            for sample in samples:
                load_params(model, {k: v.to(device) for k, v in sample.items()})
                p = _probs(model, loader, device)
                total = p if total is None else total.add_(p)
                count += 1
        finally:
            load_params(model, saved)
    if count == 0:
        raise ValueError("no samples to average (empty store or indices)")
    return total / count
