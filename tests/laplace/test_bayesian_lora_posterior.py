"""Evidence, linearised variance and predictive of the bayesian-lora drop-in against independent answers.

Independent answers: the dense Laplace formulas (``torch.kron``, ``slogdet``, explicit inverse) with Jacobians from
``torch.func.jacrev`` on a functional re-implementation of the net, the bayesian-lora package's own ``variance``
where its conventions agree (LoRA-shaped factors), and 1-D quadrature for the predictive.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import bayesian_lora
import bayesian_lora.main
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.func import jacrev

from bayespeft.laplace.bayesian_lora import (
    cholesky_decompose_small_factors,
    jacobian_mean,
    linearized_predictive,
    model_evidence,
    variance,
)

B, C = 3, 4


def psd(d: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, rank or d + 2, generator=g, dtype=torch.float64)
    return x @ x.T / x.shape[1]


def lowrank_root(d: int, k: int, seed: int) -> torch.Tensor:
    return torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(3, 5)
        self.fc2 = nn.Linear(5, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def roots_mlp() -> tuple[dict, dict]:
    """fc1: dense A (4x4) and S (5x5); fc2: low-rank A root (6x2), dense S (4x4). Returns (roots, dense)."""
    a1, s1, s2_ = psd(4, 1), psd(5, 2), psd(C, 3)
    ra2 = lowrank_root(6, 2, 4)
    dense = {"fc1": (a1, s1), "fc2": (ra2 @ ra2.T, s2_)}
    factors = {"fc1": (a1.float(), s1.float()), "fc2": (ra2.float(), s2_.float())}
    roots = cholesky_decompose_small_factors(factors, 512, "cpu", torch.float64)
    return roots, dense


def flat_layer(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-major vec of [W | b] (bias column last): the ordering of S ⊗ A."""
    return torch.cat([w, b[:, None]], dim=1).reshape(-1)


def test_cholesky_decompose_roots_reproduce_factors_and_is_in_place() -> None:
    roots, dense = roots_mlp()
    for name, (ra, rs) in roots.items():
        torch.testing.assert_close(ra @ ra.T, dense[name][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rs @ rs.T, dense[name][1], rtol=1e-5, atol=1e-6)
    assert torch.equal(roots["fc1"][0], torch.tril(roots["fc1"][0]))
    assert roots["fc2"][0].shape == (6, 2)  # low-rank roots are kept
    singular = {"m": (psd(4, 5, rank=2).float(), psd(3, 6).float())}  # rank-2 4x4: needs (relative) jitter
    out = cholesky_decompose_small_factors(singular, 512, "cpu", torch.float64)
    assert out is singular
    torch.testing.assert_close(out["m"][0] @ out["m"][0].T, psd(4, 5, rank=2), rtol=1e-4, atol=1e-6)


def test_model_evidence_equals_standard_laplace_formula() -> None:
    model = MLP().double()
    roots, dense = roots_mlp()
    ll, s2 = torch.tensor(-7.5, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def brute(s2v: torch.Tensor) -> torch.Tensor:
        theta = torch.cat([flat_layer(model.fc1.weight, model.fc1.bias), flat_layer(model.fc2.weight, model.fc2.bias)]).detach()
        blocks = [torch.kron(dense[n][1], dense[n][0]) for n in ("fc1", "fc2")]
        ggn = torch.block_diag(*blocks)
        p0 = torch.eye(theta.numel(), dtype=torch.float64) / s2v
        return ll - 0.5 * theta @ p0 @ theta + 0.5 * torch.linalg.slogdet(p0)[1] - 0.5 * torch.linalg.slogdet(p0 + ggn)[1]

    ours = model_evidence(model, ll, roots, n_lora=0, n_kfac=0, s2=s2)
    torch.testing.assert_close(ours, brute(s2.detach()), rtol=1e-6, atol=1e-6)  # factors stored in float32
    (grad,) = torch.autograd.grad(ours, s2)
    torch.testing.assert_close(grad, torch.func.grad(brute)(s2.detach()), rtol=1e-5, atol=1e-6)


def jacobian_brute(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """(B, C, D) Jacobian w.r.t. [vec(W1|b1), vec(W2|b2)] of an independent functional copy of the net."""
    shapes = [(5, 4), (C, 6)]
    theta = torch.cat([flat_layer(model.fc1.weight, model.fc1.bias), flat_layer(model.fc2.weight, model.fc2.bias)]).detach()

    def f(th: torch.Tensor) -> torch.Tensor:
        w1 = th[:20].reshape(shapes[0])
        w2 = th[20:].reshape(shapes[1])
        h = torch.tanh(x @ w1[:, :3].T + w1[:, 3])
        return h @ w2[:, :5].T + w2[:, 5]

    return jacrev(f)(theta)


def test_variance_equals_brute_force_j_sigma_jt() -> None:
    model = MLP().double()
    x = torch.randn(B, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    roots, dense = roots_mlp()
    s2 = torch.tensor(0.4)
    jac, f_mu = jacobian_mean(model, {"x": x})
    torch.testing.assert_close(f_mu, model(x).detach())
    ours = variance(None, jac, roots, s2, n_logits=C, n_lora=0, n_kfac=0, device="cpu")
    J = jacobian_brute(model, x)
    prec = torch.block_diag(*[torch.kron(dense[n][1], dense[n][0]) for n in ("fc1", "fc2")])
    sigma = torch.linalg.inv(prec + torch.eye(prec.shape[0], dtype=torch.float64) / 0.4)
    expected = torch.einsum("bcd,de,bfe->bcf", J, sigma, J)
    assert ours.shape == (B, C, C) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected.float(), rtol=1e-4, atol=1e-6)


def lora_model() -> nn.Module:
    torch.manual_seed(2)
    base = nn.Sequential()
    base.fc1 = nn.Linear(8, 8)
    base.act = nn.Tanh()
    base.fc2 = nn.Linear(8, C)
    return get_peft_model(base, LoraConfig(r=2, target_modules=["fc1"], init_lora_weights=False))


def lora_roots(model: nn.Module, n_kfac: int = 3) -> dict:
    """bayesian-lora's layout: large side as a (d, n_kfac) low-rank root, the (r, r) side as a Cholesky factor."""
    names = [n for n, m in model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))]
    out = {}
    for i, name in enumerate(names):
        small = torch.linalg.cholesky(psd(2, 20 + i)).float()
        big = lowrank_root(8, n_kfac, 30 + i).float()
        out[name] = (big, small) if "lora_A" in name else (small, big)
    return out


def test_variance_matches_bayesian_lora_on_lora_shaped_factors() -> None:
    model = lora_model()
    x = torch.randn(B, 8, generator=torch.Generator().manual_seed(1))
    factors = lora_roots(model)
    s2 = torch.tensor(0.3)
    jac, f_mu = jacobian_mean(model, {"input": x})
    ours = variance(None, jac, factors, s2, C, 2, 3, "cpu")
    inputs = SimpleNamespace(input_ids=x)  # bayesian-lora reads the batch size from inputs.input_ids
    tjac, tmu = bayesian_lora.main.jacobian_mean(model, {"input": x}, output_callback=lambda out: out)
    theirs = bayesian_lora.variance(inputs, tjac, factors, s2, C, 2, 3, "cpu")
    torch.testing.assert_close(f_mu, tmu.detach())
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-6)


def test_model_evidence_differs_from_bayesian_lora_formula() -> None:
    """Same LoRA-shaped factors: ours is the standard formula, bayesian-lora's adds norms and log-determinants."""
    model = lora_model()
    factors = lora_roots(model)
    ll, s2 = torch.tensor(-20.0), torch.tensor(0.3)
    theta = torch.cat([p.detach().reshape(-1).double() for n, p in model.named_parameters() if p.requires_grad])
    logdet = 0.0
    for a, s in factors.values():
        fa, fs = (a.double() @ a.double().T), (s.double() @ s.double().T)
        logdet += torch.linalg.slogdet(torch.eye(fa.shape[0] * fs.shape[0], dtype=torch.float64) + 0.3 * torch.kron(fs, fa))[1]
    standard = -20.0 - 0.5 * theta @ theta / 0.3 - 0.5 * logdet
    ours = model_evidence(model, ll, factors, 2, 3, s2)
    theirs = bayesian_lora.model_evidence(model, ll, factors, 2, 3, s2)
    torch.testing.assert_close(ours, standard, rtol=1e-6, atol=1e-6)
    assert abs(float(theirs) - float(standard)) > 1.0


def test_predictive_averages_probabilities() -> None:
    """Two classes, f2 - f1 ~ N(2, 4): E[σ(f2 - f1)] by quadrature; averaging logits would give σ(2)."""
    f_mu = torch.tensor([[0.0, 2.0]])
    f_var = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]])
    z = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    dens = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    exact = float(torch.trapezoid(torch.sigmoid(2.0 + 2.0 * z) * dens, z))
    probs = linearized_predictive(f_mu, f_var, n_samples=200_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(probs[0, 1]) - exact) < 3e-3
    assert abs(float(probs[0, 1]) - float(torch.sigmoid(torch.tensor(2.0)))) > 0.05
    probit = linearized_predictive(f_mu, f_var, method="probit")
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))
    assert abs(float(probit[0, 1]) - exact) < 0.05
    zero = linearized_predictive(f_mu, torch.zeros_like(f_var), n_samples=8)
    torch.testing.assert_close(zero, torch.softmax(f_mu, -1))


def test_bad_inputs_raise() -> None:
    model = MLP()
    x = torch.randn(B, 3)
    roots, dense = roots_mlp()
    jac, _ = jacobian_mean(model, {"x": x})
    gram = {"fc1": (dense["fc1"][0], roots["fc1"][1])}
    with pytest.raises(ValueError, match="call cholesky_decompose_small_factors"):
        variance(None, jac, gram, 0.5, C, 0, 0, "cpu")
    with pytest.raises(ValueError, match="no Jacobian entry 'fc3.weight'"):
        variance(None, jac, {"fc3": roots["fc1"]}, 0.5, C, 0, 0, "cpu")
    with pytest.raises(ValueError, match="n_logits=5 but the Jacobian"):
        variance(None, jac, roots, 0.5, 5, 0, 0, "cpu")
    with pytest.raises(ValueError, match="s2 .prior variance. must be one positive number"):
        model_evidence(model, 0.0, roots, 0, 0, -1.0)
    no_bias = {k: v for k, v in jac.items() if k != "fc1.bias"}
    with pytest.raises(ValueError, match="includes a bias but the Jacobian has no 'fc1.bias'"):
        variance(None, no_bias, roots, 0.5, C, 0, 0, "cpu")
    with pytest.raises(ValueError, match="method must be 'mc' or 'probit'"):
        linearized_predictive(torch.zeros(1, 2), torch.zeros(1, 2, 2), method="laplace")  # type: ignore[arg-type]
