"""``build_model(cfg, num_classes)``: registry lookup, pretrained resolution, dtype."""

from __future__ import annotations

from typing import Any

import torch

from .config import ModelConfig
from .registry import MODELS
from .task import TaskModel

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_source(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with a named weights source (``pretrained: quickstart-upstream``, see :mod:`.sources`) replaced by the
    file it makes or finds in the cache (``pretrained: true, path: FILE``); other configs unchanged."""
    if not isinstance(cfg.pretrained, str):
        return cfg
    from .sources import WEIGHT_SOURCES

    path = WEIGHT_SOURCES.get(cfg.pretrained).resolve(cfg)
    return cfg.model_copy(update={"pretrained": True, "path": str(path)})


#: families whose ``model.path`` holds only weights (Hugging Face directories also give the config and tokenizer,
#: so a path with ``pretrained: false`` is meaningful there: the architecture without the weights)
WEIGHTS_ONLY_PATH = ("timm", "micro_vit", "cifar")


def resolve_pretrained(cfg: ModelConfig) -> bool:
    """``cfg.pretrained``, with ``None`` meaning "pretrained if the backbone has published weights or a path" (and a
    named weights source meaning pretrained)."""
    if isinstance(cfg.pretrained, str):
        return True
    entry = MODELS.get(cfg.name)
    if cfg.pretrained is None:
        return entry.has_pretrained or cfg.path is not None
    if cfg.pretrained is False and cfg.path is not None and entry.family in WEIGHTS_ONLY_PATH:
        raise ValueError(
            f"model.path ({cfg.path}) is given but model.pretrained is false, so {cfg.name} would be built with random "
            "weights and the path ignored: set model.pretrained: true (or null) to load it, or remove model.path"
        )
    if cfg.pretrained and not entry.has_pretrained and cfg.path is None:
        raise ValueError(
            f"{cfg.name} has no published pretrained weights: set model.pretrained: false (random init) or give "
            "model.path (a .safetensors state dict of the same architecture)"
        )
    return bool(cfg.pretrained)


def build_model(cfg: ModelConfig, num_classes: int, *, tokenizer: Any = None) -> TaskModel:
    """Build the backbone ``cfg.name`` with a ``num_classes``-way head (see :mod:`bayespeft.models.task`).

    Args:
        cfg: the model section.
        num_classes: number of classes ``K`` (answer choices for causal-LM multiple choice); logits are (B, K).
        tokenizer: text backbones only -- a Hugging Face tokenizer object to use instead of loading one from
            ``cfg.tokenizer`` / ``cfg.path`` (e.g. when building a tiny model from config in tests).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    entry = MODELS.get(cfg.name)
    cfg = resolve_source(cfg)
    if tokenizer is not None and entry.family not in ("hf_text", "hf_causal"):
        raise ValueError(f"a tokenizer was given but {cfg.name} is an image backbone ({entry.family})")
    model = entry.builder(cfg, num_classes, resolve_pretrained(cfg), tokenizer)
    if cfg.dtype != "float32":
        model = model.to(_DTYPES[cfg.dtype])
    return model


def list_models() -> list[str]:
    """Every registered backbone name."""
    return MODELS.names()
