"""Model adapter: a ``log_prob(params, batch)`` over a model's trainable parameters (``requires_grad=True``).

``log_prob(θ, B) = N · mean_{(x,y)∈B} log softmax(f_θ(x))_y + log N(θ; c, σ² I)``, with ``N = n_data``
(full-data scaling of the minibatch mean log-likelihood; the prior is counted once, with its normalising constant
``-P/2 log(2πσ²)``). ``θ`` is the dict ``{qualified name: tensor}`` of trainable parameters; the frozen parameters
and buffers are the model's own. The model is called with ``torch.func.functional_call`` and the batch convention of
:mod:`bayespeft.batch` (dict batches with ``labels`` -> ``model(**inputs)``, ``(x, y)`` -> ``model(x)``).
Temperature is deliberately **not** part of ``log_prob``: it belongs to the sampler (one place, no double counting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..batch import split_batch


def trainable_params(model: nn.Module) -> dict[str, Tensor]:
    """``{name: parameter}`` for every parameter with ``requires_grad=True`` (the live tensors, not copies)."""
    out = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not out:
        raise ValueError("the model has no trainable parameters (requires_grad=True); apply an adapter first")
    return out


@torch.no_grad()
def load_params(model: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Copy ``params`` into the model's trainable parameters of the same names (shapes must match)."""
    live = trainable_params(model)
    missing, extra = sorted(set(live) - set(params)), sorted(set(params) - set(live))
    if missing or extra:
        raise KeyError(f"sample does not match the model's trainable parameters: missing {missing[:5]}, "
                       f"unexpected {extra[:5]}")
    for n, p in live.items():
        if p.shape != params[n].shape:
            raise ValueError(f"shape mismatch for {n}: model {tuple(p.shape)}, sample {tuple(params[n].shape)}")
        p.copy_(params[n])


class ModelLogProb:
    """Callable ``log_prob(params, batch) -> 0-dim tensor`` (see module docstring)."""

    def __init__(self, model: nn.Module, n_data: int, prior_std: float, prior_center: Literal["zero", "init"]) -> None:
        if n_data < 1:
            raise ValueError(f"n_data must be the training-set size (>= 1), got {n_data}")
        self.model, self.n_data = model, int(n_data)
        self.prior_precision = 1.0 / prior_std**2
        params = trainable_params(model)
        self.names = list(params)
        self.n_params = sum(p.numel() for p in params.values())
        self.log_norm_const = -0.5 * self.n_params * math.log(2 * math.pi * prior_std**2)
        self.center = None if prior_center == "zero" else [p.detach().clone() for p in params.values()]

    def log_prior(self, params: Mapping[str, Tensor], *, foreach: bool = True) -> Tensor:
        """``log N(θ; c, σ² I)``; ``foreach=False``: the same sum without ``torch._foreach_*`` kernels (which have
        no ``torch.func.vmap`` batching rule; used when many chains are stacked, :mod:`.vectorized`)."""
        leaves = [params[n] for n in self.names]
        if self.center is not None:
            leaves = torch._foreach_sub(leaves, self.center) if foreach else [p - c for p, c in zip(leaves, self.center)]
        if foreach:
            sq = torch.stack(torch._foreach_norm(leaves)).pow(2).sum()
        else:
            sq = torch.stack([p.square().sum() for p in leaves]).sum()
        return -0.5 * self.prior_precision * sq + self.log_norm_const

    def log_likelihood(self, params: Mapping[str, Tensor], batch) -> Tensor:
        """Mean (over the batch) log-likelihood ``mean_i log p(y_i | x_i, θ)`` (cross-entropy, fp32)."""
        inputs, labels = split_batch(batch)
        if isinstance(inputs, Mapping):
            logits = functional_call(self.model, dict(params), args=(), kwargs=dict(inputs))
        else:
            logits = functional_call(self.model, dict(params), (inputs,))
        return -F.cross_entropy(logits.float(), labels)

    def __call__(self, params: Mapping[str, Tensor], batch, *, foreach: bool = True) -> Tensor:
        return self.n_data * self.log_likelihood(params, batch) + self.log_prior(params, foreach=foreach)


def model_log_prob(model: nn.Module, n_data: int, prior_std: float | None = None, prior_precision: float | None = None,
                   prior_center: Literal["zero", "init"] = "zero") -> ModelLogProb:
    """Build ``log_prob`` for ``model``'s trainable parameters; give ``prior_std`` σ or ``prior_precision`` 1/σ²
    (default σ = 1). ``prior_center="init"`` centres the prior at the current trainable values (e.g. the MAP)."""
    if prior_std is not None and prior_precision is not None:
        raise ValueError("give prior_std or prior_precision, not both")
    if prior_precision is not None:
        if not prior_precision > 0:
            raise ValueError(f"prior_precision must be > 0, got {prior_precision}")
        prior_std = prior_precision**-0.5
    prior_std = 1.0 if prior_std is None else prior_std
    if not (math.isfinite(prior_std) and prior_std > 0):
        raise ValueError(f"prior_std must be a finite number > 0, got {prior_std}")
    if prior_center not in ("zero", "init"):
        raise ValueError(f"prior_center must be 'zero' or 'init', got {prior_center!r}")
    return ModelLogProb(model, n_data, prior_std, prior_center)
