"""The one jittered Cholesky (``bayespeft.laplace.linalg``) and bayesian-lora's ``stable_cholesky`` built on it.

References are independent of the code under test: the factor must reproduce ``M + jitter·I`` for the jitter the
schedule predicts by hand (from the matrix's known smallest eigenvalue), and ``stable_cholesky`` is compared with the
installed bayesian-lora 0.0.6 on the same inputs.
"""

from __future__ import annotations

import inspect
import warnings

import bayesian_lora
import bayesian_lora.main
import pytest
import torch

import bayespeft.laplace.bayesian_lora as ours
from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters


def indefinite(d: int, neg: float) -> torch.Tensor:
    """``I - (1 + neg)/d · 1 1ᵀ`` (float64): eigenvalues 1 (d-1 times) and ``-neg``; constant diagonal ``1 - (1+neg)/d``."""
    return torch.eye(d, dtype=torch.float64) - (1.0 + neg) / d * torch.ones(d, d, dtype=torch.float64)


def spd(d: int, seed: int) -> torch.Tensor:
    x = torch.randn(d, d + 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x @ x.T / x.shape[1]


def test_relative_schedule_is_zero_then_geometric_in_the_mean_absolute_diagonal() -> None:
    m = torch.diag(torch.tensor([2.0, -4.0, 6.0], dtype=torch.float64))  # mean |diag| = 4
    got = [float(j.reshape(-1)[0]) for j in relative_jitters(m, first=1e-6, factor=10.0, tries=3)]
    assert got == pytest.approx([0.0, 4e-6, 4e-5, 4e-4], rel=1e-12)
    batch = torch.stack([torch.eye(2, dtype=torch.float64), 3 * torch.eye(2, dtype=torch.float64)])
    first = list(relative_jitters(batch, first=0.5, factor=2.0, tries=1))[1]
    assert first.reshape(-1).tolist() == [0.5, 1.5]  # per matrix
    zero = list(relative_jitters(torch.zeros(2, 2), first=1.0, factor=10.0, tries=1, floor=1e-3))[1]
    assert float(zero) == pytest.approx(1e-3)


def test_positive_definite_matrix_gets_no_jitter() -> None:
    m = spd(5, 0)
    L = jittered_cholesky(m, relative_jitters(m, first=1e-6, factor=10.0, tries=5))
    torch.testing.assert_close(L @ L.T, m, rtol=0, atol=1e-13)
    assert torch.equal(L, torch.tril(L))


def test_needs_jitter_picks_the_first_sufficient_step_and_warns() -> None:
    """Eigenvalue -1e-9, mean diag 0.75 (d=4): jitters 7.5e-11, 7.5e-10 are too small, 7.5e-9 is the first to work."""
    m = indefinite(4, 1e-9)
    s = float(m.diagonal().mean())
    with pytest.warns(RuntimeWarning, match="test matrix is not positive definite; adding jitter"):
        L = jittered_cholesky(m, relative_jitters(m, first=1e-10, factor=10.0, tries=6), what="test matrix", warn=True)
    expected = m + 1e-8 * s * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(L @ L.T, expected, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(L @ L.T).min()) > 0


def test_error_names_the_matrix_and_the_fix_when_no_jitter_is_enough() -> None:
    with pytest.raises(ValueError, match=r"precision of shape \(3, 3\) is not positive definite even after jitter "
                                         r"\(largest jitter tried 0\.01\); use a positive prior"):
        jittered_cholesky(-torch.eye(3), relative_jitters(-torch.eye(3), first=1e-6, factor=10.0, tries=5),
                          what="precision", fix="use a positive prior")


def test_batched_matrices_share_the_step() -> None:
    good, bad = spd(4, 1), indefinite(4, 1e-9)
    L = jittered_cholesky(torch.stack([good, bad]), relative_jitters(torch.stack([good, bad]), 1e-10, 10.0, 6))
    s = torch.stack([good, bad]).diagonal(dim1=-2, dim2=-1).abs().mean(-1)
    for i, m in enumerate((good, bad)):  # the step that fixes `bad` (1e-8 relative) is applied to both
        torch.testing.assert_close(L[i] @ L[i].T, m + 1e-8 * s[i] * torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)


# ---- bayesian-lora's stable_cholesky -----------------------------------------------------------------------------
def _params(fn) -> list[tuple[str, object, object]]:
    """(name, kind, default) of every parameter (annotations differ: bayesian-lora uses jaxtyping)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_stable_cholesky_has_the_upstream_signature() -> None:
    assert _params(ours.stable_cholesky) == _params(bayesian_lora.stable_cholesky)


def test_upstream_example_imports_resolve_with_the_same_signatures() -> None:
    """bayesian-lora's examples/example_usage.py imports these; only its import lines need to change."""
    names = ["calculate_kronecker_factors", "cholesky_decompose_small_factors", "model_evidence", "variance",
             "stable_cholesky"]
    for name in names:
        assert name in ours.__all__
        theirs = _params(getattr(bayesian_lora, name))
        assert _params(getattr(ours, name))[: len(theirs)] == theirs, name  # ours may add keyword-only extensions
    assert _params(ours.jacobian_mean) == _params(bayesian_lora.main.jacobian_mean)


@pytest.mark.parametrize("case", ["spd", "needs_jitter", "batched_f32"])
def test_stable_cholesky_matches_upstream(case: str) -> None:
    if case == "spd":
        k = spd(6, 3)
    elif case == "needs_jitter":
        k = indefinite(4, 1e-6)
    else:  # what the upstream example feeds it: a batch of (C, C) logit covariances in float32
        k = torch.stack([spd(3, 4), spd(3, 5), torch.zeros(3, 3, dtype=torch.float64)]).float()
    torch.testing.assert_close(ours.stable_cholesky(k), bayesian_lora.stable_cholesky(k), rtol=1e-5, atol=1e-6)


def test_stable_cholesky_property_l_lt_is_k_plus_its_jitter() -> None:
    """``K = I - (1+δ)/d 11ᵀ`` has eigenvalue -δ and constant diagonal c; try i adds ``(1e-8·c + 1e-8)·1.1^i``.

    δ is placed between tries 41 and 42 (5 % from either), so the first success is i = 42, found by hand.
    """
    d = 4
    c_of = 1 - 1 / d  # diagonal for tiny δ (the δ/d correction is far below the 5 % margin)
    delta = 1e-8 * (c_of + 1) * 1.1**41.5
    k = indefinite(d, delta)
    c = float(k[0, 0])
    jit = (1e-8 * c + 1e-8) * 1.1**42
    L = ours.stable_cholesky(k)
    torch.testing.assert_close(L @ L.T, k + jit * torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (1e-8 * c + 1e-8) * 1.1**41 < delta < jit  # the hand-computed bracket
    pd = spd(3, 7)
    Lp = ours.stable_cholesky(pd, mult_eps=1e-3, abs_eps=1e-4)  # PD input: jittered on the first try already
    torch.testing.assert_close(Lp @ Lp.T, pd + torch.diag(1e-3 * pd.diagonal() + 1e-4), rtol=0, atol=1e-12)


def test_stable_cholesky_raises_after_max_tries_like_upstream() -> None:
    k = -torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError):
        bayesian_lora.stable_cholesky(k, max_tries=3)
    with pytest.raises(ValueError, match="not positive definite even after jitter"), warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings: bayesian-lora does not warn either
        ours.stable_cholesky(k, max_tries=3)
