"""Full posterior: the GLM predictive and sampling reuse one Cholesky factor per ``(H, δ, scale)``.

Independent answer: ``J (H/T + δ I)⁻¹ Jᵀ`` with ``torch.linalg.inv`` of the explicitly built precision and the
brute-force (``torch.func``) Jacobians and GGN, after every change the cache must notice: a new prior precision,
``H`` replaced, ``H`` updated in place.
"""

from __future__ import annotations

import torch

import bayespeft.laplace as L

T = 1.3


def dense_cov(J: torch.Tensor, H: torch.Tensor, delta: float) -> torch.Tensor:
    P = H / T + delta * torch.eye(H.shape[0], dtype=H.dtype)
    return torch.einsum("bcd,de,bke->bck", J, torch.linalg.inv(P), J)


def test_glm_cov_follows_prior_and_curvature_changes(ref, mlp_data) -> None:
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full", temperature=T, prior_precision=0.5)
    names = ref.trainable_names(model)
    J, H = ref.brute_jacobian(model, X, names), ref.brute_ggn(model, X, names)
    s = post.structure

    def cov() -> torch.Tensor:
        with torch.enable_grad():
            delta = post.prior_precision.expand(len(post.groups))
            return s.glm_cov(model, X, lambda m, b: (m(b), None), delta, post._scale())[1]

    for _ in range(2):  # the second call is served from the cache
        torch.testing.assert_close(cov(), dense_cov(J, H, 0.5), rtol=1e-8, atol=1e-10)
    post.prior_precision = 3.0
    torch.testing.assert_close(cov(), dense_cov(J, H, 3.0), rtol=1e-8, atol=1e-10)
    s.load_state_tensors({"H": 2 * H})  # H replaced
    torch.testing.assert_close(cov(), dense_cov(J, 2 * H, 3.0), rtol=1e-8, atol=1e-10)
    s.load_state_tensors({"H": 3 * H})  # replaced again by a fresh tensor (the same version counter, 0)
    torch.testing.assert_close(cov(), dense_cov(J, 3 * H, 3.0), rtol=1e-8, atol=1e-10)
    s.H.mul_(1 / 6)  # H updated in place: 0.5 · H
    torch.testing.assert_close(cov(), dense_cov(J, 0.5 * H, 3.0), rtol=1e-8, atol=1e-10)


def test_samples_follow_prior_changes(ref, mlp_data) -> None:
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full", temperature=T, prior_precision=0.5)
    H = ref.brute_ggn(model, X, ref.trainable_names(model))
    for delta in (0.5, 40.0):
        post.prior_precision = delta
        draws = post.sample(1, generator=torch.Generator().manual_seed(3)) - post.mean
        z = torch.randn(1, H.shape[0], generator=torch.Generator().manual_seed(3), dtype=H.dtype)
        chol = torch.linalg.cholesky(H / T + delta * torch.eye(H.shape[0], dtype=H.dtype))
        want = torch.linalg.solve_triangular(chol.T, z.T, upper=True).T  # L⁻ᵀ z, covariance P⁻¹
        torch.testing.assert_close(draws, want, rtol=1e-8, atol=1e-10)
