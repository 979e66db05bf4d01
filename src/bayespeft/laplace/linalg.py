r"""Cholesky factors of (nearly) positive-definite matrices with an escalating diagonal jitter: the one copy.

:func:`jittered_cholesky` returns the lower factor ``L`` of the first shifted matrix of a schedule that factorises,

.. math::  L L^\top = M + \mathrm{diag}(j_i), \qquad i = \min\{i : M + \mathrm{diag}(j_i) \succ 0\},

for ``M`` ``(..., d, d)`` (a batch of matrices shares the step ``i``: it stops when every matrix factorises) and
``j_i`` a scalar, ``(..., 1)`` or ``(..., d)`` (added to the diagonal). Two schedules are used in the package:

* :func:`relative_jitters`: ``0`` (no jitter first), then ``first · factor^k · s`` for ``k = 0, 1, …, tries-1`` with
  ``s = mean |diag M|`` per matrix (at least ``floor``), i.e. scale-free: KFAC factor roots, logit covariances of
  the MC predictive, the full Laplace precision;
* bayesian-lora's ``stable_cholesky`` (``bayespeft.laplace.bayesian_lora.stable_cholesky``):
  ``j_i = mult_eps·1.1^i · diag(M) + abs_eps·1.1^i``, jittered from the first try.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

__all__ = ["jittered_cholesky", "relative_jitters"]


def relative_jitters(matrix: Tensor, first: float, factor: float, tries: int, floor: float = 1e-30) -> Iterator[Tensor]:
    """The schedule ``0, first·s, first·factor·s, …, first·factor^(tries-1)·s``; ``s`` ``(..., 1)`` = mean |diag| (>= floor)."""
    yield torch.zeros((), dtype=matrix.dtype, device=matrix.device)
    scale = matrix.diagonal(dim1=-2, dim2=-1).abs().mean(-1, keepdim=True).clamp_min(floor)
    for k in range(tries):
        yield first * factor**k * scale


def jittered_cholesky(matrix: Tensor, jitters: Iterable[Tensor | float], *, what: str = "matrix", fix: str = "",
                      warn: bool = False) -> Tensor:
    """Lower Cholesky factor ``L`` ``(..., d, d)`` of ``matrix + diag(j)`` for the first ``j`` of ``jitters`` that works.

    Args:
        matrix: ``(..., d, d)`` symmetric matrices (only the lower triangle is read, as by ``torch.linalg.cholesky``).
        jitters: the schedule; each entry broadcasts to ``(..., d)`` and is added to the diagonal (``0``: none).
        what: the matrix's name in the warning and error messages.
        fix: what the user can do, appended to the error message.
        warn: emit a ``RuntimeWarning`` before every try with a non-zero jitter.

    Raises:
        ValueError: no entry of the schedule makes every matrix positive definite.
    """
    last: Tensor | None = None
    for j in jitters:
        j = torch.as_tensor(j, dtype=matrix.dtype, device=matrix.device)
        shifted = matrix
        if bool((j != 0).any()):
            if warn:
                warnings.warn(f"{what} is not positive definite; adding jitter {float(j.abs().max()):.3g} to the diagonal",
                              RuntimeWarning, stacklevel=3)
            shifted = matrix + torch.diag_embed(j.expand(matrix.shape[:-1]))
        chol, info = torch.linalg.cholesky_ex(shifted)
        if int(info.max()) == 0:
            return chol
        last = j
    tried = f" (largest jitter tried {float(last.abs().max()):.3g})" if last is not None else ""
    raise ValueError(f"{what} of shape {tuple(matrix.shape)} is not positive definite even after jitter{tried}"
                     + (f"; {fix}" if fix else ""))
