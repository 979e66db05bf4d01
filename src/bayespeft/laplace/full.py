"""Full (dense) Laplace for small subsets (a head, one layer): ``P = scale · H + diag(δ)`` with ``H`` ``(d, d)``.

``H = Σ_n Σ_k g_{k,n} g_{k,n}ᵀ`` with ``g_{k,n} = J_nᵀ v_{k,n}`` the per-example gradients of the curvature
cotangents (exact GGN ``Σ J_nᵀ Λ_n J_n`` or sampled Fisher). ``P = L Lᵀ`` (Cholesky; jitter with a warning if
``P`` is not numerically positive definite); ``log det P = 2 Σ log L_ii``; ``J Σ Jᵀ = (L⁻¹Jᵀ)ᵀ(L⁻¹Jᵀ)``;
samples ``L⁻ᵀ z``.

Shared (scalar) prior precision ``δ``: with the eigenvalues ``λ`` ``(d,)`` of ``H = Q diag(λ) Qᵀ``,
``P = Q (scale · diag(λ) + δ I) Qᵀ`` and ``log det P = Σ_i log(scale · λ_i + δ)``: ``O(d)`` per evaluation (and
differentiable in ``δ`` and ``scale``) after one ``O(d³)`` ``eigvalsh``, cached until ``H`` changes. Evidence-based
prior tuning (:meth:`LaplacePosterior.optimize_prior`) then costs one eigendecomposition instead of one Cholesky
(forward and backward) per optimiser step. A per-group ``δ`` is not a multiple of ``I``, so ``Q`` does not
diagonalise ``P``: that case keeps the Cholesky path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bayespeft.laplace.base import STRUCTURES, CotangentFn, Structure
from bayespeft.laplace.capture import ForwardFn, per_example_grads
from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters
from bayespeft.laplace.subset import live_parameters
from bayespeft.seed import randn

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
        self._eig_cache: tuple[torch.Tensor, int, torch.Tensor] | None = None
        self._chol_cache: tuple[torch.Tensor, tuple, torch.Tensor] | None = None

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

    def cached_cholesky(self, delta, scale) -> torch.Tensor:
        """:meth:`cholesky` without gradients, kept for the last ``(H, δ, scale)``: the GLM predictive asks for it
        once per chunk of test examples and sampling once per call, and it costs ``O(d³)``."""
        key = (self.H._version, tuple(torch.as_tensor(delta).reshape(-1).tolist()), float(scale))
        cache = self._chol_cache
        if cache is not None and cache[0] is self.H and cache[1] == key:
            return cache[2]
        with torch.no_grad():
            L = self.cholesky(delta, scale)
        self._chol_cache = (self.H, key, L)
        return L

    def logdet_precision(self, delta, scale):
        return 2 * self.cholesky(delta, scale).diagonal().log().sum()

    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues ``λ`` ``(d,)`` of ``H`` (ascending), cached until ``H`` is replaced or updated in place."""
        H, cache = self.H, self._eig_cache
        if cache is None or cache[0] is not H or cache[1] != H._version:
            lam = torch.linalg.eigvalsh(H.detach())
            self._eig_cache = cache = (H, H._version, lam)
        return cache[2]

    def logdet_precision_shared(self, delta, scale):
        """``Σ_i log(scale · λ_i + δ)`` for one ``δ`` (shape ``()`` or ``(1,)``); the Cholesky path if some
        ``scale · λ_i + δ <= 0`` (numerically indefinite ``P``: jitter with a warning, as :meth:`cholesky`)."""
        delta = delta.reshape(())
        diag = scale * self.eigenvalues() + delta
        if not bool((diag.detach() > 0).all()):
            return self.logdet_precision(delta.reshape(1).expand(len(self.groups)), scale)
        return diag.log().sum()

    def glm_cov(self, model, batch, forward_fn, delta, scale):
        f, J = self.jacobian(model, batch, forward_fn)
        L = self.cached_cholesky(delta, scale)
        B, C, d = J.shape
        W = torch.linalg.solve_triangular(L, J.reshape(B * C, d).T, upper=False)  # (d, B C)
        W = W.T.reshape(B, C, d)
        return f, W @ W.transpose(1, 2)

    def sample(self, n, delta, scale, generator):
        z = randn(n, self.d, generator=generator, dtype=self.dtype, device=self.device)
        L = self.cached_cholesky(delta, scale)
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
