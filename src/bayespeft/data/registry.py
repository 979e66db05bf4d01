"""The dataset registry, importable without torch: name -> :class:`~bayespeft.data.base.DatasetEntry`.

:data:`MODULES` names the module that registers each built-in dataset (with
:func:`~bayespeft.data.base.register_dataset`), so the names are known (a config validates, ``bayespeft list
datasets`` prints) without importing torch, torchvision or a tokenizer; ``DATASETS.get(name)`` imports that one
module. A new built-in dataset is its ``register_dataset`` call plus one line here (a test checks that they agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .base import DatasetEntry

#: built-in dataset name -> the module whose import registers it
MODULES: dict[str, str] = {
    "digits": "bayespeft.data.digits",
    "cifar10": "bayespeft.data.cifar", "cifar100": "bayespeft.data.cifar",
    "mrpc": "bayespeft.data.glue",
    "arc_easy": "bayespeft.data.arc", "arc_challenge": "bayespeft.data.arc",
}

#: name -> :class:`~bayespeft.data.base.DatasetEntry`; filled by the dataset modules (digits, cifar, glue, arc).
DATASETS: Registry[DatasetEntry] = Registry("dataset", lazy=MODULES)
