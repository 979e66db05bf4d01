"""Shared machinery of the SG-MCMC samplers (no algorithm lives here; one algorithm per sampler module).

Conventions used by every sampler in :mod:`bayespeft.sgmcmc` (each sampler docstring repeats them):

* ``log_prob(theta, batch) -> 0-dim tensor`` is the **full-data-scaled** log posterior estimate
  ``log_prob(θ, B) = N · mean_{i∈B} log p(y_i | x_i, θ) + log p(θ)`` (likelihood scaled to N data points from the
  minibatch mean; prior counted once). ``theta`` is a tensor or a pytree (dict / list / tuple) of tensors.
* Energy ``U(θ) = -log_prob(θ)``; temperature ``T > 0``; target ``π_T(θ) ∝ p(θ|D)^{1/T} = exp(-U(θ)/T)``.
  ``T = 1`` is the Bayes posterior, ``T < 1`` a cold posterior.
* Step size ``ε = lr`` with the Langevin parameterisation ``θ ← θ + ε ∇log_prob(θ) + sqrt(2 ε T) ξ``,
  ``ξ ~ N(0, I)`` (Euler–Maruyama for ``dθ = -∇U dt + sqrt(2T) dW``, stationary law ``exp(-U/T)``). Welling & Teh's
  ``ε_WT`` equals ``2ε`` here. No hidden noise multipliers: the only noise scale is ``sqrt(2 ε T)`` (times a
  sampler's stated preconditioner).

A step updates the state's tensors **in place** (``torch._foreach_*``, one flat noise buffer, no host syncs) and
returns the same state object. ``init`` clones ``theta0``, so the caller's tensors are never modified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .options import check_positive, check_unit_interval  # noqa: F401  (torch-free; re-exported)
from .schedules import Schedule, as_schedule

LogProb = Callable[[Any, Any], Tensor]


@dataclass
class SGMCMCState:
    """State shared by every sampler.

    params: the pytree of parameters (same structure as ``theta0``); its leaves are ``leaves``.
    step: number of steps taken so far (Python int; the schedule is evaluated at this value).
    log_prob: ``log_prob(θ_t, batch_t)`` at the last gradient evaluation (detached 0-dim tensor; NaN before the
        first step). Kept on device: reading it is the caller's choice (it syncs).
    rng: the ``torch.Generator`` (on the parameters' device) that draws all noise of this chain.
    """

    params: Any
    step: int
    log_prob: Tensor
    rng: torch.Generator
    leaves: list[Tensor] = field(repr=False)
    spec: Any = field(repr=False)
    flat_noise: Tensor = field(repr=False)
    noise: list[Tensor] = field(repr=False)


@dataclass(frozen=True)
class Sampler:
    """What ``build`` returns: ``init(theta0, seed=None) -> state`` and ``step(state, batch) -> state``."""

    name: str
    init: Callable[..., Any]
    step: Callable[[Any, Any], Any]
    hyperparameters: dict[str, Any]
    schedule: Schedule


def init_with_seed(init: Callable[..., Any], default_seed: int, theta0: Any, seed: int | None = None) -> Any:
    """``init(theta0, seed)``, ``seed`` defaulting to the one given to ``build``."""
    return init(theta0, seed=default_seed if seed is None else int(seed))


def make_sampler(name: str, init: Callable[..., Any], step: Callable[..., Any], *, log_prob: LogProb,
                 schedule: Schedule, seed: int, **hyperparameters: Any) -> Sampler:
    """Bind a sampler module's pure ``init``/``step`` to its options with ``functools.partial`` (as posteriors does).

    ``Sampler.init(theta0, seed=None)`` is ``init(theta0, seed=seed or the build seed)`` and ``Sampler.step(state,
    batch)`` is ``step(state, batch, log_prob=..., schedule=..., **hyperparameters)``; ``hyperparameters`` (the
    temperature and the sampler's own options) are also recorded on the ``Sampler``.
    """
    return Sampler(name, partial(init_with_seed, init, seed),
                   partial(step, log_prob=log_prob, schedule=schedule, **hyperparameters), dict(hyperparameters), schedule)


def common_checks(lr: float | Schedule, temperature: float) -> Schedule:
    check_positive("temperature", temperature)
    if isinstance(lr, (int, float)):
        check_positive("lr", lr)
    return as_schedule(lr)


def init_state(theta0: Any, seed: int, state_cls: type = SGMCMCState, extra_noise: int = 0, **buffers: Any) -> Any:
    """Clone ``theta0`` into leaves that require grad, set up the seeded generator and one flat noise buffer.

    ``extra_noise`` reserves that many scalars after the ``P`` parameter entries of the flat noise buffer (e.g. the
    rank-1 coefficient of ``sam_sgld_r1``). ``buffers`` are extra dataclass fields; a value ``"zeros"`` becomes a list
    of zero tensors shaped like the leaves.
    """
    leaves0, spec = tree_flatten(theta0)
    if not leaves0 or not all(torch.is_tensor(t) for t in leaves0):
        raise TypeError("theta0 must be a tensor or a pytree (dict/list/tuple) of tensors")
    dtypes = {t.dtype for t in leaves0}
    devices = {t.device for t in leaves0}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point or len(devices) != 1:
        raise TypeError(f"all parameters must share one floating dtype and one device, got dtypes {dtypes}, devices {devices}")
    dtype, device = dtypes.pop(), devices.pop()
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves0]
    rng = torch.Generator(device=device)
    rng.manual_seed(int(seed))
    sizes = [t.numel() for t in leaves]
    total = sum(sizes)
    flat = torch.zeros(total + extra_noise, dtype=dtype, device=device)
    noise = [v.view_as(t) for v, t in zip(flat[:total].split(sizes), leaves)]
    extra = {k: ([torch.zeros_like(t, requires_grad=False) for t in leaves] if v == "zeros" else v) for k, v in buffers.items()}
    return state_cls(
        params=tree_unflatten(leaves, spec), step=0, log_prob=torch.full((), float("nan"), device=device),
        rng=rng, leaves=leaves, spec=spec, flat_noise=flat, noise=noise, **extra,
    )


def value_and_grad(log_prob: LogProb, params: Any, leaves: list[Tensor], batch: Any) -> tuple[Tensor, list[Tensor]]:
    """``(log_prob(params, batch), ∇_θ log_prob)`` by reverse-mode autograd w.r.t. ``leaves`` (the leaves of params).

    A ``log_prob`` with a ``precomputed_value_and_grad(params, leaves, batch)`` method (the precomputed gradients of
    vectorised chains, :class:`~.vectorized.PrecomputedLogProb`) is asked for the pair instead.
    """
    own = getattr(log_prob, "precomputed_value_and_grad", None)
    if own is not None:
        return own(params, leaves, batch)
    with torch.enable_grad():
        value = log_prob(params, batch)
        if not torch.is_tensor(value) or value.ndim != 0:
            raise ValueError(f"log_prob must return a 0-dim tensor, got {type(value).__name__} {getattr(value, 'shape', '')}")
        grads = torch.autograd.grad(value, leaves, materialize_grads=True)
    return value.detach(), list(grads)


def global_norm(tensors: list[Tensor]) -> Tensor:
    """One Euclidean norm over all tensors together (0-dim, stays on device)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def sam_point(state: SGMCMCState, grads: list[Tensor], rho: float) -> tuple[list[Tensor], Tensor]:
    """Sharpness-aware point ``θ̃ = θ + ρ u`` with ``u = ∇U/‖∇U‖ = -∇log_prob/‖∇log_prob‖`` (one global norm).

    Returns the perturbed leaves (new tensors requiring grad) and ``-1/‖∇log_prob‖`` (0-dim; ``u = that · grads``).
    A zero gradient gives ``u = 0`` (norm guarded by 1e-12).
    """
    inv = -1.0 / (global_norm(grads) + 1e-12)
    pert = torch._foreach_mul(grads, inv * rho)
    torch._foreach_add_(pert, state.leaves)
    for p in pert:
        p.requires_grad_(True)
    return pert, inv


def draw_noise(state: SGMCMCState) -> list[Tensor]:
    """Fill the flat noise buffer with N(0, 1) from the chain's generator; return the per-leaf views."""
    state.flat_noise.normal_(generator=state.rng)
    return state.noise
