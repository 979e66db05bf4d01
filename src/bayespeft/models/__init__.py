"""Backbones by name: timm ViTs, transformers image/text/causal models, CIFAR ResNet-18 / WRN-28-10, micro ViT.

``build_model(cfg, num_classes) -> TaskModel`` (see :mod:`bayespeft.models.task` for the interface);
``list_models()`` lists the names. Importing this package imports neither torch nor transformers (each name is
imported from its submodule on first use; the Hugging Face builders import transformers when called).
"""

from ..lazy import attach

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.models` loads no torch;
# MODELS imports a backbone's module when that backbone is first looked up
__getattr__, __dir__, __all__ = attach(__name__, {
    "build": ["build_model", "list_models", "resolve_pretrained"],
    "config": ["ModelConfig"],
    "registry": ["MODELS", "ModelEntry", "register_model"],
    "sources": ["WEIGHT_SOURCES", "WeightSource"],
    "task": ["ChoiceLM", "ImageClassifier", "SequenceClassifier", "TaskModel", "unwrap_peft"],
})
