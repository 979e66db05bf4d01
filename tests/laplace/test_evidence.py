"""Evidence and posterior against closed forms (Bayesian linear regression) and laplace-torch 0.3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

import bayespeft.laplace as L


@pytest.fixture
def blr():
    torch.manual_seed(0)
    N, D, sigma, delta = 15, 3, 0.4, 2.0
    X = torch.randn(N, D, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64) + sigma * torch.randn(N, dtype=torch.float64)
    P = X.T @ X / sigma**2 + delta * torch.eye(D, dtype=torch.float64)
    mean = torch.linalg.solve(P, X.T @ y / sigma**2)
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(mean[None])
    return model, X, y, sigma, delta, P, mean


@pytest.mark.parametrize("structure", ["full", "kfac"])
def test_linear_gaussian_posterior_and_evidence_are_exact(ref, blr, structure):
    model, X, y, sigma, delta, P, mean = blr
    post = L.fit(model, ref.loader(X, y, 4), structure=structure, likelihood="regression", sigma_noise=sigma, prior_precision=delta)
    torch.testing.assert_close(post.mean, mean)
    torch.testing.assert_close(post.covariance(), torch.linalg.inv(P))
    evidence = multivariate_normal.logpdf(
        y.numpy(), mean=np.zeros(len(y)), cov=sigma**2 * np.eye(len(y)) + X.numpy() @ X.numpy().T / delta
    )
    assert float(post.log_marginal_likelihood()) == pytest.approx(evidence, rel=1e-10)
    mu, var = post.predict(X[:5])
    torch.testing.assert_close(mu[:, 0], X[:5] @ mean)
    torch.testing.assert_close(var[:, 0], torch.einsum("nd,de,ne->n", X[:5], torch.linalg.inv(P), X[:5]) + sigma**2)


def test_changing_sigma_after_fit_rescales_curvature(ref, blr):
    model, X, y, sigma, delta, P, mean = blr
    post = L.fit(model, ref.loader(X, y), structure="full", likelihood="regression", sigma_noise=1.0, prior_precision=delta)
    got = float(post.log_marginal_likelihood(sigma_noise=sigma))
    cov = sigma**2 * np.eye(len(y)) + X.numpy() @ X.numpy().T / delta
    ref_val = multivariate_normal.logpdf(y.numpy(), mean=np.zeros(len(y)), cov=cov)
    # the MAP is the sigma-posterior mean, so the Laplace evidence at that sigma is exact
    assert got == pytest.approx(ref_val, rel=1e-10)


@pytest.mark.parametrize("structure", ["diag", "kfac", "lowrank_kfac", "full"])
def test_marglik_gradient_matches_finite_differences(ref, mlp_data, structure):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, n_kfac=2 if structure == "lowrank_kfac" else None, lr_threshold=3 if structure == "lowrank_kfac" else None)
    delta = torch.tensor([0.7, 1.9], dtype=torch.float64, requires_grad=True)  # one per module group
    assert post.groups == ["body.0", "head"]
    lml = post.log_marginal_likelihood(delta)
    (grad,) = torch.autograd.grad(lml, delta)
    eps = 1e-6
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        fd = (post.log_marginal_likelihood(delta.detach() + e) - post.log_marginal_likelihood(delta.detach() - e)) / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("layerwise", [False, True])
def test_prior_optimisation_increases_evidence(ref, mlp_data, layerwise):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="kfac", prior_precision=50.0)
    before = float(post.log_marginal_likelihood())
    delta = post.optimize_prior("marglik", layerwise=layerwise, n_steps=150, lr=0.2)
    after = float(post.log_marginal_likelihood())
    assert after > before + 1.0
    assert delta.shape == ((2,) if layerwise else (1,))
    # stationary point: the gradient in log δ is ~0
    ld = delta.log().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(post.log_marginal_likelihood(ld.exp()), ld)
    assert float(g.abs().max()) < 0.05


def test_gridsearch_picks_lowest_validation_nll(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    grid = [0.01, 1.0, 100.0]
    best = post.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=grid)
    nlls = []
    for d in grid:
        post.prior_precision = d
        p = post.predict(X)
        nlls.append(float(-p[torch.arange(20), y].log().mean()))
    assert float(best) == grid[int(np.argmin(nlls))]
    with pytest.raises(ValueError, match="needs val_loader"):
        post.optimize_prior("gridsearch")


def test_gridsearch_scores_with_the_predictive_it_is_given(ref, mlp_data, monkeypatch):
    """``optimize_prior("gridsearch", link="mc", ...)`` scores each δ under that predictive, not the default probit."""
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    seen = []
    real = post.predict_loader

    def spy(loader, progress=None, **kwargs):
        seen.append(kwargs)
        return real(loader, progress=progress, **kwargs)

    monkeypatch.setattr(post, "predict_loader", spy)
    post.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=[0.1, 10.0], link="mc", n_samples=3)
    assert seen == [{"link": "mc", "n_samples": 3}] * 2
    seen.clear()
    post.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=[0.1, 10.0], pred_method="mc", n_samples=2)
    assert seen == [{"method": "mc", "n_samples": 2}] * 2  # predict's ``method``, which optimize_prior's own shadows
    with pytest.raises(ValueError, match=r"takes no predictive options \(pred_method, link\); they apply to"):
        post.optimize_prior("marglik", pred_method="mc", link="mc")


@pytest.mark.parametrize("backend", ["AsdlGGN", "CurvlinopsGGN"])
def test_same_numbers_as_laplace_torch(ref, mlp_data, backend):
    laplace = pytest.importorskip("laplace")
    from laplace import curvature

    model, X, y = mlp_data
    model = nn.Sequential(model.body[0], model.body[1], model.head)  # same parameters, plain Sequential
    dl = ref.loader(X, y)
    be = getattr(curvature, backend)
    la = laplace.KronLaplace(model, "classification", prior_precision=0.5, backend=be)
    la.fit(dl)
    ours = L.fit(model, dl, structure="kfac", bias="separate", prior_precision=0.5)
    # Kronecker factors: laplace-torch blocks [G, A/N] (weights) and [G] (bias) in module order
    theirs = [[(Q * lam) @ Q.T for Q, lam in zip(Qs, ls)] for Qs, ls in zip(la.H.eigenvectors, la.H.eigenvalues)]
    mine = []
    for F in ours.structure.factors.values():
        mine.append([F.G, F.A / F.n_rows] if F.A.shape[0] > 1 else [F.G * F.A[0, 0] / F.n_rows])
    for t_blk, m_blk in zip(theirs, mine, strict=True):
        for t, m in zip(t_blk, m_blk, strict=True):
            torch.testing.assert_close(t, m, rtol=1e-8, atol=1e-10)
    assert float(ours.log_marginal_likelihood()) == pytest.approx(float(la.log_marginal_likelihood()), rel=1e-9)
    torch.testing.assert_close(ours.predict(X[:6]), la(X[:6], pred_type="glm", link_approx="probit"), rtol=1e-9, atol=1e-10)

    ld = laplace.DiagLaplace(model, "classification", prior_precision=0.5, backend=be)
    ld.fit(dl)
    od = L.fit(model, dl, structure="diag", prior_precision=0.5)
    torch.testing.assert_close(od.structure.H, ld.H, rtol=1e-9, atol=1e-12)
    assert float(od.log_marginal_likelihood()) == pytest.approx(float(ld.log_marginal_likelihood()), rel=1e-9)
    torch.testing.assert_close(od.predict(X[:6]), ld(X[:6], pred_type="glm", link_approx="probit"), rtol=1e-9, atol=1e-10)
