"""Named sources of pretrained weights: ``model.pretrained: NAME`` instead of ``true`` / ``false``.

A source makes (on first use) and caches a weights file for a model config, and :func:`~bayespeft.models.build_model`
loads it like ``model.path``. The one registered here is ``quickstart-upstream`` (:mod:`bayespeft.models.upstream`):
the quickstart's micro ViT pretrained on the digits 0-4, so shipped configs start from the same backbone as
``bayespeft quickstart`` without a path that only exists on one machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import Registry

if TYPE_CHECKING:
    from .config import ModelConfig


@dataclass(frozen=True)
class WeightSource:
    """``resolve(model_cfg) -> Path`` of a local weights file for that architecture (made and cached on first use)."""

    resolve: Callable[[ModelConfig], Path]
    description: str


#: name -> :class:`WeightSource` (``model.pretrained: NAME``).
WEIGHT_SOURCES: Registry[WeightSource] = Registry("pretrained-weights source")


def _quickstart_upstream(cfg: ModelConfig) -> Path:
    from .upstream import pretrain_upstream

    return pretrain_upstream(cfg)


WEIGHT_SOURCES.register("quickstart-upstream", WeightSource(
    _quickstart_upstream,
    "the quickstart's upstream pretraining: the micro_vit trained on the digits 0-4, cached under BAYESPEFT_CACHE",
))
