"""The curvature-structure interface and registry.

Every structure (``diag.py``, ``kfac.py``, ``lowrank_kfac.py``, ``full.py``) is one file with one class of this
shape, registered in :data:`STRUCTURES` (:mod:`bayespeft.laplace.registry`); a new structure is one file plus one
line in that registry's table of modules.

Conventions shared by all structures:

* ``θ`` ``(d,)``: the subset's parameters flattened in ``model.named_parameters()`` order.
* ``H``: the dataset sum of per-example curvature, ``H = Σ_n J_nᵀ Λ_n J_n = N · E[·]`` (GGN) or its sampled
  Fisher estimate, collected at the MAP ``θ*``.
* Posterior precision ``P = scale · H + diag(δ)``, ``scale = 1/T`` (temperature ``T``; for regression also
  ``σ_fit²/σ²`` when the noise is changed after fitting); ``δ`` ``(G,)`` one prior precision per group (owning
  module), broadcast to parameters.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from bayespeft.laplace.capture import ForwardFn, cotangents, per_example_grads
from bayespeft.laplace.subset import group_names, live_parameters, owner_module_name
from bayespeft.laplace.registry import STRUCTURES  # noqa: F401  (re-exported: the registry is torch-free)

CotangentFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Structure(ABC):
    """Curvature of the subset's parameters plus the posterior operations that depend on its structure."""

    name: ClassVar[str]

    def __init__(self, model: nn.Module, params: Sequence[tuple[str, torch.Tensor]], **options: Any) -> None:
        if options:
            raise TypeError(f"structure {self.name!r} got unknown options {sorted(options)}")
        self.names = [n for n, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self.numels = [p.numel() for _, p in params]
        self.d = sum(self.numels)
        self.device = params[0][1].device
        self.dtype = torch.promote_types(params[0][1].dtype, torch.float32)
        self.groups = group_names(self.names)
        gidx = [self.groups.index(owner_module_name(n)) for n in self.names]
        self.param_group = torch.repeat_interleave(torch.tensor(gidx), torch.tensor(self.numels)).to(self.device)
        self.group_sizes = torch.bincount(self.param_group, minlength=len(self.groups)).to(self.dtype)

    # ---- options / persistence ------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """JSON-serialisable constructor options (saved with the posterior)."""
        return {}

    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    # ---- fitting ----------------------------------------------------------------------------------------------
    @abstractmethod
    def accumulate(self, model: nn.Module, batch: Any, forward_fn: ForwardFn, cotangent_fn: CotangentFn) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one batch's curvature; returns the batch's ``(logits, labels)`` (detached)."""

    def finalize(self) -> None:
        """Called once after the last batch (e.g. eigendecompositions)."""

    # ---- posterior ----------------------------------------------------------------------------------------------
    @abstractmethod
    def logdet_precision(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``log det P``; differentiable in ``delta`` (G,) and ``scale``."""

    def logdet_precision_shared(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``log det P`` when every parameter has the same prior precision ``delta`` (shape ``()`` or ``(1,)``).

        Same value and gradient as :meth:`logdet_precision` with ``delta`` repeated per group; structures with a
        cheaper formula for ``P = scale · H + δ I`` override it (``full``: cached eigenvalues of ``H``).
        """
        return self.logdet_precision(delta.reshape(1).expand(len(self.groups)), scale)

    @abstractmethod
    def glm_cov(self, model: nn.Module, batch: Any, forward_fn: ForwardFn, delta: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f (B, C), J Σ Jᵀ (B, C, C))`` with ``Σ = P⁻¹`` and ``J`` the per-example Jacobian of ``f`` in ``θ``."""

    @abstractmethod
    def sample(self, n: int, delta: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(n, d)`` draws from ``N(0, P⁻¹)`` (deviations from the MAP)."""

    @abstractmethod
    def precision_matrix(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Dense ``P`` ``(d, d)`` in ``θ`` order (small subsets / tests)."""

    # ---- helpers ------------------------------------------------------------------------------------------------
    def delta_vector(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-parameter prior precision ``(d,)`` from per-group ``delta`` ``(G,)``."""
        return delta[self.param_group]

    def flatten(self, tensors: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
        """``{name: (*lead_dims, *shape)} -> (*lead_dims, d)`` in ``θ`` order."""
        parts = [tensors[n].reshape(*tensors[n].shape[:lead], -1) for n in self.names]
        return torch.cat(parts, dim=-1)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for n, s, k in zip(self.names, self.shapes, self.numels):
            out[n] = vec[..., i : i + k].reshape(*vec.shape[:-1], *s)
            i += k
        return out

    def jacobian(self, model: nn.Module, batch: Any, forward_fn: ForwardFn) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f (B, C), J (B, C, d))`` per-example Jacobians of the logits in ``θ``."""
        params = live_parameters(model, self.names)
        f, _, g = per_example_grads(model, batch, params, lambda lo, la: cotangents(lo, la, "classification", "jacobian"), forward_fn)
        return f, self.flatten(g, 2).transpose(0, 1).to(self.dtype)

    # ---- restriction to a parameter subset (layer-wise Laplace, bayespeft.laplace.layerwise) ------------------------
    def index_of(self, names: Sequence[str]) -> torch.Tensor:
        """Coordinates ``(d_S,)`` in ``θ`` of the parameters ``names`` (kept in ``θ`` order)."""
        known = set(self.names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"parameters {unknown[:5]} are not in this posterior (it covers {self.names[:5]}...)")
        keep, parts, o = set(names), [], 0
        for n, k in zip(self.names, self.numels):
            if n in keep:
                parts.append(torch.arange(o, o + k))
            o += k
        if not parts:
            raise ValueError("restriction to an empty parameter set")
        return torch.cat(parts).to(self.device)

    def _restricted_copy(self, names: Sequence[str]) -> Structure:
        """A shallow copy whose bookkeeping (names, shapes, groups) describes only ``names``, in ``θ`` order."""
        import copy

        self.index_of(names)  # validates the names
        keep = set(names)
        new = copy.copy(self)
        sel = [i for i, n in enumerate(self.names) if n in keep]
        new.names = [self.names[i] for i in sel]
        new.shapes = [self.shapes[i] for i in sel]
        new.numels = [self.numels[i] for i in sel]
        new.d = sum(new.numels)
        new.groups = group_names(new.names)
        gidx = [new.groups.index(owner_module_name(n)) for n in new.names]
        new.param_group = torch.repeat_interleave(torch.tensor(gidx), torch.tensor(new.numels)).to(self.device)
        new.group_sizes = torch.bincount(new.param_group, minlength=len(new.groups)).to(self.dtype)
        return new

    def restrict(self, names: Sequence[str]) -> Structure:
        """The curvature of the sub-vector ``θ_S`` (``S`` = ``names``), i.e. the rows/columns ``S`` of ``H``.

        For a GGN (or Fisher) ``H = Σ_n J_nᵀ Λ_n J_n`` the ``S`` block is ``Σ_n J_{n,S}ᵀ Λ_n J_{n,S}``: exactly the
        curvature a fit over ``S`` alone collects, so the restricted posterior ``P_S = scale · H_SS + diag(δ_S)`` equals
        ``fit(subset=S)`` (note: the precision's sub-block, not the inverse of the covariance's sub-block).
        """
        raise NotImplementedError(f"structure {self.name!r} cannot be restricted to a parameter subset")

    def sub_delta(self, sub: Structure, delta: torch.Tensor) -> torch.Tensor:
        """This structure's per-group ``delta`` ``(G,)`` mapped to the groups of its restriction ``sub``."""
        return delta[[self.groups.index(g) for g in sub.groups]]

    def glm_cov_parts(
        self, model: nn.Module, batch: Any, forward_fn: ForwardFn, delta: torch.Tensor, scale: torch.Tensor,
        parts: Sequence[Sequence[str]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f (B, C), covs (P, B, C, C))``: ``J_p P_p⁻¹ J_pᵀ`` for each disjoint part ``p`` (parameter names), where
        ``P_p`` is the restriction of the precision to ``p`` (:meth:`restrict`). This default runs one
        :meth:`glm_cov` per part; structures override it to share one pass of output gradients across parts.
        """
        covs, f = [], None
        for part in parts:
            sub = self.restrict(part)
            f, c = sub.glm_cov(model, batch, forward_fn, self.sub_delta(sub, delta), scale)
            covs.append(c)
        return f, torch.stack(covs)


def positive(values: torch.Tensor, what: str) -> torch.Tensor:
    """Eigenvalues/diagonal of a precision must be > 0: add jitter with a warning, error if that fails."""
    if bool((values > 0).all()):
        return values
    jitter = 1e-6 * float(values.detach().abs().max().clamp_min(1.0))
    warnings.warn(f"{what} is not positive definite (min eigenvalue {float(values.min()):.3g}); adding jitter {jitter:.3g}", RuntimeWarning, stacklevel=3)
    values = values + jitter
    if not bool((values > 0).all()):
        raise ValueError(f"{what} is not positive definite even after jitter; use a positive prior precision")
    return values


def check_delta(delta: torch.Tensor, n_groups: int, groups: Sequence[str]) -> torch.Tensor:
    if delta.ndim != 1 or delta.shape[0] not in (1, n_groups):
        raise ValueError(
            f"prior precision must be a scalar or have one value per group ({n_groups}: {list(groups)[:6]}...), "
            f"got shape {tuple(delta.shape)}"
        )
    return delta.expand(n_groups)
