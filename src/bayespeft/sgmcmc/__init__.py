"""SG-MCMC over the trainable parameters: samplers, schedules, chain runner, sample store, ensemble prediction.

Conventions (every sampler): ``log_prob(theta, batch) -> 0-dim tensor`` is the full-data-scaled log posterior
``N · mean_batch log p(y|x, θ) + log p(θ)``; target ``π_T(θ) ∝ p(θ|D)^{1/T} = exp(-U(θ)/T)``, ``U = -log_prob``;
Langevin step ``θ ← θ + ε ∇log_prob(θ) + sqrt(2 ε T) ξ`` with ``ε = lr``. See :mod:`bayespeft.sgmcmc.base`.

>>> s = build("sgld", log_prob, lr=1e-4, temperature=1.0, seed=0)
>>> state = s.init(theta0)
>>> state = s.step(state, batch)
"""

from __future__ import annotations

from . import asgld, psgld, sam_sgld, sam_sgld_r1, sghmc, sgld  # noqa: F401  (each registers its build in SAMPLERS)
from .base import LogProb, Sampler, SGMCMCState
from .config import SamplerConfig
from .model import load_params, model_log_prob, trainable_params
from .predict import ensemble_predict, predict_sample
from .registry import SAMPLERS, build, sampler_options
from .runner import ChainReport, ChainsResult, run_chains
from .schedules import SCHEDULES, Constant, Cyclical, Polynomial, Schedule, build_schedule
from .store import SampleStore

__all__ = [
    "SAMPLERS", "SCHEDULES", "build", "sampler_options", "LogProb", "Sampler", "SGMCMCState", "Schedule", "Constant",
    "Polynomial", "Cyclical", "build_schedule", "SamplerConfig", "model_log_prob", "trainable_params", "load_params",
    "ensemble_predict", "predict_sample", "run_chains", "ChainsResult", "ChainReport", "SampleStore",
]
