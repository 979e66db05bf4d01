"""aSGLD / Adam-SGLD: SGLD with an adaptive (Adam-like) drift (Kim, Song & Liang 2020, "Stochastic gradient
Langevin dynamics algorithms with adaptive drifts", J. Stat. Comput. Simul.; arXiv:2009.09535, Algorithm "Adam-SGLD").

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; target ``π_T(θ) ∝ exp(-U(θ)/T) = p(θ|D)^{1/T}``.

Update with ``g_t = ∇_θ log_prob(θ_t, B_t)`` (elementwise; ``ξ ~ N(0, I)``; ``m_0 = V_0 = 0``)::

    m_t     = β1 m_{t-1} + (1 - β1) g_t
    V_t     = β2 V_{t-1} + (1 - β2) g_t ⊙ g_t
    A_t     = m_t ⊘ sqrt(V_t + λ)
    θ_{t+1} = θ_t + ε_t (g_t + a A_t) + sqrt(2 ε_t T) ξ_t

The moment estimates only enter the **drift** (as the bias term ``a A_t`` added to the gradient); the noise is
**not preconditioned** (plain ``sqrt(2 ε_t T) ξ``). As in the paper there is no Adam bias correction of ``m``/``V``.
At stationarity ``E_π[∇log π] = 0``, so the adaptive drift has mean zero and the chain targets ``π_T`` up to the
usual ``O(ε)`` discretisation bias (the paper's convergence result). Caveat: ``|A| = O(1)`` per coordinate while
``m`` tracks ``g`` when the chain moves slowly, so the drift is ≈ ``g (1 + a/sqrt(E g²))`` and the stationary
variance shrinks by a factor ≈ ``1/(1 + a/|∇U|)`` per coordinate: negligible with N-scaled network gradients
(``|∇U| ≫ a``), but on unit-scale toy targets choose ``a`` small. Exploration steps (cyclical schedule) drop the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .base import LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler, value_and_grad
from .options import asgld_options
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("asgld")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, a: float = 1.0,
          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> Sampler:
    """aSGLD sampler. ``a >= 0``: bias factor of the adaptive drift; ``beta1, beta2`` in [0, 1); ``eps``: λ > 0."""
    schedule = common_checks(lr, temperature)
    asgld_options(a, beta1, beta2, eps)
    return make_sampler("asgld", init, step, log_prob=log_prob, schedule=schedule, seed=seed, temperature=temperature,
                        a=a, beta1=beta1, beta2=beta2, eps=eps)


@dataclass
class ASGLDState(SGMCMCState):
    """``exp_avg`` (m) and ``exp_avg_sq`` (V), one tensor per parameter leaf."""

    exp_avg: list[Tensor] = field(default_factory=list, repr=False)
    exp_avg_sq: list[Tensor] = field(default_factory=list, repr=False)


def init(theta0: Any, seed: int = 0) -> ASGLDState:
    return init_state(theta0, seed, ASGLDState, exp_avg="zeros", exp_avg_sq="zeros")


def step(state: ASGLDState, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float, a: float,
         beta1: float, beta2: float, eps: float) -> ASGLDState:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    with torch.no_grad():
        m, v = state.exp_avg, state.exp_avg_sq
        torch._foreach_lerp_(m, grads, 1.0 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_add(v, eps)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(state.leaves, grads, alpha=lr)
        if a != 0.0:
            torch._foreach_addcdiv_(state.leaves, m, denom, value=lr * a)
        if noisy:
            torch._foreach_add_(state.leaves, draw_noise(state), alpha=math.sqrt(2.0 * lr * temperature))
    state.log_prob = value
    state.step += 1
    return state
