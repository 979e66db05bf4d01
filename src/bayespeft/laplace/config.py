"""``LaplaceConfig``: the ``laplace`` section of an experiment config (validated; drives CLI help)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bayespeft.laplace.registry import STRUCTURES
from bayespeft.section import Section


class LaplaceConfig(Section):
    """Post-hoc Laplace approximation settings (see :func:`bayespeft.laplace.fit`)."""

    structure: str = Field("kfac", description="curvature structure: one of the registered structures (diag, full, kfac, lowrank_kfac)")
    subset: str | list[str] = Field(
        "all",
        description="'all', 'last_layer', a module/parameter name or prefix of the backbone (as the backbone names it, "
        "without the adapter wrapper's prefix) or a list of them",
        examples=["all", "last_layer", "blocks.1.", ["blocks.0.attn.qkv", "head"]],
    )
    curvature: Literal["ggn", "fisher"] = Field("ggn", description="exact generalised Gauss-Newton or Fisher with one sampled label per example")
    prior_precision: float | list[float] = Field(1.0, description="initial prior precision: scalar or one per group (owning module)")
    prior_method: Literal["marglik", "gridsearch", "none"] = Field("marglik", description="tune the prior by the Laplace evidence, by validation NLL on a grid, or not at all")
    layerwise_prior: bool = Field(False, description="with prior_method='marglik', one prior precision per module instead of one scalar")
    prior_steps: int = Field(100, ge=1, description="optimiser steps for prior_method='marglik'")
    prior_lr: float = Field(0.1, gt=0, description="Adam learning rate on log prior precision")
    predictive: Literal["glm", "mc"] = Field("glm", description="linearised (GLM) predictive or Monte-Carlo over sampled weights")
    link: Literal["probit", "mc"] = Field("probit", description="GLM link approximation: probit or Monte-Carlo over logits")
    n_samples: int = Field(100, ge=1, description="samples for link='mc' or predictive='mc'")
    n_kfac: int | None = Field(None, ge=1, description="rank of low-rank KFAC factors (lowrank_kfac default 10)")
    lr_threshold: int | None = Field(None, ge=1, description="factors larger than this are kept low-rank (lowrank_kfac default 100)")
    temperature: float = Field(1.0, gt=0, description="posterior temperature T: P = N/T * H_avg + P0")
    sigma_noise: float = Field(1.0, gt=0, description="Gaussian noise scale (regression only)")
    train_mode: bool = Field(False, description="collect curvature with dropout on (model.train())")
    chunk_size: int = Field(32, ge=1, description="test examples per Jacobian chunk in the GLM predictive")
    seed: int = Field(0, description="seed of the Fisher label samples and posterior samples")

    @field_validator("structure")
    @classmethod
    def _known_structure(cls, v: str) -> str:
        STRUCTURES.check(v)  # raises UnknownNameError listing the valid names (imports no structure module)
        return v

    @field_validator("prior_precision")
    @classmethod
    def _positive_prior(cls, v: float | list[float]) -> float | list[float]:
        vals = v if isinstance(v, list) else [v]
        if not vals or any(x <= 0 for x in vals):
            raise ValueError(f"prior_precision must be > 0 (scalar or non-empty list), got {v}")
        return v

    @model_validator(mode="after")
    def _kfac_options(self) -> LaplaceConfig:
        if self.n_kfac is not None and self.structure not in ("kfac", "lowrank_kfac"):
            raise ValueError(f"n_kfac applies to structure 'kfac' or 'lowrank_kfac', not {self.structure!r}")
        return self


class LayerwiseConfig(Section):
    """Layer-wise Laplace analysis settings (see :func:`bayespeft.laplace.layerwise_study`): one posterior per group
    of tuned parameters (block or adapted module), everything else at the MAP; ΔECE = ECE_MAP − ECE_Bayes."""

    structure: str = Field("kfac", description="curvature structure of every group's posterior (diag, kfac, lowrank_kfac, full)")
    curvature: Literal["ggn", "fisher"] = Field("ggn", description="exact generalised Gauss-Newton or Fisher with one sampled label per example")
    group: Literal["block", "module"] = Field("block", description="group the tuned parameters by block (stage for ResNets; plus the head) or by adapted module")
    groups: list[str] | None = Field(None, description="evaluate only these groups (names as listed by the command); default: every group")
    prior: float | Literal["marglik"] = Field("marglik", description="per-group prior precision: 'marglik' (each group's restricted evidence) or a fixed value > 0")
    predictive: Literal["mc", "glm"] = Field("mc", description="Monte-Carlo over sampled weights (the classic protocol) or linearised (GLM)")
    link: Literal["probit", "mc"] = Field("probit", description="GLM link approximation: probit or Monte-Carlo over logits")
    n_samples: int = Field(30, ge=1, description="weight samples (predictive='mc') or logit samples (link='mc')")
    greedy: int | None = Field(None, ge=1, description="forward selection of up to K groups by ECE on the validation split (never a test split)")
    n_boot: int = Field(2000, ge=2, description="bootstrap replicates of the ΔECE intervals over test examples")
    seed: int = Field(0, ge=0, description="seed of the Fisher label samples, the posterior samples and the bootstrap")

    @field_validator("structure")
    @classmethod
    def _known_structure(cls, v: str) -> str:
        STRUCTURES.check(v)
        return v

    @field_validator("prior", mode="before")
    @classmethod
    def _positive_prior(cls, v: object) -> object:
        if v == "marglik":
            return v
        try:
            value = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(v, bool) or not value > 0:
            raise ValueError(f"prior must be 'marglik' or a prior precision > 0, got {v!r}")
        return value
