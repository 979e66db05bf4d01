"""The ``adapter`` config section: which parameters of the backbone are tuned, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..section import Section

Method = Literal["lora", "normtune", "hybrid", "full", "linear"]


class AdapterConfig(Section):
    """Parameter-efficient fine-tuning method (built with Hugging Face PEFT for lora/normtune/hybrid).

    * ``lora``: low-rank updates ``W + (alpha / r) B A`` on ``target_modules`` (Hu et al. 2021), head trained.
    * ``normtune``: only the affine parameters of the normalisation layers (LayerNorm/RMSNorm/BatchNorm; PEFT
      ``LNTuningConfig``, Zhao et al. 2023) and the head.
    * ``hybrid``: LoRA plus trainable normalisation layers plus the head.
    * ``full``: every parameter. ``linear``: the head only (linear probe).
    """

    method: Method = Field("lora", description="lora | normtune | hybrid | full | linear")
    r: int = Field(8, description="LoRA rank r (1..256); lora and hybrid only")
    alpha: float = Field(16.0, description="LoRA scaling numerator: the update is (alpha / r) * B @ A")
    dropout: float = Field(0.0, description="dropout on the LoRA input, in [0, 1)")
    target_modules: list[str] | None = Field(
        None,
        description=(
            "module names to adapt with LoRA (leaf names such as qkv, q_proj, or full dotted paths); null = the "
            "architecture's default (timm ViT: qkv; transformers ViT/Llama: q_proj, v_proj; BERT/RoBERTa: query, "
            "value; GPT-2: c_attn; CIFAR CNNs: every Conv2d)"
        ),
    )
    train_head: bool = Field(True, description="train the classification head (lora, normtune, hybrid)")
    head_modules: list[str] | None = Field(
        None, description="names (in the backbone) of the head modules; null = the backbone's own head (head, classifier, fc, ...)"
    )

    @field_validator("r")
    @classmethod
    def _rank(cls, v: int) -> int:
        if not 1 <= v <= 256:
            raise ValueError(f"LoRA ranks must be >= 1 and <= 256, got r={v}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"alpha must be > 0 (the LoRA update is scaled by alpha / r), got {v}")
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {v}")
        return v

    @field_validator("target_modules", "head_modules")
    @classmethod
    def _names(cls, v: list[str] | None, info) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError(f"{info.field_name} must be null (architecture default) or a non-empty list of module names")
            bad = [s for s in v if not s or not s.strip()]
            if bad:
                raise ValueError(f"{info.field_name} contains empty names: {v}")
        return v
