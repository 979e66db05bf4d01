"""CIFAR backbones (32x32 RGB, random init unless ``path`` gives a safetensors state dict).

* ``resnet18_cifar``: torchvision ``resnet18`` with the usual CIFAR stem (He et al. 2016, Sec. 4.2 variant used by
  e.g. Kuangliu's and SWAG's code): ``conv1`` 3x3 stride 1 (no 7x7 stride-2), no max-pool; head ``fc``. 11.17M params.
* ``wrn28_10``: :class:`~bayespeft.models.wrn.WideResNet` (``overrides``: ``depth``, ``widen_factor``, ``dropout``).

Input normalisation: CIFAR-10 training-set per-channel pixel mean/std on [0, 1] (std of all pixels, not the often
copied 0.2023/0.1994/0.2010, which are per-image stds). Default LoRA targets: every ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..inputs import InputSpec
from .config import ModelConfig
from .registry import register_model
from .targets import conv_targets
from .task import ImageClassifier
from .weights import load_backbone_weights
from .wrn import WideResNet

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _spec(cfg: ModelConfig) -> InputSpec:
    return InputSpec(kind="image", image_size=cfg.image_size or 32, in_chans=3, mean=CIFAR_MEAN, std=CIFAR_STD)


def _finish(model: nn.Module, cfg: ModelConfig, num_classes: int, pretrained: bool) -> ImageClassifier:
    if pretrained:
        load_backbone_weights(model, cfg.path, ["fc"])
    return ImageClassifier(
        model, name=cfg.name, family="cifar", num_classes=num_classes, input_spec=_spec(cfg),
        head_modules=["fc"], default_targets=conv_targets(model),
    )


@register_model("resnet18_cifar", "cifar", False, description="torchvision ResNet-18 with a CIFAR 3x3 stem, no max-pool")
def build_resnet18_cifar(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ImageClassifier:
    from torchvision.models import resnet18

    try:
        model = resnet18(weights=None, num_classes=num_classes, **cfg.overrides)
    except TypeError as e:
        raise ValueError(f"model.overrides {sorted(cfg.overrides)} not accepted by torchvision resnet18: {e}") from e
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    model.maxpool = nn.Identity()
    return _finish(model, cfg, num_classes, pretrained)


@register_model("wrn28_10", "cifar", False, description="Wide ResNet 28-10 (Zagoruyko & Komodakis 2016)")
def build_wrn28_10(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ImageClassifier:
    allowed = {"depth", "widen_factor", "dropout"}
    bad = sorted(set(cfg.overrides) - allowed)
    if bad:
        raise ValueError(f"model.overrides {bad} not accepted by wrn28_10; allowed: {sorted(allowed)}")
    model = WideResNet(num_classes, **cfg.overrides)
    return _finish(model, cfg, num_classes, pretrained)
