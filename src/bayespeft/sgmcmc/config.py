"""``SamplerConfig``: the validated ``sgmcmc`` config section (sampler, schedule, chains, prior, diagnostics).

Every bad value fails when the config is built (not mid-run) with a message saying what is allowed.
Units: ``epochs`` and ``burn_in_epochs`` count passes over the training loader; ``thin`` counts sampler steps.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..section import Example, Section


def _finite_pos(name: str, v: float, extra: str = "") -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0{extra}, got {v}")
    return v


class SamplerConfig(Section):
    sampler: str = Field("sgld", description="SG-MCMC algorithm: sgld, psgld, asgld, sghmc, sam_sgld, sam_sgld_r1.")
    lr: float = Field(1e-4, description="Step size ε (peak ε for cyclical, a in a(b+t)^-γ for polynomial); update "
                      "θ ← θ + ε∇log p(θ|D) + sqrt(2εT)ξ.")
    temperature: float = Field(1.0, description="T > 0; target p(θ|D)^(1/T). T=1 Bayes posterior, T<1 cold.")
    options: dict[str, float] = Field(
        default_factory=dict, description="Sampler-specific options (keyword arguments of the sampler's build).",
        examples=[Example({"friction": 0.1}, {"sgmcmc.sampler": "sghmc"}),
                  Example({"rho": 0.05}, {"sgmcmc.sampler": "sam_sgld"}),
                  Example({"alpha": 0.99}, {"sgmcmc.sampler": "psgld"})],
    )
    schedule: Literal["constant", "polynomial", "cyclical"] = Field("constant", description="Step-size schedule.")
    poly_b: float = Field(1.0, description="polynomial schedule: b in ε_t = lr (b + t)^-γ (> 0).")
    poly_gamma: float = Field(0.55, description="polynomial schedule: γ in (0, 1]; (0.5, 1] gives Σε=∞, Σε²<∞.")
    cycles: int = Field(4, description="cyclical schedule: number of cosine cycles M >= 1.")
    exploration_fraction: float = Field(0.5, description="cyclical schedule: fraction β in [0, 1) of each cycle spent "
                                        "exploring (no noise, no samples kept).")
    epochs: int = Field(10, description="Passes over the training loader per chain (>= 1).")
    burn_in_epochs: float = Field(2.0, description="Epochs discarded at the start of each chain (0 <= burn-in < epochs).")
    thin: int = Field(1, description="Keep one sample every `thin` steps after burn-in (>= 1).")
    n_chains: int = Field(2, description="Number of chains (>= 1); R-hat needs >= 2 for a between-chain check.")
    vectorize_chains: bool | Literal["auto"] = Field(False, description="Run the chains as one batched computation "
                                                      "(torch.func.vmap over stacked parameters): true, false, or "
                                                      "auto (when the sampler is elementwise -- sgld, psgld, asgld, "
                                                      "sghmc -- and the model runs under vmap; else one at a time). "
                                                      "Same batches and noise per chain as one at a time; samples "
                                                      "float-close, not bit-identical. resume runs one at a time.")
    init: Literal["map", "jitter", "prior"] = Field("map", description="Chain start: the model's current (MAP) "
                                                     "values, MAP + N(0, init_jitter²), or a draw from the prior.")
    init_jitter: float = Field(1e-3, description="Std of the Gaussian jitter added to the MAP when init='jitter' (>= 0).")
    seed: int = Field(0, description="Chain c uses seed + c for its noise generator (and its jitter).")
    prior_std: float = Field(1.0, description="Std σ > 0 of the isotropic Gaussian prior N(center, σ² I) on the "
                             "trainable parameters.")
    prior_center: Literal["zero", "init"] = Field("zero", description="Prior mean: 0, or the trainable values at the "
                                                  "start (MAP / pretrained).")
    n_projections: int = Field(4, description="Number K >= 0 of fixed random projections of θ recorded per sample.")
    probe_size: int = Field(64, description="Examples (from the first training batches) in the diagnostic probe set.")
    divergence_check_every: int = Field(10, description="Steps between NaN/Inf checks (each check syncs the device).")
    rhat_strict: float = Field(1.01, description="Strict R-hat threshold of the convergence verdict.")
    rhat_lenient: float = Field(1.05, description="Lenient R-hat threshold of the convergence verdict.")
    min_ess_per_chain: float = Field(100.0, description="Minimum bulk and tail ESS per chain for the verdict.")

    @field_validator("sampler")
    @classmethod
    def _sampler_known(cls, v: str) -> str:
        from .registry import SAMPLERS

        SAMPLERS.check(v)  # raises UnknownNameError (a ValueError) listing the valid samplers; imports no sampler
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        return _finite_pos("lr", v, " (the step size ε)")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        return _finite_pos("temperature", v, " (T=1 is the Bayes posterior, 0 < T < 1 a cold posterior)")

    @field_validator("prior_std")
    @classmethod
    def _prior_std(cls, v: float) -> float:
        return _finite_pos("prior_std", v)

    @field_validator("poly_b")
    @classmethod
    def _poly_b(cls, v: float) -> float:
        return _finite_pos("poly_b", v)

    @field_validator("poly_gamma")
    @classmethod
    def _poly_gamma(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"poly_gamma must lie in (0, 1] (Welling & Teh use (0.5, 1]), got {v}")
        return v

    @field_validator("cycles", "epochs", "thin", "n_chains", "divergence_check_every", "probe_size")
    @classmethod
    def _at_least_one(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be an integer >= 1, got {v}")
        return v

    @field_validator("n_projections")
    @classmethod
    def _nproj(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"n_projections must be >= 0, got {v}")
        return v

    @field_validator("exploration_fraction")
    @classmethod
    def _expl(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"exploration_fraction must lie in [0, 1), got {v}")
        return v

    @field_validator("init_jitter")
    @classmethod
    def _jitter(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"init_jitter must be a finite number >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SamplerConfig:
        if not 0 <= self.burn_in_epochs < self.epochs:
            raise ValueError(f"burn_in_epochs must satisfy 0 <= burn_in_epochs < epochs ({self.epochs}), "
                             f"got {self.burn_in_epochs}: no samples would be kept")
        if not 1 <= self.rhat_strict <= self.rhat_lenient:
            raise ValueError(f"need 1 <= rhat_strict <= rhat_lenient, got {self.rhat_strict}, {self.rhat_lenient}")
        if self.min_ess_per_chain <= 0:
            raise ValueError(f"min_ess_per_chain must be > 0, got {self.min_ess_per_chain}")
        from .options import OPTION_CHECKS, VECTORIZABLE, check_options

        if self.vectorize_chains is True and self.sampler not in VECTORIZABLE:
            raise ValueError(f"vectorize_chains: true needs an elementwise sampler ({', '.join(sorted(VECTORIZABLE))}); "
                             f"{self.sampler!r} uses one global gradient norm per chain. Set vectorize_chains to "
                             "'auto' or false")

        # option names (listing the allowed ones) and values, by the checks each sampler's build runs: for a built-in
        # sampler without importing it (or torch); a sampler registered by the user is built once to check them
        if self.sampler in OPTION_CHECKS:
            check_options(self.sampler, self.options)
        else:
            from .registry import build

            build(self.sampler, _never_called, lr=self.lr, temperature=self.temperature, seed=self.seed, **self.options)
        return self


def _never_called(theta, batch):  # pragma: no cover - build() only stores log_prob
    raise RuntimeError("config validation must not evaluate log_prob")
