"""KFAC Laplace over ``nn.Linear`` layers (and the public collector :func:`collect_kfac`).

Per block (one Linear: row-major ``vec([W, b])``, or ``vec(W)`` and ``b`` separately with ``bias="separate"``) the
curvature is ``H ≈ G ⊗ A / n_rows`` (see :mod:`bayespeft.laplace.kfac_collect` for the factors and the expand
convention, which matches laplace-torch). With eigendecompositions ``G = Q_G diag(λ_G) Q_Gᵀ``,
``A = Q_A diag(λ_A) Q_Aᵀ`` (``k_G ≤ d_G``, ``k_A ≤ d_A`` columns; fewer for low-rank factors) the posterior
precision of the block is::

    P = (Q_G ⊗ Q_A) diag(s λ_G,i λ_A,j / n_rows + δ) (Q_G ⊗ Q_A)ᵀ + δ (I − Q_G Q_Gᵀ ⊗ Q_A Q_Aᵀ),   s = scale

so, with ``Λ_ij = s λ_G,i λ_A,j / n_rows + δ``:

* ``log det P = Σ_ij log Λ_ij + (d_G d_A − k_G k_A) log δ`` (laplace-torch's ``KronDecomposed.logdet``);
* ``Σ = P⁻¹ = I/δ + (Q_G ⊗ Q_A) diag(1/Λ − 1/δ) (Q_G ⊗ Q_A)ᵀ`` and ``Σ^{1/2}`` likewise with ``Λ^{-1/2}``;
* GLM predictive without per-parameter Jacobians: for class ``c`` the block's Jacobian is the matrix
  ``J_c = Σ_t g_{t,c} ã_tᵀ`` (``g`` the output gradient of logit ``c``, ``ã`` the augmented input), so
  ``(J Σ Jᵀ)_{ce} = Σ_ij M_c,ij M_e,ij (1/Λ_ij − 1/δ) + ⟨J_c, J_e⟩_F / δ`` with ``M_c = Q_Gᵀ J_c Q_A``; ``M`` is
  formed either by rotating ``g``/``ã`` first or ``J`` first, whichever costs fewer flops (e.g. LoRA factors).
  For full-rank factors the ``1/δ`` terms cancel and are skipped.

The per-block algebra (the three items above and sampling) lives in :class:`KronEig`, shared with
:mod:`bayespeft.laplace.bayesian_lora`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bayespeft.laplace.base import STRUCTURES, CotangentFn, Structure, positive
from bayespeft.laplace.capture import ForwardFn, LinearTaps, cotangents, linear_owners
from bayespeft.laplace.factors import eig_factor
from bayespeft.laplace.kfac_collect import KfacCollector, KronFactors, collect_kfac
from bayespeft.seed import randn

__all__ = ["KfacStructure", "KronEig", "KronFactors", "collect_kfac"]

SUPPORTED_LAYERS = "nn.Linear (weight and bias; includes PEFT LoRA lora_A/lora_B)"


@STRUCTURES.register("kfac")
class KfacStructure(Structure):
    """Kronecker-factored curvature, one block per ``nn.Linear`` (bias folded into ``A`` unless ``bias="separate"``)."""

    name = "kfac"
    default_n_kfac: int | None = None
    default_lr_threshold: int = 512

    def __init__(
        self,
        model: nn.Module,
        params,
        *,
        n_kfac: int | None = None,
        lr_threshold: int | None = None,
        bias: Literal["augment", "separate"] = "augment",
    ) -> None:
        super().__init__(model, params)
        if bias not in ("augment", "separate"):
            raise ValueError(f"bias must be 'augment' or 'separate', got {bias!r}")
        self.n_kfac = n_kfac if n_kfac is not None else self.default_n_kfac
        self.lr_threshold = lr_threshold if lr_threshold is not None else self.default_lr_threshold
        self.bias = bias
        owners = linear_owners(model, self.names)
        bad = [n for n in self.names if n not in owners]
        if bad:
            mods = dict(model.named_modules())
            kinds = sorted({type(mods.get(n.rpartition(".")[0], model)).__name__ for n in bad})
            raise TypeError(
                f"structure {self.name!r} supports {SUPPORTED_LAYERS}; parameters {bad[:5]} belong to {kinds}. "
                "Use structure 'diag' or 'full', or a subset of Linear layers"
            )
        offsets, o = {}, 0
        for n, k in zip(self.names, self.numels):
            offsets[n] = o
            o += k
        mods = dict(model.named_modules())
        self.blocks: dict[str, dict[str, Any]] = {}
        per_module: dict[str, dict[str, str]] = {}
        for n, (m, leaf) in owners.items():
            per_module.setdefault(m, {})[leaf] = n
        for m, leaves in per_module.items():
            lin = mods[m]
            w, b = leaves.get("weight"), leaves.get("bias")
            if w is not None and b is not None and bias == "separate":
                specs = [(m, w, None), (m + "#bias", None, b)]
            else:
                specs = [(m, w, b)]
            for key, wn, bn in specs:
                cols = []
                if wn is not None:
                    cols.append(offsets[wn] + torch.arange(lin.out_features * lin.in_features).reshape(lin.out_features, lin.in_features))
                if bn is not None:
                    cols.append(offsets[bn] + torch.arange(lin.out_features)[:, None])
                self.blocks[key] = {
                    "module": m, "weight_in": wn is not None, "bias_in_A": bn is not None,
                    "group": self.groups.index(m), "index": torch.cat(cols, 1).to(self.device),
                }
        self._collector: KfacCollector | None = None
        self.factors: dict[str, KronFactors] = {}
        self.eig: dict[str, KronEig] = {}

    def options(self) -> dict[str, Any]:
        return {"n_kfac": self.n_kfac, "lr_threshold": self.lr_threshold, "bias": self.bias}

    def _modules(self, model: nn.Module) -> dict[str, nn.Linear]:
        mods = dict(model.named_modules())
        return {k: mods[b["module"]] for k, b in self.blocks.items()}

    # ---- fitting ------------------------------------------------------------------------------------------------
    def accumulate(self, model: nn.Module, batch: Any, forward_fn: ForwardFn, cotangent_fn: CotangentFn):
        if self._collector is None:
            self._collector = KfacCollector(
                self._modules(model),
                bias_in_A={k: b["bias_in_A"] for k, b in self.blocks.items()},
                weight_in={k: b["weight_in"] for k, b in self.blocks.items()},
                n_kfac=self.n_kfac, lr_threshold=self.lr_threshold, dtype=self.dtype,
            )
        return self._collector.step(model, batch, forward_fn, cotangent_fn)

    def finalize(self) -> None:
        if self._collector is not None:
            self.factors = self._collector.factors()
            self._collector = None
        self.eig = {}
        seen: dict[tuple, list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]] = {}

        def eig(F: torch.Tensor, lowrank: bool) -> tuple[torch.Tensor, torch.Tensor]:
            # identical factors (the A of q/k/v projections fed the same input) are decomposed once
            key = (tuple(F.shape), F.dtype, lowrank, float(F.sum()), float(F.diagonal().sum()))
            for other, result in seen.get(key, []):
                if torch.equal(other, F):
                    return result
            result = eig_factor(F, lowrank)
            seen.setdefault(key, []).append((F, result))
            return result

        for k, F in self.factors.items():
            QA, lA = eig(F.A, F.A_lowrank)
            QG, lG = eig(F.G, F.G_lowrank)
            self.eig[k] = KronEig(QG, lG, QA, lA, n_rows=F.n_rows, name=f"KFAC posterior precision of block {k!r}")

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for k, F in self.factors.items():
            out[f"{k}.A"], out[f"{k}.G"] = F.A, F.G
            out[f"{k}.counts"] = torch.tensor([F.n_examples, F.n_rows, int(F.A_lowrank), int(F.G_lowrank)])
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.factors = {}
        for k, b in self.blocks.items():
            n_ex, n_rows, a_lr, g_lr = (int(v) for v in tensors[f"{k}.counts"])
            self.factors[k] = KronFactors(
                A=tensors[f"{k}.A"].to(self.device, self.dtype), G=tensors[f"{k}.G"].to(self.device, self.dtype),
                n_examples=n_ex, n_rows=n_rows, bias_in_A=b["bias_in_A"], A_lowrank=bool(a_lr), G_lowrank=bool(g_lr),
            )
        self.finalize()

    # ---- posterior (per-block algebra in KronEig) ---------------------------------------------------------------
    def logdet_precision(self, delta, scale):
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for key, b in self.blocks.items():
            total = total + self.eig[key].logdet(delta[b["group"]], scale)
        return total

    def sample(self, n, delta, scale, generator):
        out = torch.zeros(n, self.d, dtype=self.dtype, device=self.device)
        for key, b in self.blocks.items():
            x = self.eig[key].sample(n, delta[b["group"]], scale, generator)
            out[:, b["index"].reshape(-1)] = x.reshape(n, -1)
        return out

    def precision_matrix(self, delta, scale):
        P = torch.zeros(self.d, self.d, dtype=self.dtype, device=self.device)
        for key, b in self.blocks.items():
            F = self.factors[key]
            idx = b["index"].reshape(-1)
            Pb = scale * torch.kron(F.dense_G(), F.dense_A()) / F.n_rows + delta[b["group"]] * torch.eye(idx.numel(), dtype=self.dtype, device=self.device)
            P[idx[:, None], idx[None, :]] = Pb
        return P

    def glm_cov(self, model, batch, forward_fn, delta, scale):
        f, covs = self.glm_cov_parts(model, batch, forward_fn, delta, scale, [self.names])
        return f, covs[0]

    @staticmethod
    def _augment(b: dict[str, Any], a: torch.Tensor) -> torch.Tensor:
        parts = [a] if b["weight_in"] else []
        if b["bias_in_A"]:
            parts.append(torch.ones_like(a[..., :1]))
        return torch.cat(parts, -1)

    def restrict(self, names):
        """The KFAC blocks of the Linear layers whose parameters are ``names`` (each block whole, or ``ValueError``)."""
        new = self._restricted_copy(names)
        keep = set(names)
        remap = torch.full((self.d,), -1, dtype=torch.long, device=self.device)
        idx = self.index_of(names)
        remap[idx] = torch.arange(idx.numel(), device=self.device)
        new.blocks, new.factors, new.eig = {}, {}, {}
        for key, b in self.blocks.items():
            inside = remap[b["index"].reshape(-1)] >= 0
            if not bool(inside.any()):
                continue
            if not bool(inside.all()):
                raise ValueError(
                    f"KFAC block {key!r} (weight and bias of one Linear) is only partly in the restriction {sorted(keep)[:4]}; "
                    "restrict to whole layers"
                )
            new.blocks[key] = {**b, "index": remap[b["index"]], "group": new.groups.index(b["module"])}
            if key in self.factors:
                new.factors[key] = self.factors[key]
            if key in self.eig:
                new.eig[key] = self.eig[key]
        new._collector = None
        return new

    def _param_at(self, index: torch.Tensor) -> set[int]:
        """Positions in :attr:`names` of the parameters that own the ``θ`` coordinates ``index``."""
        bounds = torch.tensor(self.numels).cumsum(0).to(index.device)
        return set(torch.bucketize(index.reshape(-1), bounds, right=True).unique().tolist())

    def glm_cov_parts(self, model, batch, forward_fn, delta, scale, parts):
        """One pass of output gradients for every part: each KFAC block's term of :meth:`glm_cov` goes to its part."""
        part_of = {n: i for i, part in enumerate(parts) for n in part}
        block_part = {}
        for key, b in self.blocks.items():
            owners = {part_of.get(self.names[i]) for i in self._param_at(b["index"])}
            if len(owners) != 1:
                raise ValueError(f"KFAC block {key!r} must lie in exactly one part, found parts {sorted(map(str, owners))}")
            block_part[key] = owners.pop()
        mods = {k: m for k, m in self._modules(model).items() if block_part[k] is not None}
        with LinearTaps(mods) as taps:
            f, _ = forward_fn(model, batch)
            V = cotangents(f, f, "classification", "jacobian")
            grads = taps.output_grads(f, V)
            covs = torch.zeros(len(parts), f.shape[0], f.shape[1], f.shape[1], dtype=self.dtype, device=f.device)
            for key, b in self.blocks.items():
                if block_part[key] is None:
                    continue
                g = grads[key].to(self.dtype)
                a = self._augment(b, taps.activations(key)).to(self.dtype)
                covs[block_part[key]] += self.eig[key].cov_from_taps(a, g, delta[b["group"]], scale)
        return f.detach(), covs


@dataclass
class KronEig:
    r"""One KFAC block's posterior, from the eigendecompositions of its factors: the only copy of the block algebra.

    The block is a ``(d_G, d_A)`` matrix (row-major ``vec``) with curvature ``s · G ⊗ A / n_rows`` and prior
    precision ``δ`` (0-dim), ``G = Q_G diag(λ_G) Q_Gᵀ`` with ``Q_G`` ``(d_G, k_G)`` orthonormal columns (``k_G < d_G``
    for a low-rank factor), ``A`` likewise. With ``Λ_ij = s λ_G,i λ_A,j / n_rows + δ`` ``(k_G, k_A)``:

    * ``log det P = Σ_ij log Λ_ij + (d_G d_A − k_G k_A) log δ``;
    * ``Σ = P⁻¹ = I/δ + (Q_G ⊗ Q_A) diag(1/Λ − 1/δ) (Q_G ⊗ Q_A)ᵀ`` (the ``1/δ`` terms cancel when ``complete``);
    * for Jacobian matrices ``J_c`` ``(d_G, d_A)`` of logit ``c``: ``(J Σ Jᵀ)_ce = Σ_ij M_c,ij M_e,ij W_ij +
      ⟨J_c, J_e⟩_F / δ`` with ``M_c = Q_Gᵀ J_c Q_A`` and ``W = 1/Λ − 1/δ`` (``1/Λ`` and no ``⟨J, J⟩`` term when complete).

    Used by :class:`KfacStructure` (and :class:`~bayespeft.laplace.lowrank_kfac.LowRankKfacStructure`) and by
    :mod:`bayespeft.laplace.bayesian_lora` (``n_rows = 1``, ``s = 1``, ``δ = 1/s2``).
    """

    QG: torch.Tensor
    lG: torch.Tensor
    QA: torch.Tensor
    lA: torch.Tensor
    n_rows: float = 1.0
    name: str = "KFAC posterior precision"

    @property
    def complete(self) -> bool:
        """Both factors have a full eigenbasis (``k_G = d_G`` and ``k_A = d_A``)."""
        return self.QG.shape[1] == self.QG.shape[0] and self.QA.shape[1] == self.QA.shape[0]

    @property
    def numel(self) -> int:
        """``d_G · d_A``, the number of parameters of the block."""
        return self.QG.shape[0] * self.QA.shape[0]

    def precision_eigs(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``Λ`` ``(k_G, k_A)``: the eigenvalues of ``P`` in the span of ``Q_G ⊗ Q_A`` (must be > 0)."""
        return positive(scale * torch.outer(self.lG, self.lA) / self.n_rows + delta, self.name)

    def logdet(self, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``log det P`` (0-dim), differentiable in ``delta`` and ``scale``."""
        lam = self.precision_eigs(delta, scale)
        rest = self.numel - lam.numel()
        return lam.log().sum() + rest * positive(delta.reshape(1), "prior precision").log()[0]

    def sample(self, n: int, delta: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(n, d_G, d_A)`` draws of ``N(0, P⁻¹)`` (noise from ``generator``: see :func:`bayespeft.seed.randn`)."""
        lam = self.precision_eigs(delta, scale)
        QG, QA = self.QG, self.QA
        z = randn(n, QG.shape[0], QA.shape[0], generator=generator, dtype=QG.dtype, device=QG.device)
        zr = QG.T @ z @ QA
        if self.complete:
            return QG @ (zr * lam.rsqrt()) @ QA.T
        return z * delta.rsqrt() + QG @ (zr * (lam.rsqrt() - delta.rsqrt())) @ QA.T

    def _weighted(self, M: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``Σ_ij M_c,ij M_e,ij W_ij`` ``(B, C, C)`` for ``M`` ``(B, C, k_G, k_A)``."""
        lam = self.precision_eigs(delta, scale)
        W = 1.0 / lam if self.complete else 1.0 / lam - 1.0 / delta
        return torch.einsum("bcga,ga,bega->bce", M, W, M)

    def cov_from_jacobian(self, J: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``J Σ Jᵀ`` ``(B, C, C)`` for the block's Jacobians ``J`` ``(B, C, d_G, d_A)``."""
        cov = self._weighted(self.QG.T @ J @ self.QA, delta, scale)
        if not self.complete:
            cov = cov + torch.einsum("bcga,bega->bce", J, J) / delta
        return cov

    def cov_from_taps(self, a: torch.Tensor, g: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``J Σ Jᵀ`` ``(B, C, C)`` with ``J_c = Σ_t g_{c,t} a_tᵀ`` never formed when rotating first is cheaper.

        ``a`` ``(B, T, d_A)``: the (augmented) layer inputs; ``g`` ``(C, B, T, d_G)``: the output gradients of each
        logit. ``M`` is formed by rotating ``g``/``a`` first or ``J`` first, whichever costs fewer flops.
        """
        QG, QA = self.QG, self.QA
        C, B, T, dG = g.shape
        dA, kG, kA = a.shape[-1], QG.shape[1], QA.shape[1]
        rotate_first = C * T * dG * kG + T * dA * kA + C * T * kG * kA
        j_first = C * T * dG * dA + C * dG * dA * kG + C * kG * dA * kA
        J = None
        if rotate_first <= j_first:
            M = torch.einsum("cbtg,bta->bcga", g @ QG, a @ QA)
        else:
            J = torch.einsum("cbtg,bta->bcga", g, a)
            M = QG.T @ J @ QA
        cov = self._weighted(M, delta, scale)
        if not self.complete:
            gram_cost = T * T * dA + C * C * T * T * dG
            if J is None and gram_cost < C * T * dG * dA + C * C * dG * dA:
                Ka = a @ a.transpose(1, 2)  # (B, T, T)
                cov = cov + torch.einsum("bts,cbtg,ebsg->bce", Ka, g, g) / delta
            else:
                J = torch.einsum("cbtg,bta->bcga", g, a) if J is None else J
                cov = cov + torch.einsum("bcga,bega->bce", J, J) / delta
        return cov

    # ---- restriction (layer-wise Laplace) -----------------------------------------------------------------------
