"""Full posterior, one shared prior precision: the evidence from cached eigenvalues of ``H`` (``O(d)`` per ``δ``).

Independent answer: ``torch.linalg.slogdet`` of the explicitly built precision ``P = H_brute / T + δ I`` with
``H_brute`` the brute-force (``torch.func``) GGN, and an Adam loop on that dense formula for the optimum.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bayespeft.laplace as L

T = 1.7  # a temperature != 1 so that the scale of H is exercised


@pytest.fixture
def full_post(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full", temperature=T, prior_precision=0.5)
    names = ref.trainable_names(model)
    H = ref.brute_ggn(model, X, names)
    with torch.no_grad():
        nll = F.cross_entropy(model(X), y, reduction="sum")
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return post, H, nll, theta


def dense_evidence(delta, H, nll, theta):
    """``−nll/T − ½ δ|θ|² + ½ d log δ − ½ log det(H/T + δ I)`` with ``slogdet`` of the built matrix."""
    d = H.shape[0]
    sign, logdet = torch.linalg.slogdet(H / T + delta * torch.eye(d, dtype=H.dtype))
    assert float(sign.detach()) == 1.0
    return -nll / T - 0.5 * (delta * theta.square().sum() - d * torch.log(delta) + logdet)


@pytest.mark.parametrize("delta", [1e-3, 0.3, 1.0, 7.0, 250.0])
def test_shared_prior_evidence_and_gradient_equal_dense_slogdet(full_post, delta):
    post, H, nll, theta = full_post
    d = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    got = post.log_marginal_likelihood(d)
    (g,) = torch.autograd.grad(got, d)
    d2 = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    want = dense_evidence(d2, H, nll, theta)
    (gw,) = torch.autograd.grad(want, d2)
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(g, gw, rtol=1e-8, atol=1e-9)
    # the per-group (Cholesky) path with the same value everywhere agrees
    per_group = post.log_marginal_likelihood(torch.full((len(post.groups),), delta, dtype=torch.float64))
    torch.testing.assert_close(per_group, want.detach(), rtol=1e-10, atol=1e-9)


def test_marglik_optimum_equals_dense_path_and_uses_one_eigendecomposition(full_post, monkeypatch):
    post, H, nll, theta = full_post
    calls = {"eigvalsh": 0, "cholesky": 0}
    eigvalsh, cholesky_ex = torch.linalg.eigvalsh, torch.linalg.cholesky_ex

    def counting_eigvalsh(*a, **k):
        calls["eigvalsh"] += 1
        return eigvalsh(*a, **k)

    def counting_cholesky_ex(*a, **k):
        calls["cholesky"] += 1
        return cholesky_ex(*a, **k)

    monkeypatch.setattr(torch.linalg, "eigvalsh", counting_eigvalsh)
    monkeypatch.setattr(torch.linalg, "cholesky_ex", counting_cholesky_ex)
    got = float(post.optimize_prior("marglik", n_steps=120, lr=0.1)[0])
    monkeypatch.undo()
    assert calls == {"eigvalsh": 1, "cholesky": 0}

    log_delta = torch.tensor(0.5, dtype=torch.float64).log().requires_grad_(True)
    opt = torch.optim.Adam([log_delta], lr=0.1)
    for _ in range(120):
        opt.zero_grad()
        (-dense_evidence(log_delta.exp(), H, nll, theta)).backward()
        opt.step()
    want = float(log_delta.detach().exp())
    assert got == pytest.approx(want, rel=1e-8)
    # and it is the maximiser: the evidence's derivative in log δ vanishes there
    ld = torch.tensor(want, dtype=torch.float64).log().requires_grad_(True)
    (g,) = torch.autograd.grad(dense_evidence(ld.exp(), H, nll, theta), ld)
    assert abs(float(g)) < 1e-2


def test_eigenvalue_cache_follows_the_curvature(full_post):
    post, H, nll, theta = full_post
    delta = torch.tensor(0.8, dtype=torch.float64)
    torch.testing.assert_close(post.log_marginal_likelihood(delta), dense_evidence(delta, H, nll, theta))
    post.structure.H.mul_(3.0)  # in place
    torch.testing.assert_close(post.log_marginal_likelihood(delta), dense_evidence(delta, 3 * H, nll, theta))
    post.structure.load_state_tensors({"H": H * 0.25})  # replaced
    torch.testing.assert_close(post.log_marginal_likelihood(delta), dense_evidence(delta, 0.25 * H, nll, theta))
    # a restriction has its own curvature (the head block), not the parent's cached spectrum
    head = [n for n in post.param_names if n.startswith("head")]
    sub = post.restrict(head)
    k = sum(p.numel() for n, p in post.model.named_parameters() if n.startswith("head"))
    Hs = 0.25 * H[-k:, -k:]
    sign, logdet = torch.linalg.slogdet(Hs / T + delta * torch.eye(k, dtype=H.dtype))
    want = -nll / T - 0.5 * (delta * theta[-k:].square().sum() - k * torch.log(delta) + logdet)
    torch.testing.assert_close(sub.log_marginal_likelihood(delta), want)


def test_indefinite_precision_falls_back_to_the_jittered_cholesky(full_post):
    post, H, nll, theta = full_post
    lam, Q = torch.linalg.eigh(H)
    delta = torch.tensor(0.1, dtype=torch.float64)
    # H/T + δ I gets the eigenvalue −1e-3 · mean diag(H/T): negative, but within the jitter schedule's reach
    lam[0] = -(delta + 1e-3 * H.diagonal().mean() / T) * T
    post.structure.load_state_tensors({"H": (Q * lam) @ Q.T})
    with pytest.warns(RuntimeWarning, match="not positive definite; adding jitter"):
        got = post.log_marginal_likelihood(delta)
    with pytest.warns(RuntimeWarning, match="not positive definite; adding jitter"):
        want = post.log_marginal_likelihood(delta.expand(len(post.groups)).clone())
    torch.testing.assert_close(got, want)
