"""SAM-SGLD: SGLD whose gradient is taken at the sharpness-aware perturbed point (SAM, Foret et al. 2021,
arXiv:2010.01412, inside the SGLD update of Welling & Teh 2011).

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; nominal target ``π_T ∝ exp(-U/T) = p(θ|D)^{1/T}``.

Update (``ξ ~ N(0, I)``; **one global norm** over all parameter tensors; same minibatch for both gradients)::

    g_t     = ∇U(θ_t, B_t),           u_t = g_t / ‖g_t‖
    θ̃_t     = θ_t + ρ u_t              (ascent on U, as in SAM)
    θ_{t+1} = θ_t - ε_t ∇U(θ̃_t, B_t) + sqrt(2 ε_t T) ξ_t

Cost: two forward/backward passes per step. What it targets: since ``∇U(θ + ρ u) = ∇U + ρ H u + O(ρ²)`` and
``∇‖∇U‖ = H u``, the drift is ``-∇(U + ρ‖∇U‖) + O(ρ²)``, so as ``ε → 0`` the chain samples
``∝ exp(-(U(θ) + ρ ‖∇U(θ)‖)/T)`` to first order in ρ — a sharpness-penalised, **biased** version of ``π_T``
(exactly ``π_T`` only for ρ = 0). For an isotropic Gaussian ``U = λ‖θ-μ‖²/2`` the radius ``r = ‖θ-μ‖`` has the exact
(all orders in ρ) stationary density ``∝ r^{d-1} exp(-(λ r²/2 + λ ρ r)/T)``. No Metropolis or other correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_unflatten

from .base import (LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler,
                   sam_point, value_and_grad)
from .options import sam_sgld_options
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("sam_sgld")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, rho: float = 0.05) -> Sampler:
    """SAM-SGLD sampler. ``rho >= 0``: SAM radius in parameter units (ρ = 0 is SGLD at twice the cost)."""
    schedule = common_checks(lr, temperature)
    sam_sgld_options(rho)
    return make_sampler("sam_sgld", init, step, log_prob=log_prob, schedule=schedule, seed=seed,
                        temperature=temperature, rho=rho)


@dataclass
class SAMSGLDState(SGMCMCState):
    """No buffers beyond the shared state; ``log_prob`` is the value at the unperturbed ``θ_t``."""


def init(theta0: Any, seed: int = 0) -> SAMSGLDState:
    return init_state(theta0, seed, SAMSGLDState)


def step(state: SAMSGLDState, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float,
         rho: float) -> SAMSGLDState:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    with torch.no_grad():
        pert, _ = sam_point(state, grads, rho)
    _, grads_sam = value_and_grad(log_prob, tree_unflatten(pert, state.spec), pert, batch)
    with torch.no_grad():
        torch._foreach_add_(state.leaves, grads_sam, alpha=lr)
        if noisy:
            torch._foreach_add_(state.leaves, draw_noise(state), alpha=math.sqrt(2.0 * lr * temperature))
    state.log_prob = value
    state.step += 1
    return state
