"""The sampler registry: ``SAMPLERS`` (name -> ``build``), :func:`build` and :func:`sampler_options`.

Every sampler module registers its ``build`` with ``@SAMPLERS.register(name)``; the registry knows the built-in
names from :data:`bayespeft.sgmcmc.options.MODULES` and imports a sampler's module on first ``SAMPLERS.get``, so a
new sampler is one new file plus its option check in :mod:`bayespeft.sgmcmc.options`. ``build(name, log_prob, lr,
...)`` checks the options against the sampler's ``build`` signature before calling it. Importing this module does
not import torch.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..registry import Registry
from .options import MODULES, unknown_options_error

if TYPE_CHECKING:
    from .base import LogProb, Sampler
    from .schedules import Schedule

__all__ = ["SAMPLERS", "build", "sampler_options"]

SAMPLERS: Registry = Registry("sampler", lazy=MODULES)

#: Arguments every sampler's ``build`` takes; the others are its own options.
COMMON_ARGUMENTS = ("log_prob", "lr", "temperature", "seed")


def sampler_options(name: str) -> dict[str, Any]:
    """Sampler-specific keyword options of ``name`` with their defaults (beyond lr, temperature, seed)."""
    sig = inspect.signature(SAMPLERS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in COMMON_ARGUMENTS}


def build(name: str, log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, **kw: Any) -> Sampler:
    """Build sampler ``name`` (see ``SAMPLERS.names()``) for ``log_prob``; unknown options raise ``ValueError``."""
    factory = SAMPLERS.get(name)
    error = unknown_options_error(name, kw, sampler_options(name))
    if error is not None:
        raise error
    return factory(log_prob, lr=lr, temperature=temperature, seed=seed, **kw)
