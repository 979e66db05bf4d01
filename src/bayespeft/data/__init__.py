"""Datasets: one module per family, looked up by name in :data:`DATASETS`.

>>> from bayespeft.data import DataConfig, build_data
>>> bundle = build_data(DataConfig(name="digits"), model.input_spec)
>>> loaders = bundle.loaders(batch_size=64, seed=0)

Registered names: ``digits`` (scikit-learn, bundled), ``cifar10``, ``cifar100``, ``mrpc``, ``arc_easy``,
``arc_challenge``. Every item is a dict of tensors with ``labels``; see :class:`DataBundle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import attach
from .registry import DATASETS

if TYPE_CHECKING:
    from ..inputs import InputSpec
    from .base import DataBundle, DatasetInfo
    from .config import DataConfig

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.data` loads no torch;
# DATASETS imports a dataset's module when that dataset is first looked up
__getattr__, __dir__, _exported = attach(__name__, {
    "base": ["DataBundle", "DatasetInfo", "Loaders", "register_dataset", "split_indices", "subsample"],
    "collate": ["Collator", "ensure_pad_token"],
    "config": ["DataConfig"],
    "fingerprint": ["dataset_fingerprint"],
})
__all__ = sorted([*_exported, "DATASETS", "build_data", "dataset_info", "list_datasets"])


def list_datasets() -> list[str]:
    """Sorted names of every registered dataset."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """Number of classes, task and modality of a registered dataset (no file I/O)."""
    return DATASETS.get(name).info


def build_data(cfg: DataConfig, spec: InputSpec) -> DataBundle:
    """Load the dataset ``cfg.name`` into train/val/test(/test_shift) datasets shaped for a model with ``spec``."""
    return DATASETS.get(cfg.name).build(cfg, spec)
