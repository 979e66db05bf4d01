"""Low-rank KFAC Laplace (Laplace-LoRA, Yang et al. 2024, arXiv:2308.13111).

Same posterior algebra as :mod:`bayespeft.laplace.kfac` (``H ≈ G ⊗ A / n_rows`` per ``nn.Linear``), but every
factor whose dimension exceeds ``lr_threshold`` is kept as a rank-``n_kfac`` root ``L`` (``A ≈ L Lᵀ``) updated by
incremental SVD over batches (:func:`bayespeft.laplace.factors.lowrank_update`). The discarded directions carry
only the prior: ``P = (Q_G ⊗ Q_A) diag(Λ) (Q_G ⊗ Q_A)ᵀ + δ (I − projection)``, so log-determinants, samples and
the GLM predictive use the ``1/δ`` identity terms documented in ``kfac.py``. Memory per layer is
``O((d_in + d_out) · n_kfac)`` instead of ``O(d_in² + d_out²)``; this is what makes KFAC over LoRA ``B`` matrices
of a 4096-wide LLM (``d_out = 4096``) affordable.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from bayespeft.laplace.base import STRUCTURES
from bayespeft.laplace.kfac import KfacStructure


@STRUCTURES.register("lowrank_kfac")
class LowRankKfacStructure(KfacStructure):
    """KFAC with rank-``n_kfac`` factors for dimensions above ``lr_threshold`` (defaults 10 and 100, as Laplace-LoRA)."""

    name = "lowrank_kfac"
    default_n_kfac = 10
    default_lr_threshold = 100

    def __init__(
        self,
        model: nn.Module,
        params,
        *,
        n_kfac: int | None = None,
        lr_threshold: int | None = None,
        bias: Literal["augment", "separate"] = "augment",
        **options: Any,
    ) -> None:
        if n_kfac is not None and n_kfac < 1:
            raise ValueError(f"n_kfac must be a positive rank, got {n_kfac}")
        super().__init__(model, params, n_kfac=n_kfac, lr_threshold=lr_threshold, bias=bias, **options)
