"""Symmetric PSD factors kept dense or as a low-rank square root, and their eigendecompositions.

Low rank (Laplace-LoRA, Yang et al. 2024, arXiv:2308.13111, App. "low-rank KFAC"): a factor ``F = Σ_b X_bᵀ X_b``
(``X_b`` ``(rows_b, d)`` the batch's activations or output gradients) of dimension ``d > lr_threshold`` is kept
as ``L`` ``(d, k)`` with ``L Lᵀ ≈ F``. Each batch updates it by incremental SVD: the best rank-``k`` approximation
of ``L Lᵀ + X_bᵀ X_b = [L, X_bᵀ][L, X_bᵀ]ᵀ`` is ``U_k S_k`` from the thin SVD of ``[L, X_bᵀ]`` (when
``k + rows_b < d``) or from the eigendecomposition of the ``d × d`` sum otherwise. Since ``F`` is a sum over the
dataset, no rescaling between batches is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Dense decompositions of matrices up to this side run on one thread (see :func:`small_linalg`).
SMALL_LINALG_MAX_SIDE = 2048


@contextmanager
def small_linalg(side: int = 0) -> Iterator[None]:
    """Run the enclosed eigh/svd/cholesky of a ``side``-sized matrix on one CPU thread.

    LAPACK's multi-threaded path for factors of a few hundred rows is slower than one thread, and on a busy
    machine dramatically so (measured here: a 192x192 ``eigh`` took 340-1700 ms with 2 threads vs 7.6 ms with one;
    it was 64 % of a 12-layer KFAC fit). Larger matrices keep the configured thread count.
    """
    n = torch.get_num_threads()
    if side > SMALL_LINALG_MAX_SIDE or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def lowrank_update(L: torch.Tensor | None, X: torch.Tensor, k: int) -> torch.Tensor:
    """Return ``L'`` ``(d, k')`` (``k' = min(k, rank)``) with ``L' L'ᵀ`` the best rank-k approximation of ``L Lᵀ + Xᵀ X``."""
    Xt = X.transpose(0, 1)
    M = Xt if L is None else torch.cat([L, Xt], dim=1)
    d, m = M.shape
    if m < d:
        with small_linalg(d):
            U, S, _ = torch.linalg.svd(M, full_matrices=False)
        k = min(k, S.shape[0])
        return U[:, :k] * S[:k]
    with small_linalg(d):
        evals, evecs = torch.linalg.eigh(M @ M.transpose(0, 1))
    evals, evecs = evals.flip(0)[:k].clamp_min(0), evecs.flip(1)[:, :k]
    return evecs * evals.sqrt()


def eig_factor(F: torch.Tensor, lowrank: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition ``(Q (d, k), λ (k,))`` of a dense PSD factor (``k = d``) or of ``L Lᵀ`` (``k ≤ rank L``).

    Tiny negative eigenvalues from round-off are clamped to 0.
    """
    with small_linalg(F.shape[0]):
        if lowrank:
            U, S, _ = torch.linalg.svd(F, full_matrices=False)
            return U, S.square()
        evals, evecs = torch.linalg.eigh(0.5 * (F + F.transpose(0, 1)))
    return evecs, evals.clamp_min(0)
