"""transformers image classifiers: ``hf_vit`` (ViT) and ``hf_deit`` (DeiT, without the distillation token head).

Pretrained: ``AutoModelForImageClassification.from_pretrained(model.path or the hub id: hf_vit
``google/vit-base-patch16-224-in21k``, hf_deit ``facebook/deit-base-patch16-224``)`` (a hub id is downloaded into the hub
cache when missing unless offline, see :mod:`bayespeft.models.hub`) with a new ``classifier`` of ``num_classes``
outputs; input normalisation from the directory's image processor. From config (``pretrained: false``): a
``ViTConfig``/``DeiTConfig`` with ``overrides`` and ImageNet mean/std. ``image_size`` different from the checkpoint's
resolution is handled by interpolating the position embeddings at call time (``interpolate_pos_encoding=True``),
never by re-initialising them.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..inputs import InputSpec
from .config import ModelConfig
from .hf_common import config_from, from_pretrained, hub_kwargs
from .registry import MODELS, register_model
from .targets import attention_targets
from .task import ImageClassifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _processor_stats(cfg: ModelConfig, path: str, fallback_size: int, chans: int) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(path, **hub_kwargs(cfg))
    except (OSError, ValueError) as e:
        warnings.warn(f"no image processor in {path} ({e}); using ImageNet mean/std", stacklevel=3)
        return IMAGENET_MEAN[:chans], IMAGENET_STD[:chans], fallback_size
    size = getattr(proc, "size", None) or {}
    if not isinstance(size, dict):
        size = dict(size) if hasattr(size, "keys") else {}
    native = int(size.get("height") or size.get("shortest_edge") or fallback_size)
    mean = tuple(float(v) for v in (proc.image_mean or IMAGENET_MEAN))
    std = tuple(float(v) for v in (proc.image_std or IMAGENET_STD))
    return mean, std, native


def _hf_image_builder(config_cls_name: str, model_cls_name: str):
    def build(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ImageClassifier:
        import transformers

        entry = MODELS.get(cfg.name)
        if pretrained:
            model = from_pretrained(transformers.AutoModelForImageClassification, cfg, entry, ("classifier",), num_labels=num_classes)
            chans = int(getattr(model.config, "num_channels", 3))
            mean, std, native = _processor_stats(cfg, cfg.path or entry.hub_id, int(model.config.image_size), chans)
        else:
            fixed = {"num_labels": num_classes}
            if cfg.image_size is not None:
                fixed["image_size"] = cfg.image_size
            conf = config_from(cfg, getattr(transformers, config_cls_name), **fixed)
            model = getattr(transformers, model_cls_name)(conf)
            chans = int(getattr(conf, "num_channels", 3))
            mean, std, native = IMAGENET_MEAN[:chans], IMAGENET_STD[:chans], int(conf.image_size)
        size = cfg.image_size or native
        forward_kwargs = {"interpolate_pos_encoding": True} if size != int(model.config.image_size) else {}
        spec = InputSpec(kind="image", image_size=size, in_chans=chans, mean=mean, std=std)
        return ImageClassifier(
            model, call_style="hf", forward_kwargs=forward_kwargs, name=cfg.name, family="hf_image",
            num_classes=num_classes, input_spec=spec, head_modules=["classifier"], default_targets=attention_targets(model),
        )

    return build


#: pretrained weights when no model.path is given: ViT-B/16 pre-trained on ImageNet-21k (the usual starting point for
#: transfer studies) and DeiT-B/16 (ImageNet-1k, the non-distilled model that DeiTForImageClassification loads fully)
VIT_HUB_ID, DEIT_HUB_ID = "google/vit-base-patch16-224-in21k", "facebook/deit-base-patch16-224"

register_model("hf_vit", "hf_image", True, hub_id=VIT_HUB_ID,
               description=f"transformers ViTForImageClassification ({VIT_HUB_ID}, model.path or config)")(
    _hf_image_builder("ViTConfig", "ViTForImageClassification")
)
register_model("hf_deit", "hf_image", True, hub_id=DEIT_HUB_ID,
               description=f"transformers DeiTForImageClassification ({DEIT_HUB_ID}, model.path or config)")(
    _hf_image_builder("DeiTConfig", "DeiTForImageClassification")
)
