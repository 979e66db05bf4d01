"""The ``model`` config section: which backbone, where its weights come from, and tiny-config overrides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..section import Example, Section

Dtype = Literal["float32", "bfloat16", "float16"]


class ModelConfig(Section):
    """Backbone selection. ``name`` is a :data:`bayespeft.models.MODELS` registry name (``bayespeft list models``)."""

    name: str = Field(
        description="backbone registry name (`bayespeft list models`)",
        examples=["micro_vit", "vit_base_patch16_224", "hf_text", "resnet18_cifar"],
    )
    pretrained: bool | str | None = Field(
        None,
        description=(
            "load pretrained weights (from `path`, else the backbone's Hugging Face hub id: downloaded into the hub "
            "cache on first use, read from the cache after; see `offline`). null = the backbone's "
            "default: pretrained for timm/Hugging Face backbones, random init for micro_vit/resnet18_cifar/wrn28_10 "
            "(which have no published weights; give `path` to a .safetensors state dict to load your own). A name "
            "picks a registered weights source, made and cached on first use: quickstart-upstream = the quickstart's "
            "micro_vit pretrained on the digits 0-4"
        ),
        examples=[True, False, Example("quickstart-upstream", {"model.name": "micro_vit"})],
    )
    path: str | None = Field(
        None,
        description=(
            "local weights: a Hugging Face model directory (config.json + weights), a timm weights file "
            "(.safetensors/.bin/.pth/.npz) or timm hub directory, or a .safetensors state dict for CIFAR nets"
        ),
    )
    tokenizer: str | None = Field(
        None, description="text backbones: local tokenizer directory (default: `path`); needed when building from config"
    )
    image_size: int | None = Field(
        None, description="image backbones: input resolution in pixels (default: the backbone's native size)"
    )
    max_length: int = Field(128, description="text backbones: maximum tokens per example (truncation length)")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "architecture overrides passed to the config/constructor: timm keyword arguments, transformers config "
            "attributes ({model_type: llama, ...} for hf_causal_lm from config), WRN depth/widen_factor"
        ),
        examples=[
            Example({"depth": 2, "embed_dim": 32, "num_heads": 2},
                    {"model.name": "vit_tiny_patch16_224", "model.pretrained": False, "model.image_size": 32}),
            Example({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                     "patch_size": 4}, {"model.name": "hf_vit", "model.pretrained": False, "model.image_size": 16}),
            Example({"depth": 10, "widen_factor": 1}, {"model.name": "wrn28_10", "model.image_size": 8}),
        ],
    )
    dtype: Dtype = Field("float32", description="parameter dtype of the backbone: float32, bfloat16 or float16")
    offline: bool = Field(
        False,
        description=(
            "never download: pretrained weights, tokenizer and image processor named by a hub id are read only from "
            "the Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), and a "
            "model missing there is an error naming the id and the cache. The environment variable HF_HUB_OFFLINE=1 "
            "does the same for every run. Does not change results (not part of run or result keys)"
        ),
    )

    @field_validator("name")
    @classmethod
    def _known_name(cls, v: str) -> str:
        from .registry import MODELS

        MODELS.check(v)  # raises UnknownNameError listing the known names (imports no backbone module)
        return v

    @field_validator("pretrained")
    @classmethod
    def _known_source(cls, v: bool | str | None) -> bool | str | None:
        if isinstance(v, str):
            from .sources import WEIGHT_SOURCES

            WEIGHT_SOURCES.check(v)  # raises UnknownNameError listing the sources (and the closest name)
        return v

    @model_validator(mode="after")
    def _source_or_path(self) -> ModelConfig:
        if isinstance(self.pretrained, str) and self.path is not None:
            raise ValueError(
                f"pretrained: {self.pretrained} makes its own weights file, so path ({self.path}) would be ignored: "
                "give one of them (path with pretrained: true)"
            )
        return self

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError(f"image_size must be an integer >= 2 (pixels) or null for the backbone's default, got {v}")
        return v

    @field_validator("max_length")
    @classmethod
    def _max_length(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"max_length must be a positive number of tokens, got {v}")
        return v

    @field_validator("path", "tokenizer")
    @classmethod
    def _non_empty(cls, v: str | None, info) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(f"{info.field_name} must be a non-empty path or null")
        return v
