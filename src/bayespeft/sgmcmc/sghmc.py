"""SGHMC: stochastic gradient Hamiltonian Monte Carlo with friction (Chen, Fox & Guestrin 2014, ICML; arXiv:1402.4102).

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; target ``π_T(θ) ∝ exp(-U(θ)/T) = p(θ|D)^{1/T}``.

We use the paper's SGD-with-momentum form (Sec. 3.3, eq. 15) with step size ``ε_t = lr`` (the paper's η),
friction ``α`` (per step, ``1 - momentum``) and noise estimate ``β̂`` (``B̂ = 0`` default, i.e. ``β̂ = 0``)::

    v_{t+1} = (1 - α) v_t + ε_t ∇_θ log_prob(θ_t, B_t) + sqrt(2 (α - β̂) ε_t T) ξ_t
    θ_{t+1} = θ_t + v_{t+1}

This is the Euler discretisation of ``dθ = r dt, dr = -∇U dt - C r dt + sqrt(2 C T) dW`` with ``ε_phys = sqrt(ε_t)``,
``C = α / sqrt(ε_t)``, ``v = ε_phys r``, whose θ-marginal is ``π_T``. ``β̂ = ε_t V̂ / 2`` for an estimate ``V̂`` of the
stochastic-gradient noise variance (of ``∇U``) subtracts that noise from the injected noise; ``0 <= β̂ < α``.
With ``α = 1`` and ``β̂ = 0`` the update is exactly SGLD with the same ``lr``. Momentum starts at ``v_0 = 0``.
Exploration steps (cyclical schedule) drop the noise: SGD with momentum ``1 - α`` ascending ``log_prob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .base import LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler, value_and_grad
from .options import sghmc_options
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("sghmc")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, friction: float = 0.1,
          noise_estimate: float = 0.0) -> Sampler:
    """SGHMC sampler. ``friction`` α in (0, 1]; ``noise_estimate`` β̂ in [0, α)."""
    schedule = common_checks(lr, temperature)
    sghmc_options(friction, noise_estimate)
    return make_sampler("sghmc", init, step, log_prob=log_prob, schedule=schedule, seed=seed, temperature=temperature,
                        friction=friction, noise_estimate=noise_estimate)


@dataclass
class SGHMCState(SGMCMCState):
    """``momenta``: the velocity ``v`` (one tensor per parameter leaf, in parameter units)."""

    momenta: list[Tensor] = field(default_factory=list, repr=False)


def init(theta0: Any, seed: int = 0) -> SGHMCState:
    return init_state(theta0, seed, SGHMCState, momenta="zeros")


def step(state: SGHMCState, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float, friction: float,
         noise_estimate: float) -> SGHMCState:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    with torch.no_grad():
        v = state.momenta
        torch._foreach_mul_(v, 1.0 - friction)
        torch._foreach_add_(v, grads, alpha=lr)
        if noisy:
            torch._foreach_add_(v, draw_noise(state), alpha=math.sqrt(2.0 * (friction - noise_estimate) * lr * temperature))
        torch._foreach_add_(state.leaves, v)
    state.log_prob = value
    state.step += 1
    return state
