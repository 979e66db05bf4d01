"""``KronEig`` names what is not positive definite (tests/MUTATION.md, ``laplace/kfac.py``).

``test_kron_block.py`` checks that a non-positive precision warns and then raises, not which quantity the message
names: the block's eigenvalues ``Λ`` (the block's ``name``) or, for a low-rank block, the prior precision ``δ``
of the directions outside ``Q_G ⊗ Q_A``.
"""

from __future__ import annotations

import pytest
import torch

from bayespeft.laplace.kfac import KronEig

F64 = torch.float64


def _lowrank_block(**kw):
    """G of rank 2 in d_G = 3 (λ_G = 1, 2), A complete in d_A = 2 (λ_A = 1, 3)."""
    eye3 = torch.eye(3, dtype=F64)
    return KronEig(eye3[:, :2], torch.tensor([1.0, 2.0], dtype=F64), torch.eye(2, dtype=F64),
                   torch.tensor([1.0, 3.0], dtype=F64), **kw)


def test_negative_prior_precision_outside_the_span_is_named():
    """δ = −0.5: Λ = λ_G λ_A − 0.5 > 0, but the (3·2 − 2·2) = 2 directions outside the span have precision δ."""
    block = _lowrank_block()
    with pytest.warns(RuntimeWarning, match=r"^prior precision is not positive definite"), \
            pytest.raises(ValueError, match=r"^prior precision is not positive definite even after jitter"):
        block.logdet(torch.tensor(-0.5, dtype=F64), torch.tensor(1.0, dtype=F64))


def test_negative_block_eigenvalues_name_the_block():
    block = _lowrank_block(name="block q_proj")
    with pytest.warns(RuntimeWarning, match=r"^block q_proj is not positive definite"), \
            pytest.raises(ValueError, match=r"^block q_proj is not positive definite even after jitter"):
        block.precision_eigs(torch.tensor(-10.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    with pytest.warns(RuntimeWarning, match=r"^KFAC posterior precision is not"), pytest.raises(ValueError):
        _lowrank_block().logdet(torch.tensor(-10.0, dtype=F64), torch.tensor(1.0, dtype=F64))
