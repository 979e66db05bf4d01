"""Every built-in sampler's own options, checked without torch: names, defaults and allowed values.

``sgmcmc.options`` of a config are checked here when the config is validated, so ``bayespeft validate`` needs
neither torch nor a sampler module; each sampler's ``build`` calls the same check, so the rules live in one place.
:data:`OPTION_CHECKS` maps a sampler name to ``check(**options) -> None``, whose keyword parameters are the
sampler's options with the defaults of its ``build`` (a test checks that they match), raising ``ValueError`` with
the allowed range. :data:`MODULES` names the module that registers each sampler (the lazy table of
:data:`~bayespeft.sgmcmc.registry.SAMPLERS`); :data:`VECTORIZABLE` the samplers whose update is elementwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["MODULES", "OPTION_CHECKS", "VECTORIZABLE", "check_options", "check_positive", "check_unit_interval"]

#: samplers whose update is elementwise per parameter, so K chains can run as one vmapped computation (the SAM
#: variants use one global gradient norm per chain)
VECTORIZABLE = frozenset({"sgld", "psgld", "asgld", "sghmc"})


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = value >= 0 if allow_zero else value > 0
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: float, closed_low: bool = True, closed_high: bool = False) -> float:
    lo_ok = value >= 0 if closed_low else value > 0
    hi_ok = value <= 1 if closed_high else value < 1
    if not isinstance(value, (int, float)) or not (lo_ok and hi_ok):
        lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
        raise ValueError(f"{name} must lie in {lo}0, 1{hi}, got {value!r}")
    return float(value)


def sgld_options() -> None:
    """SGLD has no options of its own."""


def psgld_options(alpha: float = 0.99, eps: float = 1e-8) -> None:
    """RMSprop decay ``alpha`` in [0, 1), stabiliser ``eps`` > 0."""
    check_unit_interval("alpha", alpha)
    check_positive("eps", eps)


def asgld_options(a: float = 1.0, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """Drift scale ``a`` >= 0, Adam decays ``beta1``, ``beta2`` in [0, 1), stabiliser ``eps`` > 0."""
    check_positive("a", a, allow_zero=True)
    check_unit_interval("beta1", beta1)
    check_unit_interval("beta2", beta2)
    check_positive("eps", eps)


def sghmc_options(friction: float = 0.1, noise_estimate: float = 0.0) -> None:
    """Friction ``α`` in (0, 1], gradient-noise estimate ``0 <= β̂ < α`` (injected variance ``2(α - β̂)εT``)."""
    check_unit_interval("friction", friction, closed_low=False, closed_high=True)
    check_positive("noise_estimate", noise_estimate, allow_zero=True)
    if noise_estimate >= friction:
        raise ValueError(f"noise_estimate (β̂={noise_estimate}) must be smaller than friction (α={friction}): "
                         "the injected noise variance 2(α - β̂)εT must be positive")


def sam_sgld_options(rho: float = 0.05) -> None:
    """SAM radius ``rho`` >= 0 (0: plain SGLD)."""
    check_positive("rho", rho, allow_zero=True)


def sam_sgld_r1_options(rho: float = 0.05, rank1_scale: float = 1.0) -> None:
    """SAM radius ``rho`` >= 0, scale of the rank-1 perturbation ``rank1_scale`` >= 0."""
    check_positive("rho", rho, allow_zero=True)
    check_positive("rank1_scale", rank1_scale, allow_zero=True)


#: sampler name -> check of its options (keyword parameters = option names with the build's defaults)
OPTION_CHECKS: dict[str, Callable[..., None]] = {
    "sgld": sgld_options, "psgld": psgld_options, "asgld": asgld_options, "sghmc": sghmc_options,
    "sam_sgld": sam_sgld_options, "sam_sgld_r1": sam_sgld_r1_options,
}

#: built-in sampler name -> the module whose import registers its ``build`` (one file per sampler)
MODULES: dict[str, str] = {name: f"bayespeft.sgmcmc.{name}" for name in OPTION_CHECKS}


def unknown_options_error(name: str, given: Any, allowed: Any) -> ValueError | None:
    """The error for option names ``given`` that sampler ``name`` (taking ``allowed``) does not have, or None."""
    bad = sorted(set(given) - set(allowed))
    if not bad:
        return None
    return ValueError(f"sampler {name!r} has no option(s) {bad}; allowed options: {sorted(allowed) or 'none'}")


def check_options(name: str, options: dict[str, Any]) -> None:
    """Check the option names and values of built-in sampler ``name`` (a key of :data:`OPTION_CHECKS`)."""
    import inspect

    check = OPTION_CHECKS[name]
    error = unknown_options_error(name, options, inspect.signature(check).parameters)
    if error is not None:
        raise error
    check(**options)
