"""``LaplacePosterior`` evidence path beyond one output (tests/MUTATION.md, pass 3, ``laplace/posterior.py``).

The evidence tests use one regression output, where ``N · D_out`` and ``N / D_out`` agree. Here ``D_out = 2``:
``y = X Wᵀ + N(0, σ²)`` with ``W ~ N(0, δ⁻¹ I)``; the outputs are independent Bayesian linear regressions, the
Laplace evidence is exact, and ``log Z = Σ_k log N(y_k; 0, σ² I + XXᵀ/δ)`` (scipy, summed by hand).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

import bayespeft.laplace as L

F64 = torch.float64


def _two_output_blr(ref, structure: str):
    torch.manual_seed(5)
    N, D, K, sigma, delta = 12, 3, 2, 0.5, 1.5
    X = torch.randn(N, D, dtype=F64)
    W_true = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]], dtype=F64)
    Y = X @ W_true.T + sigma * torch.randn(N, K, dtype=F64)
    P = X.T @ X / sigma**2 + delta * torch.eye(D, dtype=F64)
    W = torch.linalg.solve(P, X.T @ Y / sigma**2).T  # (K, D), the exact posterior mean per output
    model = nn.Linear(D, K, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(W)
    post = L.fit(model, ref.loader(X, Y, 4), structure=structure, likelihood="regression", sigma_noise=sigma,
                 prior_precision=delta)
    cov = sigma**2 * np.eye(N) + X.numpy() @ X.numpy().T / delta
    expected = sum(multivariate_normal.logpdf(Y[:, k].numpy(), mean=np.zeros(N), cov=cov) for k in range(K))
    return post, X, Y, W, sigma, expected


def record_progress_bars(monkeypatch) -> list[tuple[str, bool]]:
    """``(desc, enabled)`` of every progress bar ``laplace.posterior`` opens from now on (the bars still run)."""
    import bayespeft.laplace.posterior as posterior_module

    seen: list[tuple[str, bool]] = []
    real = posterior_module.progress_bar

    def record(it, *, desc, enabled):
        seen.append((desc, enabled))
        return real(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(posterior_module, "progress_bar", record)
    return seen


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_two_output_regression_log_likelihood_and_evidence(ref, structure):
    post, X, Y, W, sigma, expected = _two_output_blr(ref, structure)
    N, K = Y.shape
    loglik = -0.5 * float(((Y - X @ W.T) ** 2).sum()) / sigma**2 - N * K * np.log(sigma * np.sqrt(2 * np.pi))
    assert float(post.log_likelihood()) == pytest.approx(loglik, rel=1e-12)
    if structure == "full":  # the diagonal approximation is not exact; the full posterior is
        assert float(post.log_marginal_likelihood()) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("as_given", [lambda d: d, lambda d: [d], lambda d: np.float64(d), lambda d: torch.tensor(d)])
def test_prior_precision_passed_as_number_list_or_tensor_gives_the_closed_form(ref, as_given):
    """Fitted with δ = 7, evaluated at δ = 1.5 (the δ whose exact posterior mean is the MAP): the closed form."""
    torch.manual_seed(5)
    post, _, _, _, _, expected = _two_output_blr(ref, "full")
    post.prior_precision = 7.0
    assert float(post.log_marginal_likelihood(as_given(1.5))) == pytest.approx(expected, rel=1e-10)
    assert float(post.prior_precision) == 7.0  # evaluating at another δ does not change the stored one


def test_non_positive_prior_precision_without_gradient_is_refused(ref):
    post, *_ = _two_output_blr(ref, "full")
    for bad in (0.0, [-1.0], torch.tensor([-1.0], dtype=F64), torch.tensor(0.0)):
        with pytest.raises(ValueError, match=r"^prior precision must be > 0"):
            post.log_marginal_likelihood(bad)


def test_wrong_number_of_prior_precisions_names_the_groups(ref, mlp_data):
    """Two groups (``body.0``, ``head``): three values, with or without gradient, are refused by name."""
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    assert post.groups == ["body.0", "head"]
    msg = r"one value per group \(2: \['body.0', 'head'\]\.\.\.\), got shape \(3,\)"
    with pytest.raises(ValueError, match=msg):
        post.log_marginal_likelihood([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=msg):
        post.log_marginal_likelihood(torch.ones(3, dtype=F64, requires_grad=True))


def _hand_laplace_evidence(X, Y, W, sigma, delta):
    """``log p(Y|W)`` − ½ (δ‖W‖² − d log δ + log det(I_K ⊗ XᵀX/σ² + δ I)), differentiable in δ and σ."""
    N, K = Y.shape
    D = X.shape[1]
    loglik = -0.5 * ((Y - X @ W.T) ** 2).sum() / sigma**2 - N * K * torch.log(sigma * np.sqrt(2 * np.pi))
    P = torch.kron(torch.eye(K, dtype=F64), X.T @ X) / sigma**2 + delta * torch.eye(K * D, dtype=F64)
    return loglik - 0.5 * (delta * (W**2).sum() - K * D * torch.log(delta) + torch.logdet(P))


def _hand_adam(objective, init, n_steps, lr):
    params = [torch.tensor(float(np.log(v)), dtype=F64, requires_grad=True) for v in init]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(n_steps):
        opt.zero_grad()
        (-objective(*[p.exp() for p in params])).backward()
        opt.step()
    return [float(p.detach().exp()) for p in params]


def test_default_prior_optimisation_is_100_adam_steps_of_lr_0_1_on_the_evidence(ref):
    """From δ = 1e4 (far from the optimum: 100 steps do not converge, so 101 steps or another lr would differ)."""
    post, X, Y, W, sigma, _ = _two_output_blr(ref, "full")
    post.prior_precision = 1e4
    (want,) = _hand_adam(lambda d: _hand_laplace_evidence(X, Y, W, torch.tensor(sigma, dtype=F64), d), [1e4], 100, 0.1)
    got = post.optimize_prior()
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(want, rel=1e-9)
    assert post.sigma_noise == sigma


def test_tune_sigma_optimises_log_sigma_jointly(ref):
    post, X, Y, W, sigma, _ = _two_output_blr(ref, "full")
    post.prior_precision = 3.0
    want_delta, want_sigma = _hand_adam(lambda d, s: _hand_laplace_evidence(X, Y, W, s, d), [3.0, sigma], 40, 0.05)
    got = post.optimize_prior(tune_sigma=True, n_steps=40, lr=0.05)
    assert float(got[0]) == pytest.approx(want_delta, rel=1e-9)
    assert isinstance(post.sigma_noise, float) and post.sigma_noise == pytest.approx(want_sigma, rel=1e-9)
    assert abs(want_sigma - sigma) > 1e-3  # σ moved: the check above is not the starting value


def test_optimisation_keeps_one_prior_per_group_and_layerwise_defaults_off(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag", prior_precision=[2.0, 30.0])
    assert post.optimize_prior(n_steps=3).shape == (2,)  # per-group prior: both tuned, not only the first
    post.prior_precision = 5.0
    assert post.optimize_prior(n_steps=3).shape == (1,)  # scalar prior, layerwise=False by default: stays scalar


def test_prior_optimisation_messages_and_progress_switch(ref, mlp_data, monkeypatch):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    with pytest.raises(ValueError, match=r"^method must be 'marglik' or 'gridsearch', got 'newton'$"):
        post.optimize_prior("newton")
    with pytest.raises(ValueError, match=r"^tune_sigma applies to likelihood='regression' only$"):
        post.optimize_prior(tune_sigma=True)
    seen = record_progress_bars(monkeypatch)
    post.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=[1.0], progress=False)
    assert ("prior (grid)", False) in seen and all(enabled is False for _, enabled in seen)


def test_lbfgs_prior_optimisation_is_one_strong_wolfe_lbfgs_step_of_n_steps_iterations(ref):
    """Two iterations with lr 5 from δ = 1e3: the first step overshoots, so the strong-Wolfe line search shortens
    it (without it, or with the default 20 iterations, the result differs)."""
    post, X, Y, W, sigma, _ = _two_output_blr(ref, "full")
    post.prior_precision = 1e3
    log_delta = torch.tensor(float(np.log(1e3)), dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([log_delta], lr=5.0, max_iter=2, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -_hand_laplace_evidence(X, Y, W, torch.tensor(sigma, dtype=F64), log_delta.exp())
        loss.backward()
        return loss

    opt.step(closure)
    got = post.optimize_prior(optimizer="lbfgs", n_steps=2, lr=5.0)
    assert float(got[0]) == pytest.approx(float(log_delta.detach().exp()), rel=1e-9)
    assert abs(float(got[0]) - 1e3) > 1.0
    with pytest.raises(ValueError, match=r"^optimizer must be 'adam' or 'lbfgs', got 'sgd'$"):
        post.optimize_prior(optimizer="sgd")


def test_marglik_progress_switch_and_label(ref, mlp_data, monkeypatch):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    seen = record_progress_bars(monkeypatch)
    post.optimize_prior(n_steps=2, progress=False)
    post.optimize_prior(n_steps=2, progress=True)
    assert seen == [("prior (marglik)", False), ("prior (marglik)", True)]


def test_non_positive_prior_message_lists_at_most_eight_values(ref):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(9)]).double()
    X, y = torch.randn(6, 2, dtype=F64), torch.tensor([0, 1, 0, 1, 1, 0])
    post = L.fit(model, ref.loader(X, y), structure="diag")
    assert len(post.groups) == 9
    with pytest.raises(ValueError, match=r"^prior precision must be > 0, got \[(-1\.0, ){7}-1\.0\]$"):
        post.prior_precision = [-1.0] * 9
