"""timm Vision Transformers (ImageNet-pretrained ViT/DeiT) and ``micro_vit`` (a tiny ViT for 8x8 digits).

Pretrained weights come from ``cfg.path`` -- a weights file (``.safetensors``/``.bin``/``.pth``; ``.npz`` for the
original JAX checkpoints) or a timm hub directory (``config.json`` + ``model.safetensors``) -- via timm's
``pretrained_cfg_overlay``; otherwise from timm's hub id for the architecture (e.g.
``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``): ``timm.create_model(pretrained=True)`` downloads it into the
Hugging Face hub cache when missing, or, offline (``HF_HUB_OFFLINE=1`` / ``model.offline: true``), the weights file is
taken from that cache only (:mod:`bayespeft.models.hub`). timm drops the 1000-class ImageNet head when
``num_classes`` differs and initialises a new ``head``; with ``image_size`` the position embeddings are resampled
(``img_size=`` argument of timm's ViT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..inputs import InputSpec
from .config import ModelConfig
from .hub import cached_weights_file, hub_down, offline_reason, unavailable
from .registry import register_model
from .targets import attention_targets
from .task import ImageClassifier
from .weights import load_backbone_weights

TIMM_VITS = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224")

#: micro_vit defaults: 16 patches of 2x2 pixels, 2 blocks of width 32 (~18k parameters).
MICRO_VIT_DEFAULTS: dict[str, Any] = dict(
    img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, global_pool="avg"
)
#: Mean and std of all 1797 x 64 scikit-learn digits pixels after scaling to [0, 1] (pixel / 16);
#: ``tests/models`` recomputes them from scikit-learn.
DIGITS_MEAN, DIGITS_STD = 0.30526028624095713, 0.3760492217920148


def _overlay(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        return {"source": "local-dir", "file": str(p)}
    if not p.is_file():
        raise FileNotFoundError(f"model.path {p} does not exist (expected a timm weights file or hub directory)")
    return {"source": "", "file": str(p), "custom_load": p.suffix == ".npz"}


#: Weights files timm reads from a hub repo, in its order of preference.
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_hub_id(arch: str) -> str | None:
    """The Hugging Face hub id timm loads ``arch``'s default pretrained weights from (None: not on the hub)."""
    import timm

    return timm.models.get_pretrained_cfg(arch).hf_hub_id


def _create_timm(arch: str, name: str, cfg: ModelConfig, num_classes: int, pretrained: bool, **extra: Any):
    import timm

    kwargs = {**extra, **cfg.overrides}
    if cfg.image_size is not None:
        kwargs["img_size"] = cfg.image_size
    hub_id, reason, down = None, None, None
    if pretrained and cfg.path:
        kwargs["pretrained_cfg_overlay"] = _overlay(cfg.path)
    elif pretrained:
        hub_id, reason = timm_hub_id(arch), offline_reason(cfg)
        down = hub_down(cfg) if hub_id and not reason else None
        if hub_id and (reason or down):  # offline or hub unreachable: the cached file, handed to timm as a local file
            first = timm.models.get_pretrained_cfg(arch).hf_hub_filename
            files = tuple(f for f in dict.fromkeys((first, *TIMM_HUB_FILES)) if f)
            kwargs["pretrained_cfg_overlay"] = _overlay(cached_weights_file(name, hub_id, files, reason, down))
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ValueError(f"model.overrides {sorted(cfg.overrides)} not accepted by timm {arch}: {e}") from e
    except Exception as e:  # timm and huggingface_hub raise many types for missing, unreachable or corrupt files
        if not pretrained:
            raise
        if hub_id and not (reason or down) and isinstance(e, OSError):  # the download failed
            raise unavailable(name, hub_id, None, e) from e
        source = cfg.path or f"the Hugging Face cache ({hub_id})"
        raise CheckpointError(
            f"could not load pretrained weights for {name} from {source} ({type(e).__name__}: {e}). Give model.path "
            "(a timm weights file or hub directory) or set model.pretrained: false for random init"
        ) from e


def _timm_spec(model, cfg: ModelConfig) -> InputSpec:
    import timm.data

    dc = timm.data.resolve_model_data_config(model)
    chans, _, size = dc["input_size"]
    return InputSpec(
        kind="image", image_size=cfg.image_size or int(size), in_chans=int(chans),
        mean=tuple(float(v) for v in dc["mean"]), std=tuple(float(v) for v in dc["std"]),
    )


def _timm_builder(arch: str):
    def build(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ImageClassifier:
        model = _create_timm(arch, cfg.name, cfg, num_classes, pretrained)
        head = model.pretrained_cfg.get("classifier", "head")
        return ImageClassifier(
            model, name=cfg.name, family="timm", num_classes=num_classes, input_spec=_timm_spec(model, cfg),
            head_modules=[head], default_targets=attention_targets(model),
        )

    return build


for _arch in TIMM_VITS:
    register_model(_arch, "timm", True, hub_id=f"timm/{_arch}", description=f"timm {_arch} (ImageNet weights)")(
        _timm_builder(_arch)
    )


@register_model("micro_vit", "micro_vit", False, description="tiny timm ViT for 8x8 1-channel digits (random init)")
def build_micro_vit(cfg: ModelConfig, num_classes: int, pretrained: bool, tokenizer: Any = None) -> ImageClassifier:
    """timm ``VisionTransformer`` with :data:`MICRO_VIT_DEFAULTS` (``overrides`` replace any of them).

    Input: ``pixel_values`` (B, 1, 8, 8) normalised with the digits pixel mean/std. ``path`` loads a safetensors
    state dict saved from the same architecture.
    """
    from timm.models.vision_transformer import VisionTransformer

    kwargs = {**MICRO_VIT_DEFAULTS, **cfg.overrides}
    if cfg.image_size is not None:
        kwargs["img_size"] = cfg.image_size
    try:
        model = VisionTransformer(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ValueError(f"model.overrides {sorted(cfg.overrides)} not accepted by timm VisionTransformer: {e}") from e
    if pretrained:
        load_backbone_weights(model, cfg.path, ["head"])
    chans = int(kwargs["in_chans"])
    spec = InputSpec(
        kind="image", image_size=int(kwargs["img_size"]), in_chans=chans,
        mean=(DIGITS_MEAN,) * chans, std=(DIGITS_STD,) * chans,
    )
    return ImageClassifier(
        model, name=cfg.name, family="micro_vit", num_classes=num_classes, input_spec=spec,
        head_modules=["head"], default_targets=attention_targets(model),
    )
