"""The backbone registry: every model name maps to a :class:`ModelEntry` (builder + family facts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """One registered backbone.

    builder: ``(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any | None) -> TaskModel``.
    family: "timm", "micro_vit", "hf_image", "hf_text", "hf_causal" or "cifar".
    has_pretrained: whether published weights exist (decides ``pretrained: null``).
    hub_id: the Hugging Face hub id looked up in the local cache when ``pretrained`` and no ``path`` is given.
    """

    builder: Callable[..., Any]
    family: str
    has_pretrained: bool
    hub_id: str | None = None
    description: str = ""


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, family: str, has_pretrained: bool, hub_id: str | None = None, description: str = ""):
    """Decorator registering ``builder`` under ``name``."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.register(name, ModelEntry(builder, family, has_pretrained, hub_id, description))
        return builder

    return deco
