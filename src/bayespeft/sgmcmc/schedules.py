"""Step-size schedules ``t -> ε_t`` for the SG-MCMC samplers (registry ``SCHEDULES``).

Every schedule answers three questions for step ``t = 0, 1, 2, ...`` (the state's step count before the update):

* ``lr(t)``: the step size ``ε_t`` used in ``θ ← θ + ε_t ∇log_prob + sqrt(2 ε_t T) ξ`` (see :mod:`.base`);
* ``noise(t)``: whether the Langevin noise is injected (False = optimiser-like exploration step);
* ``sampling(t)``: whether a sample taken after this step may be kept (burn-in and thinning are applied on top
  by the chain runner).

Schedules:

* ``constant``: ``ε_t = lr``; always noisy, always sampling.
* ``polynomial`` (Welling & Teh 2011): ``ε_t = a (b + t)^{-γ}``; ``γ ∈ (0.5, 1]`` gives ``Σε = ∞, Σε² < ∞``.
* ``cyclical`` (Zhang et al. 2020, cSG-MCMC, arXiv:1902.03932): with period ``K' = ceil(K / M)`` for ``K`` total
  steps and ``M`` cycles, ``r(t) = (t mod K') / K'`` and ``ε_t = lr/2 · (cos(π r(t)) + 1)``. Steps with
  ``r(t) < exploration_fraction`` (β in the paper) are exploration steps (no noise, not kept); the rest are
  sampling steps (noise on, kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..registry import Registry

SCHEDULES: Registry = Registry("schedule")


@runtime_checkable
class Schedule(Protocol):
    def lr(self, t: int) -> float: ...
    def noise(self, t: int) -> bool: ...
    def sampling(self, t: int) -> bool: ...


def _pos(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


@SCHEDULES.register("constant")
@dataclass(frozen=True)
class Constant:
    """``ε_t = lr`` for every step."""

    lr0: float

    def __post_init__(self) -> None:
        _pos("lr", self.lr0)

    def lr(self, t: int) -> float:
        return self.lr0

    def noise(self, t: int) -> bool:
        return True

    def sampling(self, t: int) -> bool:
        return True


@SCHEDULES.register("polynomial")
@dataclass(frozen=True)
class Polynomial:
    """``ε_t = a (b + t)^{-γ}`` (Welling & Teh 2011)."""

    a: float
    b: float = 1.0
    gamma: float = 0.55

    def __post_init__(self) -> None:
        _pos("polynomial a", self.a)
        _pos("polynomial b", self.b)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"polynomial gamma must lie in (0, 1] (Welling & Teh use (0.5, 1]), got {self.gamma!r}")

    def lr(self, t: int) -> float:
        return self.a * (self.b + t) ** (-self.gamma)

    def noise(self, t: int) -> bool:
        return True

    def sampling(self, t: int) -> bool:
        return True


@SCHEDULES.register("cyclical")
@dataclass(frozen=True)
class Cyclical:
    """Cosine cycles of cSG-MCMC (Zhang et al. 2020): exploration (no noise) then sampling (noise) in each cycle."""

    lr0: float
    total_steps: int
    cycles: int = 4
    exploration_fraction: float = 0.5

    def __post_init__(self) -> None:
        _pos("lr", self.lr0)
        if self.cycles < 1:
            raise ValueError(f"cycles must be an integer >= 1, got {self.cycles!r}")
        if self.total_steps < self.cycles:
            raise ValueError(f"total_steps ({self.total_steps}) must be >= cycles ({self.cycles})")
        if not 0 <= self.exploration_fraction < 1:
            raise ValueError(f"exploration_fraction must lie in [0, 1), got {self.exploration_fraction!r}")

    @property
    def period(self) -> int:
        return math.ceil(self.total_steps / self.cycles)

    def phase(self, t: int) -> float:
        """``r(t) ∈ [0, 1)``: position of step ``t`` inside its cycle."""
        return (t % self.period) / self.period

    def lr(self, t: int) -> float:
        return 0.5 * self.lr0 * (math.cos(math.pi * self.phase(t)) + 1.0)

    def noise(self, t: int) -> bool:
        return self.phase(t) >= self.exploration_fraction

    def sampling(self, t: int) -> bool:
        return self.noise(t)


def as_schedule(lr: float | Schedule) -> Schedule:
    """A float becomes :class:`Constant`; a schedule object is returned unchanged."""
    if isinstance(lr, Schedule):
        return lr
    return Constant(float(lr))


def build_schedule(name: str, lr: float, total_steps: int, **kw: float) -> Schedule:
    """Build a registered schedule by name; ``lr`` is its peak / initial step size."""
    cls = SCHEDULES.get(name)
    if cls is Constant:
        return Constant(lr)
    if cls is Polynomial:
        return Polynomial(a=lr, **kw)
    if cls is Cyclical:
        return Cyclical(lr0=lr, total_steps=total_steps, **kw)
    return cls(lr, **kw)
