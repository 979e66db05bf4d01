"""pSGLD: RMSprop-preconditioned SGLD (Li, Chen, Carlson & Carin 2016, AAAI; arXiv:1512.07666).

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; target ``π_T(θ) ∝ exp(-U(θ)/T) = p(θ|D)^{1/T}``.

Update with ``g_t = ∇_θ log_prob(θ_t, B_t)`` (elementwise operations; ``ξ ~ N(0, I)``)::

    V_t     = α V_{t-1} + (1 - α) g_t ⊙ g_t          (V_0 := g_0 ⊙ g_0 at the first step)
    G_t     = 1 / (λ + sqrt(V_t))
    θ_{t+1} = θ_t + ε_t G_t ⊙ g_t + sqrt(2 ε_t T G_t) ⊙ ξ_t

i.e. Li et al.'s eq. (4) in our parameterisation (their ``ε`` is ``2ε_t``). **The Γ correction term**
``ε_t T Γ(θ)``, ``Γ_i = Σ_j ∂G_ij/∂θ_j``, **is omitted**, as in the paper's practical algorithm (Algorithm 1); the
paper bounds the resulting bias by ``O((1-α)/α)``-small terms. V is the squared gradient of the full-data-scaled
``log_prob`` (not of the per-example mean), so ``G`` ≈ ``1/|∇U|``: choose ``lr`` on that scale.
``V`` is initialised with the first squared gradient instead of 0 so that the first step is not ``G = 1/λ``.
Exploration steps (cyclical schedule) drop the noise: plain RMSprop ascent on ``log_prob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .base import LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler, value_and_grad
from .options import psgld_options
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("psgld")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, alpha: float = 0.99,
          eps: float = 1e-8) -> Sampler:
    """pSGLD sampler. ``alpha``: RMSprop decay in [0, 1); ``eps``: λ > 0 in ``G = 1/(λ + sqrt(V))``."""
    schedule = common_checks(lr, temperature)
    psgld_options(alpha, eps)
    return make_sampler("psgld", init, step, log_prob=log_prob, schedule=schedule, seed=seed, temperature=temperature,
                        alpha=alpha, eps=eps)


@dataclass
class PSGLDState(SGMCMCState):
    """``square_avg``: the RMSprop average ``V`` (one tensor per parameter leaf)."""

    square_avg: list[Tensor] = field(default_factory=list, repr=False)


def init(theta0: Any, seed: int = 0) -> PSGLDState:
    return init_state(theta0, seed, PSGLDState, square_avg="zeros")


def step(state: PSGLDState, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float, alpha: float,
         eps: float) -> PSGLDState:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    decay = alpha if state.step > 0 else 0.0
    with torch.no_grad():
        v = state.square_avg
        torch._foreach_mul_(v, decay)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - decay)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, eps)  # 1/G
        torch._foreach_addcdiv_(state.leaves, grads, denom, value=lr)
        if noisy:
            torch._foreach_sqrt_(denom)  # sqrt(1/G)
            torch._foreach_addcdiv_(state.leaves, draw_noise(state), denom, value=math.sqrt(2.0 * lr * temperature))
    state.log_prob = value
    state.step += 1
    return state
