"""``KronEig``: the one KFAC block posterior (used by the KFAC structures and by ``bayesian_lora``), against dense algebra.

Each case builds ``P = s · G ⊗ A / n_rows + δ I`` explicitly (``torch.kron``, ``slogdet``, ``inv``) from the same
factors, including low-rank factors (``k < d``), where the ``(d_G d_A − k_G k_A) log δ`` and ``1/δ`` terms matter.
"""

from __future__ import annotations

import pytest
import torch

from bayespeft.laplace.factors import eig_factor
from bayespeft.laplace.kfac import KronEig

DG, DA, N_ROWS, SCALE, DELTA = 4, 3, 5.0, 0.7, 1.3


def _root(d: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def case(kind: str) -> tuple[KronEig, torch.Tensor]:
    """(block, dense P) with G, A dense (``complete``) or kept as low-rank roots."""
    kg, ka = {"complete": (DG, DA), "lowrank_G": (2, DA), "lowrank_both": (2, 1)}[kind]
    rg, ra = _root(DG, kg if kg < DG else DG + 2, 1), _root(DA, ka if ka < DA else DA + 2, 2)
    G, A = rg @ rg.T, ra @ ra.T
    QG, lG = eig_factor(rg, lowrank=True) if kg < DG else eig_factor(G, lowrank=False)
    QA, lA = eig_factor(ra, lowrank=True) if ka < DA else eig_factor(A, lowrank=False)
    block = KronEig(QG, lG, QA, lA, n_rows=N_ROWS)
    assert block.complete == (kind == "complete")
    P = SCALE * torch.kron(G, A) / N_ROWS + DELTA * torch.eye(DG * DA, dtype=torch.float64)
    return block, P


KINDS = ["complete", "lowrank_G", "lowrank_both"]
s_, d_ = torch.tensor(SCALE, dtype=torch.float64), torch.tensor(DELTA, dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_logdet_equals_dense_slogdet(kind: str) -> None:
    block, P = case(kind)
    torch.testing.assert_close(block.logdet(d_, s_), torch.linalg.slogdet(P)[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_cov_from_jacobian_equals_dense_j_sigma_jt(kind: str) -> None:
    block, P = case(kind)
    J = torch.randn(2, 3, DG, DA, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Jf = J.reshape(2, 3, -1)  # row-major vec, the order of G ⊗ A
    expected = Jf @ torch.linalg.inv(P) @ Jf.mT
    torch.testing.assert_close(block.cov_from_jacobian(J, d_, s_), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 4])
def test_cov_from_taps_equals_dense_with_j_from_activations_and_output_grads(kind: str, T: int) -> None:
    block, P = case(kind)
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(2, T, DA, generator=gen, dtype=torch.float64)  # (B, T, dA)
    g = torch.randn(3, 2, T, DG, generator=gen, dtype=torch.float64)  # (C, B, T, dG)
    J = torch.einsum("cbtg,bta->bcga", g, a).reshape(2, 3, -1)
    expected = J @ torch.linalg.inv(P) @ J.mT
    torch.testing.assert_close(block.cov_from_taps(a, g, d_, s_), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_are_a_linear_map_of_the_noise_with_covariance_p_inverse(kind: str) -> None:
    """Recover the map ``x = M z`` by least squares from the same generator's noise; then ``M Mᵀ = P⁻¹``."""
    block, P = case(kind)
    n = 64
    x = block.sample(n, d_, s_, torch.Generator().manual_seed(5)).reshape(n, -1)
    z = torch.randn(n, DG, DA, generator=torch.Generator().manual_seed(5), dtype=torch.float64).reshape(n, -1)
    M = torch.linalg.lstsq(z, x).solution.T
    torch.testing.assert_close(z @ M.T, x, rtol=1e-10, atol=1e-10)  # exactly linear in the drawn noise
    torch.testing.assert_close(M @ M.T, torch.linalg.inv(P), rtol=1e-9, atol=1e-10)


def test_non_positive_precision_warns_then_raises() -> None:
    block, _ = case("lowrank_G")
    with pytest.warns(RuntimeWarning, match="adding jitter"), \
            pytest.raises(ValueError, match="not positive definite even after jitter"):
        block.logdet(torch.tensor(-5.0, dtype=torch.float64), s_)
