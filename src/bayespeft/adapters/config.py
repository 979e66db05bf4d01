"""The ``adapter`` config section: which parameters of the backbone are tuned, and how."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_serializer, model_validator

from ..section import Section

#: options that only some methods read; each method's registry entry (``AdapterMethod.options``) names the ones it
#: reads. ``head_modules`` names the head for every method (last-layer Laplace uses it too), so it is not listed.
METHOD_OPTIONS = ("r", "alpha", "dropout", "target_modules", "train_head")


def _registry():
    from .methods import ADAPTERS  # imported here: the methods module imports this one

    return ADAPTERS


def methods_reading(option: str) -> list[str]:
    """The registered adapter methods that read ``option`` (one of :data:`METHOD_OPTIONS`)."""
    reg = _registry()
    return [name for name in reg.names() if option in reg.get(name).options]


def _enumerate(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


class AdapterConfig(Section):
    """Parameter-efficient fine-tuning method (built with Hugging Face PEFT for lora/normtune/hybrid).

    * ``lora``: low-rank updates ``W + (alpha / r) B A`` on ``target_modules`` (Hu et al. 2021), head trained.
    * ``normtune``: only the affine parameters of the normalisation layers (LayerNorm/RMSNorm/BatchNorm; PEFT
      ``LNTuningConfig``, Zhao et al. 2023) and the head.
    * ``hybrid``: LoRA plus trainable normalisation layers plus the head.
    * ``full``: every parameter. ``linear``: the head only (linear probe).

    ``method`` must be a name in the adapter registry (:data:`bayespeft.adapters.ADAPTERS`, ``bayespeft list
    methods``). An option of :data:`METHOD_OPTIONS` that is set explicitly for a method that does not read it (say
    ``r`` for ``full``) is an error naming the method and the option; left at its default (or set to ``null``, which
    means "not set") it is ignored, and it is left out of :meth:`model_dump` (so a dumped config or checkpoint record
    validates again).
    """

    method: str = Field("lora", description="adapter method, a name in bayespeft.adapters.ADAPTERS (`bayespeft list methods`)")
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

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # ``r: null`` (``--set adapter.r=null``) removes an option, e.g. after switching a LoRA config to ``full``
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (k in METHOD_OPTIONS and v is None)}
        return data

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        _registry().get(v)  # an unknown name raises, listing the registered ones and the closest
        return v

    @field_validator(*METHOD_OPTIONS)
    @classmethod
    def _read_by_method(cls, v: Any, info) -> Any:
        # runs only for explicitly given values (defaults are not validated), after ``method`` (defined first)
        method = info.data.get("method")
        if method is not None and info.field_name not in _registry().get(method).options:
            users = methods_reading(info.field_name)
            # the key itself is named by the location of the error (``adapter.r: applies to ...``)
            raise ValueError(f"applies to {_enumerate(users)} only; remove it (or set it to null) for method {method!r}")
        return v

    @model_serializer(mode="wrap")
    def _without_unread_options(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.method not in _registry():
            return data
        reads = _registry().get(self.method).options
        return {k: v for k, v in data.items() if k not in METHOD_OPTIONS or k in reads}

    @classmethod
    def dropping_unread(cls, settings: dict[str, Any]) -> AdapterConfig:
        """Validate ``settings`` after dropping the options its method does not read, instead of rejecting them.

        For settings carried over from another method (the quickstart reuses the LoRA section for every method) and
        for records written before those options were rejected (checkpoints of bayespeft <= 0.1.0 store every option
        for every method).
        """
        method = settings.get("method", cls.model_fields["method"].default)
        reg = _registry()
        reads = reg.get(method).options if method in reg else METHOD_OPTIONS
        return cls.model_validate({k: v for k, v in settings.items() if k not in METHOD_OPTIONS or k in reads})

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
