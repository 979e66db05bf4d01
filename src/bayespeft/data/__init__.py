"""Datasets: one module per family, looked up by name in :data:`DATASETS`.

>>> from bayespeft.data import DataConfig, build_data
>>> bundle = build_data(DataConfig(name="digits"), model.input_spec)
>>> loaders = bundle.loaders(batch_size=64, seed=0)

Registered names: ``digits`` (scikit-learn, bundled), ``cifar10``, ``cifar100``, ``mrpc``, ``arc_easy``,
``arc_challenge``. Every item is a dict of tensors with ``labels``; see :class:`DataBundle`.
"""

from __future__ import annotations

from ..inputs import InputSpec
from . import arc, cifar, digits, glue  # noqa: F401  (register the datasets)
from .base import DATASETS, DataBundle, DatasetInfo, Loaders, register_dataset, split_indices, subsample
from .collate import Collator, ensure_pad_token
from .config import DataConfig

__all__ = [
    "DATASETS", "Collator", "DataBundle", "DataConfig", "DatasetInfo", "Loaders", "build_data", "dataset_info",
    "ensure_pad_token", "list_datasets", "register_dataset", "split_indices", "subsample",
]


def list_datasets() -> list[str]:
    """Sorted names of every registered dataset."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """Number of classes, task and modality of a registered dataset (no file I/O)."""
    return DATASETS.get(name).info


def build_data(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    """Load the dataset ``cfg.name`` into train/val/test(/test_shift) datasets shaped for a model with ``spec``."""
    return DATASETS.get(cfg.name).build(cfg, spec)
