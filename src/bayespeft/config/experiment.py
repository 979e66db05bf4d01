"""The experiment config: one section per stage, each owned by the library package that uses it.

``data`` (:class:`~bayespeft.data.DataConfig`), ``model`` (:class:`~bayespeft.models.ModelConfig`), ``adapter``
(:class:`~bayespeft.adapters.AdapterConfig`), ``train`` (:class:`~bayespeft.train.TrainConfig`), optionally
``laplace`` (:class:`~bayespeft.laplace.LaplaceConfig`), ``layerwise`` (:class:`~bayespeft.laplace.LayerwiseConfig`) and ``sgmcmc`` (:class:`~bayespeft.sgmcmc.SamplerConfig`),
and ``output`` (where a run's files go, defined here: only the application layer writes run directories).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from ..adapters import AdapterConfig
from ..data import DataConfig
from ..laplace import LaplaceConfig, LayerwiseConfig
from ..models import ModelConfig
from ..section import Section
from ..sgmcmc import SamplerConfig
from ..train import TrainConfig


class OutputConfig(Section):
    root: str = Field("runs", description="Directory under which each run gets its own sub-directory.")
    results_csv: str | None = Field(
        None, description="Append-only results CSV (one row per run); default <root>/results.csv."
    )
    reliability_plots: bool = Field(True, description="Write PNG plots: reliability diagrams for every evaluated predictive, and SG-MCMC trace/autocorrelation plots.")

    def csv_path(self) -> Path:
        return Path(self.results_csv) if self.results_csv else Path(self.root) / "results.csv"


class ExperimentConfig(Section):
    name: str = Field("experiment", description="Run name; used as the prefix of the run directory.")
    data: DataConfig = Field(description="Dataset, splits and loaders.")
    model: ModelConfig = Field(description="Backbone.")
    adapter: AdapterConfig = Field(description="Which parameters are tuned (lora, normtune, hybrid, full, linear).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="MAP training.")
    laplace: LaplaceConfig | None = Field(None, description="Laplace posterior (for `bayespeft laplace`).")
    layerwise: LayerwiseConfig | None = Field(None, description="Layer-wise Laplace analysis (for `bayespeft layerwise`).")
    sgmcmc: SamplerConfig | None = Field(None, description="SG-MCMC sampler (for `bayespeft sample`).")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ "):
            raise ValueError(f"name must be non-empty without '/', '\\' or spaces (got {v!r})")
        return v
