"""SG-MCMC over the trainable parameters: samplers, schedules, chain runner, sample store, ensemble prediction.

Conventions (every sampler): ``log_prob(theta, batch) -> 0-dim tensor`` is the full-data-scaled log posterior
``N · mean_batch log p(y|x, θ) + log p(θ)``; target ``π_T(θ) ∝ p(θ|D)^{1/T} = exp(-U(θ)/T)``, ``U = -log_prob``;
Langevin step ``θ ← θ + ε ∇log_prob(θ) + sqrt(2 ε T) ξ`` with ``ε = lr``. See :mod:`bayespeft.sgmcmc.base`.

>>> s = build("sgld", log_prob, lr=1e-4, temperature=1.0, seed=0)
>>> state = s.init(theta0)
>>> state = s.step(state, batch)
"""

from __future__ import annotations

from ..lazy import attach

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.sgmcmc` loads no torch;
# SAMPLERS imports a sampler's module when that sampler is first looked up
__getattr__, __dir__, __all__ = attach(__name__, {
    "base": ["LogProb", "Sampler", "SGMCMCState"],
    "config": ["SamplerConfig"],
    "model": ["load_params", "model_log_prob", "trainable_params"],
    "predict": ["ensemble_predict", "predict_sample"],
    "registry": ["SAMPLERS", "build", "sampler_options"],
    "runner": ["ChainReport", "ChainsResult", "run_chains"],
    "schedules": ["SCHEDULES", "Constant", "Cyclical", "Polynomial", "Schedule", "build_schedule"],
    "store": ["SampleStore"],
})
