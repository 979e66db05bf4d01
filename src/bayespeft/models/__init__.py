"""Backbones by name: timm ViTs, transformers image/text/causal models, CIFAR ResNet-18 / WRN-28-10, micro ViT.

``build_model(cfg, num_classes) -> TaskModel`` (see :mod:`bayespeft.models.task` for the interface);
``list_models()`` lists the names. Importing this package does not import transformers (the Hugging Face
builders import it when called).
"""

from . import cifar, hf_image, hf_text, vision  # noqa: F401  (register the backbones)
from .build import build_model, list_models, resolve_pretrained
from .config import ModelConfig
from .registry import MODELS, ModelEntry, register_model
from .sources import WEIGHT_SOURCES, WeightSource
from .task import ChoiceLM, ImageClassifier, SequenceClassifier, TaskModel, unwrap_peft

__all__ = [
    "MODELS",
    "ChoiceLM",
    "ImageClassifier",
    "ModelConfig",
    "ModelEntry",
    "SequenceClassifier",
    "WEIGHT_SOURCES",
    "WeightSource",
    "TaskModel",
    "build_model",
    "list_models",
    "register_model",
    "resolve_pretrained",
    "unwrap_peft",
]
