"""SAM-SGLD-r1: SAM-SGLD whose Langevin noise has an extra rank-1 component along the SAM direction.

Convention (shared by all samplers, see :mod:`bayespeft.sgmcmc.base`): ``log_prob(θ, batch)`` returns
``N · mean_batch log p(y|x, θ) + log p(θ)``; ``U = -log_prob``; the nominal tempered posterior is
``π_T ∝ exp(-U/T) = p(θ|D)^{1/T}`` — but **this sampler does not target π_T** (see below).

Update (``ξ ~ N(0, I)``, ``z ~ N(0, 1)`` independent; one global norm; ``s`` = ``rank1_scale``)::

    g_t     = ∇U(θ_t, B_t),     u_t = g_t / ‖g_t‖,     θ̃_t = θ_t + ρ u_t
    θ_{t+1} = θ_t - ε_t ∇U(θ̃_t, B_t) + sqrt(2 ε_t T) (ξ_t + s z_t u_t)

The noise covariance is ``2 ε_t T D(θ)`` with ``D = I + s² u uᵀ``, so the ε → 0 limit is the Itô diffusion
``dθ = -∇U(θ̃) dt + sqrt(2T) D(θ)^{1/2} dW``. This is **not** an exact discretisation of the T-tempered Langevin
diffusion. What it targets: because ``u ∥ ∇U``, ``D ∇U = (1 + s²) ∇U``, so the drift equals
``-D ∇(U/(1+s²))`` (at ρ = 0); with the divergence ("Γ") correction ``T ∇·D`` added, the stationary law would be
``∝ exp(-U/((1+s²) T))`` — π at the inflated temperature ``(1+s²)T``. **The Γ term**
``T s² [u (∇·u) + (u·∇) u]`` (it needs Hessian information) **is omitted, and no Metropolis correction is applied**,
so the stationary law is that of the diffusion above, which lies between ``π_T`` and ``π_{(1+s²)T}``:

* in 1-D (``D = 1 + s²`` constant, Γ = 0) at ρ = 0 it is exactly ``π_{(1+s²)T}``;
* for an isotropic Gaussian ``U = λ‖θ-μ‖²/2`` in d dimensions the radius ``r = ‖θ-μ‖`` has the exact stationary
  density ``∝ r^{(d-1)/(1+s²)} exp(-(λ r²/2 + λ ρ r)/((1+s²)T))``; at ρ = 0, ``E‖θ-μ‖² = T (d + s²)/λ`` (one
  extra unit of variance ``s² T/λ`` in total, along the gradient direction), versus ``T d/λ`` under π_T.

Use it as an exploration heuristic (extra noise along the sharp direction), not as a posterior sampler; ``s = 0``
gives SAM-SGLD exactly. Cost: two forward/backward passes per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_unflatten

from .base import (LogProb, Sampler, SGMCMCState, common_checks, draw_noise, init_state, make_sampler,
                   sam_point, value_and_grad)
from .options import sam_sgld_r1_options
from .registry import SAMPLERS
from .schedules import Schedule


@SAMPLERS.register("sam_sgld_r1")
def build(log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, rho: float = 0.05,
          rank1_scale: float = 1.0) -> Sampler:
    """SAM-SGLD-r1 sampler. ``rho >= 0``: SAM radius; ``rank1_scale`` s >= 0: std of the extra noise along u."""
    schedule = common_checks(lr, temperature)
    sam_sgld_r1_options(rho, rank1_scale)
    return make_sampler("sam_sgld_r1", init, step, log_prob=log_prob, schedule=schedule, seed=seed,
                        temperature=temperature, rho=rho, rank1_scale=rank1_scale)


@dataclass
class SAMSGLDR1State(SGMCMCState):
    """No buffers beyond the shared state; the flat noise buffer holds one extra scalar (``z``) after the P entries."""


def init(theta0: Any, seed: int = 0) -> SAMSGLDR1State:
    return init_state(theta0, seed, SAMSGLDR1State, extra_noise=1)


def step(state: SAMSGLDR1State, batch: Any, *, log_prob: LogProb, schedule: Schedule, temperature: float, rho: float,
         rank1_scale: float) -> SAMSGLDR1State:
    lr, noisy = schedule.lr(state.step), schedule.noise(state.step)
    value, grads = value_and_grad(log_prob, state.params, state.leaves, batch)
    with torch.no_grad():
        pert, inv_norm = sam_point(state, grads, rho)  # u = inv_norm * grads
    _, grads_sam = value_and_grad(log_prob, tree_unflatten(pert, state.spec), pert, batch)
    with torch.no_grad():
        torch._foreach_add_(state.leaves, grads_sam, alpha=lr)
        if noisy:
            c = math.sqrt(2.0 * lr * temperature)
            torch._foreach_add_(state.leaves, draw_noise(state), alpha=c)
            if rank1_scale != 0.0:
                coef = state.flat_noise[-1] * (c * rank1_scale) * inv_norm  # c s z / ‖g‖ (0-dim, on device)
                torch._foreach_add_(state.leaves, torch._foreach_mul(grads, coef))
    state.log_prob = value
    state.step += 1
    return state
