"""SGLD: stochastic gradient Langevin dynamics (Welling & Teh 2011, ICML; https://www.stats.ox.ac.uk/~teh/research/compstats/WelTeh2011a.pdf).

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; target ``π_T(θ) ∝ exp(-U(θ)/T) = p(θ|D)^{1/T}``.

Update (step size ``ε_t`` from the schedule, ``ξ ~ N(0, I)``)::

    θ_{t+1} = θ_t + ε_t ∇_θ log_prob(θ_t, B_t) + sqrt(2 ε_t T) ξ_t

(Welling & Teh write ``ε/2`` for the drift and ``ε`` for the noise variance: their ``ε`` is ``2ε_t`` here.)
With an exploration step of a cyclical schedule the noise is off (plain SGD ascent on ``log_prob``).
Bias: ``O(ε)`` from the discretisation (no Metropolis correction); for a Gaussian target with precision ``λ`` the
stationary variance is ``T / (λ (1 - ε λ / 2))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .base import LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler, value_and_grad
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("sgld")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0) -> Sampler:
    """SGLD sampler: ``init(theta0, seed=None) -> SGLDState``, ``step(state, batch) -> SGLDState`` (in place)."""
    schedule = common_checks(lr, temperature)
    return make_sampler("sgld", init, step, log_prob=log_prob, schedule=schedule, seed=seed, temperature=temperature)


@dataclass
class SGLDState(SGMCMCState):
    """SGLD has no buffers beyond the shared state (params, step, log_prob, rng)."""


def init(theta0: Any, seed: int = 0) -> SGLDState:
    return init_state(theta0, seed, SGLDState)


def step(state: SGLDState, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float) -> SGLDState:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    with torch.no_grad():
        torch._foreach_add_(state.leaves, grads, alpha=lr)
        if noisy:
            torch._foreach_add_(state.leaves, draw_noise(state), alpha=math.sqrt(2.0 * lr * temperature))
    state.log_prob = value
    state.step += 1
    return state
