"""Diagonal Laplace: ``P = scale · diag(H) + diag(δ)``.

``diag(H)_i = Σ_n Σ_k (∂⟨f_n, v_{k,n}⟩/∂θ_i)²`` from per-example gradients (``nn.Linear`` via hooks, other
layers — Conv2d, norms, embeddings, raw parameters — via ``torch.func``), i.e. the exact diagonal of the GGN
``Σ_n J_nᵀ Λ_n J_n`` or of the sampled Fisher. ``log det P = Σ_i log P_ii``; ``Σ = diag(1/P_ii)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bayespeft.laplace.base import STRUCTURES, CotangentFn, Structure, positive
from bayespeft.laplace.capture import ForwardFn, per_example_grads
from bayespeft.laplace.subset import live_parameters
from bayespeft.seed import randn


@STRUCTURES.register("diag")
class DiagStructure(Structure):
    """Diagonal curvature ``H`` ``(d,)``."""

    name = "diag"

    def __init__(self, model: nn.Module, params, **options: Any) -> None:
        super().__init__(model, params, **options)
        self.H = torch.zeros(self.d, dtype=self.dtype, device=self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"H": self.H}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.H = tensors["H"].to(self.device, self.dtype)

    def accumulate(self, model: nn.Module, batch: Any, forward_fn: ForwardFn, cotangent_fn: CotangentFn):
        params = live_parameters(model, self.names)
        logits, labels, g = per_example_grads(model, batch, params, cotangent_fn, forward_fn)
        self.H += self.flatten(g, 2).to(self.dtype).square().sum((0, 1))
        return logits, labels

    def _precision(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return positive(scale * self.H + self.delta_vector(delta), "diagonal posterior precision")

    def logdet_precision(self, delta, scale):
        return self._precision(delta, scale).log().sum()

    def glm_cov(self, model, batch, forward_fn, delta, scale):
        f, J = self.jacobian(model, batch, forward_fn)
        var = 1.0 / self._precision(delta, scale)
        return f, torch.einsum("bcd,d,bed->bce", J, var, J)

    def sample(self, n, delta, scale, generator):
        z = randn(n, self.d, generator=generator, dtype=self.dtype, device=self.device)
        return z * self._precision(delta, scale).rsqrt()

    def precision_matrix(self, delta, scale):
        return torch.diag(self._precision(delta, scale))

    def restrict(self, names):
        """``H_S``: the diagonal entries of the parameters ``names``."""
        new = self._restricted_copy(names)
        new.H = self.H[self.index_of(names)]
        return new

    def glm_cov_parts(self, model, batch, forward_fn, delta, scale, parts):
        """One Jacobian pass; part ``p``: ``Σ_{i∈p} J_{:,i} J_{:,i}ᵀ / P_ii`` (diagonal ``P``: restriction = block)."""
        f, J = self.jacobian(model, batch, forward_fn)
        var = 1.0 / self._precision(delta, scale)
        covs = []
        for part in parts:
            idx = self.index_of(part)
            Jp = J[..., idx]
            covs.append(torch.einsum("bcd,d,bed->bce", Jp, var[idx], Jp))
        return f, torch.stack(covs)

