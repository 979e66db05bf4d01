"""Full (dense) Laplace for small subsets (a head, one layer): ``P = scale · H + diag(δ)`` with ``H`` ``(d, d)``.

``H = Σ_n Σ_k g_{k,n} g_{k,n}ᵀ`` with ``g_{k,n} = J_nᵀ v_{k,n}`` the per-example gradients of the curvature
cotangents (exact GGN ``Σ J_nᵀ Λ_n J_n`` or sampled Fisher). ``P = L Lᵀ`` (Cholesky; jitter with a warning if
``P`` is not numerically positive definite); ``log det P = 2 Σ log L_ii``; ``J Σ Jᵀ = (L⁻¹Jᵀ)ᵀ(L⁻¹Jᵀ)``;
samples ``L⁻ᵀ z``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bayespeft.laplace.base import STRUCTURES, CotangentFn, Structure
from bayespeft.laplace.capture import ForwardFn, per_example_grads
from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters
from bayespeft.laplace.subset import live_parameters

MAX_FULL_PARAMS = 20_000


@STRUCTURES.register("full")
class FullStructure(Structure):
    """Dense curvature ``H`` ``(d, d)``."""

    name = "full"

    def __init__(self, model: nn.Module, params, **options: Any) -> None:
        super().__init__(model, params, **options)
        if self.d > MAX_FULL_PARAMS:
            raise ValueError(
                f"structure 'full' stores a {self.d} x {self.d} matrix; choose a smaller subset "
                f"(<= {MAX_FULL_PARAMS} parameters, e.g. subset='last_layer') or structure 'diag'/'kfac'/'lowrank_kfac'"
            )
        self.H = torch.zeros(self.d, self.d, dtype=self.dtype, device=self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"H": self.H}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.H = tensors["H"].to(self.device, self.dtype)

    def accumulate(self, model: nn.Module, batch: Any, forward_fn: ForwardFn, cotangent_fn: CotangentFn):
        logits, labels, g = per_example_grads(model, batch, live_parameters(model, self.names), cotangent_fn, forward_fn)
        G = self.flatten(g, 2).to(self.dtype).reshape(-1, self.d)
        self.H += G.T @ G
        return logits, labels

    def precision_matrix(self, delta, scale):
        return scale * self.H + torch.diag(self.delta_vector(delta))

    def cholesky(self, delta, scale) -> torch.Tensor:
        """``L`` with ``L Lᵀ = P`` (jitter ``1e-6…1e-2 · mean|diag P|``, with a warning, only if ``P`` does not factorise)."""
        P = self.precision_matrix(delta, scale)
        return jittered_cholesky(P, relative_jitters(P, first=1e-6, factor=10.0, tries=5, floor=1e-12),
                                 what="full posterior precision", fix="use a positive prior precision", warn=True)

    def logdet_precision(self, delta, scale):
        return 2 * self.cholesky(delta, scale).diagonal().log().sum()

    def glm_cov(self, model, batch, forward_fn, delta, scale):
        f, J = self.jacobian(model, batch, forward_fn)
        L = self.cholesky(delta, scale)
        B, C, d = J.shape
        W = torch.linalg.solve_triangular(L, J.reshape(B * C, d).T, upper=False)  # (d, B C)
        W = W.T.reshape(B, C, d)
        return f, W @ W.transpose(1, 2)

    def sample(self, n, delta, scale, generator):
        z = torch.randn(n, self.d, generator=generator, dtype=self.dtype, device="cpu").to(self.device)
        L = self.cholesky(delta, scale)
        return torch.linalg.solve_triangular(L.T, z.T, upper=True).T

    def restrict(self, names):
        """``H_SS``: the rows and columns of the parameters ``names`` (the GGN of ``S`` alone)."""
        new = self._restricted_copy(names)
        idx = self.index_of(names)
        new.H = self.H[idx[:, None], idx[None, :]]
        return new

    def glm_cov_parts(self, model, batch, forward_fn, delta, scale, parts):
        """One Jacobian pass; part ``p``: ``J_p P_pp⁻¹ J_pᵀ`` with ``P_pp`` the precision's ``p`` block."""
        f, J = self.jacobian(model, batch, forward_fn)
        B, C, _ = J.shape
        covs = []
        for part in parts:
            sub = self.restrict(part)
            L = sub.cholesky(self.sub_delta(sub, delta), scale)
            Jp = J[..., self.index_of(part)]
            W = torch.linalg.solve_triangular(L, Jp.reshape(B * C, -1).T, upper=False).T.reshape(B, C, -1)
            covs.append(W @ W.transpose(1, 2))
        return f, torch.stack(covs)
