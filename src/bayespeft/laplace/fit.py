"""``fit``: collect the curvature of a parameter subset at the MAP and return a :class:`LaplacePosterior`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from bayespeft.batch import forward_batch, to_device
from bayespeft.evalmode import model_mode
from bayespeft.laplace.base import STRUCTURES
from bayespeft.laplace.capture import Curvature, ForwardFn, Likelihood, check_logits, cotangents, nll_terms
from bayespeft.laplace.posterior import LaplacePosterior
from bayespeft.laplace.subset import Subset, select_parameters
from bayespeft.progress import progress as progress_bar


def describe_subset(subset: Subset) -> str:
    return getattr(subset, "__name__", "predicate") if callable(subset) else repr(subset)


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    structure: str = "kfac",
    subset: Subset = "all",
    likelihood: Likelihood = "classification",
    curvature: Curvature = "ggn",
    prior_precision: float | list[float] | torch.Tensor = 1.0,
    temperature: float = 1.0,
    n_kfac: int | None = None,
    lr_threshold: int | None = None,
    sigma_noise: float = 1.0,
    *,
    bias: Literal["augment", "separate"] = "augment",
    train_mode: bool = False,
    forward_fn: ForwardFn | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> LaplacePosterior:
    """Post-hoc Laplace approximation ``N(θ*, P⁻¹)`` over the trainable parameters in ``subset``.

    Args:
        model: at its MAP; batches follow :mod:`bayespeft.batch` and it returns ``(B, C)`` logits or ``(B, D)``
            regression outputs. Put in eval mode while collecting (dropout off) unless ``train_mode``.
        structure: a name in :data:`bayespeft.laplace.STRUCTURES` (``diag``, ``kfac``, ``lowrank_kfac``, ``full``).
        subset: see :func:`bayespeft.laplace.subset.select_parameters`.
        curvature: ``"ggn"`` (exact generalised Gauss-Newton, ``C`` output-gradient passes per batch) or ``"fisher"``
            (one sampled label per example from ``generator`` or ``seed``; one backward per batch).
        prior_precision: ``δ``, scalar or one per group (owning module, :attr:`LaplacePosterior.groups`).
        temperature: ``T`` in ``P = H/T + P0`` with ``H = N · average per-example curvature``.
        n_kfac, lr_threshold, bias: KFAC options (rank of low-rank factors, dimension above which factors are
            low-rank, bias folded into ``A`` or a separate block as in laplace-torch).
        sigma_noise: Gaussian noise ``σ`` (regression).
    """
    if likelihood not in ("classification", "regression"):
        raise ValueError(f"likelihood must be 'classification' or 'regression', got {likelihood!r}")
    if curvature not in ("ggn", "fisher"):
        raise ValueError(f"curvature must be 'ggn' or 'fisher', got {curvature!r}")
    cls = STRUCTURES.get(structure)
    params = select_parameters(model, subset)
    options: dict[str, Any] = {}
    if structure in ("kfac", "lowrank_kfac"):
        options = {"n_kfac": n_kfac, "lr_threshold": lr_threshold, "bias": bias}
    elif n_kfac is not None:
        raise ValueError(f"n_kfac applies to structures 'kfac'/'lowrank_kfac', not {structure!r}")
    struct = cls(model, params, **options)
    forward_fn = forward_fn or forward_batch
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    device = params[0][1].device

    def cot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cotangents(logits, labels, likelihood, curvature, sigma_noise, gen)

    loss, n_data, n_outputs = 0.0, 0, None
    with model_mode(model, train_mode), torch.enable_grad():
        for batch in progress_bar(train_loader, desc=f"Laplace fit ({structure})", enabled=progress):
            batch = to_device(batch, device)
            logits, labels = struct.accumulate(model, batch, forward_fn, cot)
            check_logits(logits)
            if n_outputs is not None and logits.shape[1] != n_outputs:
                raise ValueError(f"the model returned {logits.shape[1]} outputs, earlier batches {n_outputs}")
            n_outputs = logits.shape[1]
            loss += float(nll_terms(logits, labels, likelihood))
            n_data += logits.shape[0]
    if n_data == 0:
        raise ValueError("fit got an empty train_loader (no batches); the Laplace curvature needs data")
    struct.finalize()
    mean = torch.cat([p.detach().reshape(-1) for _, p in params])
    return LaplacePosterior(
        model, struct, likelihood=likelihood, curvature=curvature, subset_desc=describe_subset(subset),
        prior_precision=prior_precision, temperature=temperature, sigma_noise=sigma_noise, n_data=n_data,
        n_outputs=int(n_outputs), loss=loss, mean=mean, forward_fn=forward_fn,
    )
