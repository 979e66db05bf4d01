"""Every sampler's update against the formula in its docstring, written out here with a hand-coded gradient.

The target is non-quadratic (so the SAM point's gradient differs from a linear extrapolation) and the parameters
are a pytree, so the order in which the flat noise buffer is split over the leaves is checked too. Noise: the
sampler's generator is seeded with ``seed`` and fills one flat buffer of ``P`` (+1 for ``sam_sgld_r1``) N(0, 1)
draws per noisy step; the reference draws the same buffer from its own generator with the same seed.

Plus aSGLD where its adaptive drift dominates, against the exact stationary law of the memoryless case.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from bayespeft.sgmcmc import SAMPLERS, build

torch.set_num_threads(1)

A = torch.tensor([[1.5, 0.4, 0.0, 0.2, 0.0], [0.4, 1.0, 0.3, 0.0, 0.0], [0.0, 0.3, 2.0, 0.1, 0.5],
                  [0.2, 0.0, 0.1, 0.8, 0.0], [0.0, 0.0, 0.5, 0.0, 1.2]], dtype=torch.float64)
B = torch.tensor([0.5, -1.0, 0.3, 0.0, 2.0], dtype=torch.float64)
X0 = torch.tensor([1.0, -0.5, 0.8, 1.5, -1.2], dtype=torch.float64)
LR, T, SEED, STEPS = 0.05, 0.7, 11, 3


def log_prob_vec(x: torch.Tensor) -> torch.Tensor:
    """``log p(x) = −½ xᵀAx − ¼ Σ x⁴ + bᵀx``."""
    return -0.5 * x @ A @ x - 0.25 * (x**4).sum() + B @ x


def grad(x: torch.Tensor) -> torch.Tensor:
    """``∇ log p(x) = −Ax − x³ + b``, by hand (no autograd)."""
    return -A @ x - x**3 + B


def log_prob_tree(theta, batch):
    """The same target on the pytree ``{"w": (2, 2), "v": (1,)}`` (leaves in that order)."""
    return log_prob_vec(torch.cat([theta["w"].reshape(-1), theta["v"]]))


def as_tree(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"w": x[:4].reshape(2, 2).clone(), "v": x[4:].clone()}


# ---- the docstring formulas ------------------------------------------------------------------------------------
def ref_sgld(x, draws):
    for xi in draws:
        x = x + LR * grad(x) + math.sqrt(2 * LR * T) * xi
    return x


def ref_psgld(x, draws, alpha, eps):
    V = None
    for xi in draws:
        g = grad(x)
        V = g * g if V is None else alpha * V + (1 - alpha) * g * g  # V_0 := g_0²
        G = 1.0 / (eps + V.sqrt())
        x = x + LR * G * g + (2 * LR * T * G).sqrt() * xi
    return x


def ref_asgld(x, draws, a, beta1, beta2, eps):
    m = V = torch.zeros_like(x)
    for xi in draws:
        g = grad(x)
        m = beta1 * m + (1 - beta1) * g
        V = beta2 * V + (1 - beta2) * g * g
        x = x + LR * (g + a * m / (V + eps).sqrt()) + math.sqrt(2 * LR * T) * xi
    return x


def ref_sghmc(x, draws, friction, noise_estimate):
    v = torch.zeros_like(x)
    for xi in draws:
        v = (1 - friction) * v + LR * grad(x) + math.sqrt(2 * (friction - noise_estimate) * LR * T) * xi
        x = x + v
    return x


def ref_sam_sgld(x, draws, rho):
    for xi in draws:
        gU = -grad(x)  # ∇U
        x_tilde = x + rho * gU / gU.norm()
        x = x + LR * grad(x_tilde) + math.sqrt(2 * LR * T) * xi
    return x


def ref_sam_sgld_r1(x, draws, rho, rank1_scale):
    for d in draws:
        xi, z = d[:-1], d[-1]
        gU = -grad(x)
        u = gU / gU.norm()
        x = x + LR * grad(x + rho * u) + math.sqrt(2 * LR * T) * (xi + rank1_scale * z * u)
    return x


#: sampler -> (reference, options with values far from the defaults, extra noise scalars per step)
REFERENCES = {
    "sgld": (ref_sgld, {}, 0),
    "psgld": (ref_psgld, {"alpha": 0.5, "eps": 0.1}, 0),
    "asgld": (ref_asgld, {"a": 2.0, "beta1": 0.6, "beta2": 0.8, "eps": 0.05}, 0),
    "sghmc": (ref_sghmc, {"friction": 0.3, "noise_estimate": 0.1}, 0),
    "sam_sgld": (ref_sam_sgld, {"rho": 0.4}, 0),
    "sam_sgld_r1": (ref_sam_sgld_r1, {"rho": 0.4, "rank1_scale": 1.3}, 1),
}


def test_every_registered_sampler_has_a_reference():
    assert set(REFERENCES) == set(SAMPLERS.names())


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_steps_equal_docstring_formula(name):
    ref, opts, extra = REFERENCES[name]
    s = build(name, log_prob_tree, lr=LR, temperature=T, seed=SEED, **opts)
    state = s.init(as_tree(X0))
    for _ in range(STEPS):
        prev = torch.cat([state.params["w"].detach().reshape(-1), state.params["v"].detach()])
        state = s.step(state, None)
    g = torch.Generator().manual_seed(SEED)
    draws = [torch.empty(X0.numel() + extra, dtype=torch.float64).normal_(generator=g) for _ in range(STEPS)]
    if extra == 0:
        draws = [d[: X0.numel()] for d in draws]
    expected = ref(X0.clone(), draws, **opts)
    got = torch.cat([state.params["w"].detach().reshape(-1), state.params["v"].detach()])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert state.step == STEPS
    # log_prob is the value at the last gradient evaluation's (unperturbed) point θ_{t-1}
    assert float(state.log_prob) == pytest.approx(float(log_prob_vec(prev)), rel=1e-12)


# ---- aSGLD where the adaptive drift dominates ------------------------------------------------------------------
def test_memoryless_asgld_samples_the_drift_modified_target():
    """β1 = β2 = 0 makes the adaptive term a function of θ alone: ``A = g/√(g² + λ) ≈ sign(g)``. On ``U = θ²/2`` the
    drift is ``−θ − a·sign(θ) = −∇(θ²/2 + a|θ|)``, so the chain samples ``∝ exp(−(θ²/2 + a|θ|)/T)`` (Langevin with
    that potential). With a = 1.5, T = 1 that law has E θ² = 0.342 versus 1 for π_T itself, and flipping the drift's
    sign gives a bimodal law with E θ² = 3.46: the test tells all three apart.
    Tolerance 6%: the Euler bias at the kink of the potential measured +2.7% at ε = 0.01 (+1.4% at 0.005, +5.7% at
    0.02: linear in ε), the Monte Carlo error ~0.5% (2000 parallel chains, three seeds within ±0.4%)."""
    a, temperature, lr, chains = 1.5, 1.0, 0.01, 2000
    s = build("asgld", lambda th, b: -0.5 * (th**2).sum(), lr=lr, temperature=temperature, seed=4,
              a=a, beta1=0.0, beta2=0.0, eps=1e-8)
    state = s.init(torch.randn(chains, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    second = []
    for t in range(2500):
        state = s.step(state, None)
        if t >= 500 and t % 10 == 0:
            second.append(float((state.params.detach() ** 2).mean()))

    def moment(k, sign):
        f = lambda x: x**k * math.exp(-(x * x / 2 + sign * a * x) / temperature)  # noqa: E731  (x = |θ| >= 0)
        return integrate.quad(f, 0, 40)[0]

    exact = moment(2, 1) / moment(0, 1)
    assert exact == pytest.approx(0.342, abs=1e-3)  # far from π_T's 1 and from the flipped law's:
    assert moment(2, -1) / moment(0, -1) == pytest.approx(3.458, abs=1e-3)
    assert np.mean(second) == pytest.approx(exact, rel=0.06)
