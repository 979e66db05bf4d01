"""The backbone registry: every model name maps to a :class:`ModelEntry` (builder + family facts).

:data:`MODULES` names the module that registers each built-in backbone, so the names are known (a config
validates, ``bayespeft list models`` prints) without importing torch, timm or transformers; ``MODELS.get(name)``
imports that one module. A new built-in backbone is its ``register_model`` call plus one line here (a test checks
that the two agree).
"""

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


_VISION, _CIFAR = "bayespeft.models.vision", "bayespeft.models.cifar"
_HF_IMAGE, _HF_TEXT = "bayespeft.models.hf_image", "bayespeft.models.hf_text"

#: built-in backbone name -> the module whose import registers it
MODULES: dict[str, str] = {
    "vit_base_patch16_224": _VISION, "vit_tiny_patch16_224": _VISION, "deit_small_patch16_224": _VISION,
    "deit_tiny_patch16_224": _VISION, "micro_vit": _VISION,
    "resnet18_cifar": _CIFAR, "wrn28_10": _CIFAR,
    "hf_vit": _HF_IMAGE, "hf_deit": _HF_IMAGE,
    "roberta-base": _HF_TEXT, "bert-base-uncased": _HF_TEXT, "hf_text": _HF_TEXT, "hf_causal_lm": _HF_TEXT,
    "phi-2": _HF_TEXT,
}

MODELS: Registry[ModelEntry] = Registry("model", lazy=MODULES)


def register_model(name: str, family: str, has_pretrained: bool, hub_id: str | None = None, description: str = ""):
    """Decorator registering ``builder`` under ``name``."""

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.register(name, ModelEntry(builder, family, has_pretrained, hub_id, description))
        return builder

    return deco
