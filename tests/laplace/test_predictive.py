"""GLM predictive, samples and Monte-Carlo predictives against brute-force answers."""

from __future__ import annotations

import math

import pytest
import torch

import bayespeft.laplace as L
from bayespeft.laplace.predictive import mc_link_probs, probit_probs

STRUCTS = [("diag", {}), ("full", {}), ("kfac", {}), ("lowrank_kfac", {"n_kfac": 2, "lr_threshold": 3})]


@pytest.mark.parametrize("structure,opts", STRUCTS)
@pytest.mark.parametrize("net", ["mlp", "seq"])
def test_glm_covariance_equals_brute_force(ref, structure, opts, net):
    torch.manual_seed(0)
    if net == "mlp":
        model, X = ref.MLP().double(), torch.randn(12, 4, dtype=torch.float64)
    else:  # T = 4 tokens per example: exercises both KFAC contraction orders and the low-rank 1/δ terms
        model, X = ref.SeqNet().double(), torch.randn(12, 4, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    post = L.fit(model, ref.loader(X, y, 5), structure=structure, prior_precision=[0.5, 2.0, 1.5][: 2 if net == "mlp" else 3], **opts)
    J = ref.brute_jacobian(model, X[:7], post.param_names)
    cov_ref = J @ post.covariance() @ J.transpose(1, 2)
    f, cov = post.structure.glm_cov(model, (X[:7], y[:7]), post.forward_fn, post.prior_precision, post._scale())
    torch.testing.assert_close(cov, cov_ref, rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(f, model(X[:7]))
    torch.testing.assert_close(post.predict(X[:7]), probit_probs(f, cov_ref))


@pytest.mark.parametrize("structure,opts", STRUCTS)
def test_chunked_predictive_equals_unchunked(ref, mlp_data, structure, opts):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, **opts)
    torch.testing.assert_close(post.predict(X, chunk_size=3), post.predict(X, chunk_size=None))


@pytest.mark.parametrize("structure,opts", STRUCTS)
def test_sample_moments_match_covariance(ref, mlp_data, structure, opts):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, prior_precision=[2.0, 0.5], **opts)
    S = post.sample(40_000, generator=torch.Generator().manual_seed(0))
    cov = post.covariance()
    torch.testing.assert_close(S.mean(0), post.mean, atol=4 * cov.diagonal().sqrt().max().item() / 200, rtol=0)
    emp = torch.cov(S.T)
    scale = (cov.diagonal()[:, None] * cov.diagonal()[None, :]).sqrt()
    assert float(((emp - cov) / scale).abs().max()) < 0.05
    dicts = post.sample(2, generator=torch.Generator().manual_seed(0), as_dict=True)
    assert list(dicts[0]) == post.param_names and dicts[0]["head.weight"].shape == (3, 5)


def test_mc_link_and_weight_sampling_agree_with_exact_linear_head(ref, mlp_data):
    # with subset='last_layer' the logits are linear in θ, so the GLM is exact and the weight-space MC predictive,
    # the logit-space MC link and a brute-force MultivariateNormal average must agree
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full", subset="last_layer", prior_precision=0.3)
    gen = torch.Generator().manual_seed(0)
    p_w = post.predict(X[:4], method="mc", n_samples=20_000, generator=gen)
    p_l = post.predict(X[:4], link="mc", n_samples=20_000, generator=gen)
    J = ref.brute_jacobian(model, X[:4], post.param_names)
    cov = J @ post.covariance() @ J.transpose(1, 2)
    with torch.no_grad():
        f = model(X[:4])
    mvn = torch.distributions.MultivariateNormal(f, cov + 1e-12 * torch.eye(3, dtype=f.dtype))
    p_ref = torch.softmax(mvn.sample((20_000,)), -1).mean(0)
    torch.testing.assert_close(p_w, p_ref, atol=0.01, rtol=0)
    torch.testing.assert_close(p_l, p_ref, atol=0.01, rtol=0)
    # the model is restored to the MAP after weight sampling
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in model.head.parameters()]), post.mean)
    # probabilities (not logits) are averaged: differs from softmax of the mean logit
    assert float((p_l - torch.softmax(f, -1)).abs().max()) > 0.005


def test_probit_formula():
    f = torch.tensor([[1.0, -2.0]])
    cov = torch.tensor([[[4.0, 0.3], [0.3, 1.0]]])
    expect = torch.softmax(f / torch.sqrt(1 + math.pi / 8 * torch.tensor([4.0, 1.0])), -1)
    torch.testing.assert_close(probit_probs(f, cov), expect)
    p = mc_link_probs(f, cov, 100, torch.Generator().manual_seed(0))
    torch.testing.assert_close(p.sum(-1), torch.ones(1))


def test_regression_predict_mc_matches_glm_for_linear_model(ref):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    X, Y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    post = L.fit(model, ref.loader(X, Y), structure="kfac", likelihood="regression", sigma_noise=0.5)
    m1, v1 = post.predict(X[:3])
    m2, v2 = post.predict(X[:3], method="mc", n_samples=20_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m2, m1, atol=0.03, rtol=0)
    torch.testing.assert_close(v2, v1, rtol=0.05, atol=0)
    (mean, var), labels = post.predict_loader(ref.loader(X, Y))
    assert mean.shape == (10, 2) and var.shape == (10, 2) and bool((var > 0.25).all())
