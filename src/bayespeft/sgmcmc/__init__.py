"""SG-MCMC over the trainable parameters: samplers, schedules, chain runner, sample store, ensemble prediction.

Conventions (every sampler): ``log_prob(theta, batch) -> 0-dim tensor`` is the full-data-scaled log posterior
``N · mean_batch log p(y|x, θ) + log p(θ)``; target ``π_T(θ) ∝ p(θ|D)^{1/T} = exp(-U(θ)/T)``, ``U = -log_prob``;
Langevin step ``θ ← θ + ε ∇log_prob(θ) + sqrt(2 ε T) ξ`` with ``ε = lr``. See :mod:`bayespeft.sgmcmc.base`.

>>> s = build("sgld", log_prob, lr=1e-4, temperature=1.0, seed=0)
>>> state = s.init(theta0)
>>> state = s.step(state, batch)
"""

from __future__ import annotations

import inspect
from typing import Any

from ..registry import Registry
from . import asgld, psgld, sam_sgld, sam_sgld_r1, sghmc, sgld
from .base import LogProb, Sampler, SGMCMCState
from .schedules import SCHEDULES, Constant, Cyclical, Polynomial, Schedule, build_schedule

SAMPLERS: Registry = Registry("sampler")
for _name, _mod in [("sgld", sgld), ("psgld", psgld), ("asgld", asgld), ("sghmc", sghmc), ("sam_sgld", sam_sgld),
                    ("sam_sgld_r1", sam_sgld_r1)]:
    SAMPLERS.register(_name, _mod.build)

_COMMON = ("log_prob", "lr", "temperature", "seed")


def sampler_options(name: str) -> dict[str, Any]:
    """Sampler-specific keyword options of ``name`` with their defaults (beyond lr, temperature, seed)."""
    sig = inspect.signature(SAMPLERS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in _COMMON}


def build(name: str, log_prob: LogProb, lr: float | Schedule, temperature: float = 1.0, seed: int = 0, **kw: Any) -> Sampler:
    """Build sampler ``name`` (see ``SAMPLERS.names()``) for ``log_prob``; unknown options raise ``ValueError``."""
    factory = SAMPLERS.get(name)
    allowed = sampler_options(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ValueError(f"sampler {name!r} has no option(s) {bad}; allowed options: {sorted(allowed) or 'none'}")
    return factory(log_prob, lr=lr, temperature=temperature, seed=seed, **kw)


from .config import SamplerConfig  # noqa: E402
from .model import load_params, model_log_prob, trainable_params  # noqa: E402
from .predict import ensemble_predict, predict_sample  # noqa: E402
from .runner import ChainReport, ChainsResult, run_chains  # noqa: E402
from .store import SampleStore  # noqa: E402

__all__ = [
    "SAMPLERS", "SCHEDULES", "build", "sampler_options", "Sampler", "SGMCMCState", "Schedule", "Constant",
    "Polynomial", "Cyclical", "build_schedule", "SamplerConfig", "model_log_prob", "trainable_params", "load_params",
    "ensemble_predict", "predict_sample", "run_chains", "ChainsResult", "ChainReport", "SampleStore",
]
