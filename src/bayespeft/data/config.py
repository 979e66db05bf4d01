"""The ``data`` config section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..section import Section

ShiftKind = Literal["none", "rotate", "noise"]

#: Severity used when ``shift_severity`` is left unset: degrees for "rotate", pixel-noise std for "noise".
DEFAULT_SHIFT_SEVERITY: dict[str, float] = {"rotate": 30.0, "noise": 0.2}


class DataConfig(Section):
    """Which dataset to load, how to split and subsample it, and how to batch it."""

    name: str = Field(
        "digits",
        description="dataset registry name: digits (scikit-learn, bundled), cifar10, cifar100, mrpc, arc_easy, arc_challenge",
    )
    root: str = Field(
        "data",
        description=(
            "directory holding the dataset files (see each dataset's docstring for the layout); mrpc and "
            "arc_easy/arc_challenge load from the Hugging Face hub through `datasets` (nyu-mll/glue, allenai/ai2_arc; "
            "cached after the first download, HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1: cache only) when it holds "
            "none of their files"
        ),
    )
    download: bool = Field(False, description="download missing files where the dataset supports it (CIFAR via torchvision)")
    verify_checksums: bool = Field(
        True,
        description="check the md5 of the official CIFAR pickles before unpickling them (only disable for files you made yourself)",
    )
    val_fraction: float = Field(0.1, description="fraction of the training pool held out (seeded, stratified) as validation, in (0, 1)")
    test_fraction: float = Field(
        0.2, description="fraction held out as test for datasets without an official test split (digits), in (0, 1)"
    )
    split_seed: int = Field(0, description="seed of the train/val(/test) split, the subsampling and the shifted-test noise")
    batch_size: int = Field(32, description="training batch size")
    eval_batch_size: int = Field(128, description="batch size for validation/test loaders")
    num_workers: int = Field(0, description="DataLoader worker processes (0 = load in the main process)")
    augment: bool = Field(True, description="apply training augmentation (images only; never on val/test)")
    max_length: int | None = Field(None, description="text: maximum tokens per example (default: the model's InputSpec.max_length)")
    max_train: int | None = Field(None, description="keep at most this many training examples (seeded random subset)")
    max_val: int | None = Field(None, description="keep at most this many validation examples (seeded random subset)")
    max_test: int | None = Field(None, description="keep at most this many test examples (seeded random subset)")
    shift: ShiftKind = Field(
        "none", description="images: also build a shifted copy of the test set: 'rotate' (by shift_severity degrees) or 'noise' (Gaussian)"
    )
    shift_severity: float | None = Field(
        None,
        description="strength of the shift: degrees for 'rotate' (default 30), std of Gaussian noise on [0,1] pixels for 'noise' (default 0.2)",
    )

    @field_validator("val_fraction", "test_fraction")
    @classmethod
    def _fraction(cls, v: float, info) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"{info.field_name} must be strictly between 0 and 1 (e.g. 0.1), got {v}")
        return v

    @field_validator("batch_size", "eval_batch_size")
    @classmethod
    def _positive_batch(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be a positive integer, got {v}")
        return v

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"num_workers must be >= 0 (0 loads in the main process), got {v}")
        return v

    @field_validator("max_length", "max_train", "max_val", "max_test")
    @classmethod
    def _positive_or_none(cls, v: int | None, info) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be a positive integer or null (no limit), got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _known_name(cls, v: str) -> str:
        from .registry import DATASETS

        DATASETS.check(v)  # raises UnknownNameError listing the known datasets (imports no dataset module)
        return v

    @model_validator(mode="after")
    def _severity(self) -> DataConfig:
        sev = self.shift_severity
        if sev is not None and (sev != sev or sev < 0):
            raise ValueError(f"shift_severity must be a non-negative number (degrees or noise std), got {sev}")
        if self.shift == "noise" and sev == 0:
            raise ValueError("shift='noise' needs shift_severity > 0 (std of the noise on [0,1] pixels), got 0")
        return self

    @property
    def severity(self) -> float:
        """Effective shift severity (the per-kind default when ``shift_severity`` is unset; 0 for shift='none')."""
        if self.shift == "none":
            return 0.0
        return DEFAULT_SHIFT_SEVERITY[self.shift] if self.shift_severity is None else float(self.shift_severity)
