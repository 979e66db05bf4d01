"""The adapter methods, one registry entry each; ``apply_adapter`` dispatches on ``cfg.method``.

After ``apply_adapter`` exactly these parameters have ``requires_grad=True`` (``H`` = head, if ``train_head``):

======== ================================================================ ===========================
method   trainable parameters                                             built with
======== ================================================================ ===========================
lora     ``lora_A``, ``lora_B`` of every target + H                        ``peft.LoraConfig``
normtune copies of every normalisation layer's weight/bias + H             ``peft.LNTuningConfig``
hybrid   LoRA as above + normalisation layers + H                          ``LoraConfig(modules_to_save)``
full     every parameter                                                  no PEFT
linear   the head only                                                    no PEFT
======== ================================================================ ===========================

A LoRA target ``W`` (out x in) computes ``W x + (alpha / r) B A dropout(x)`` with ``A`` (r x in) Kaiming-uniform,
``B`` (out x r) zero, so the adapted model starts equal to the base (``r (in + out)`` parameters per target). PEFT
keeps the head / normalisation layers as trainable copies (``ModulesToSaveWrapper`` / ``LNTuningLayer``) beside
frozen originals, so a saved adapter directory loads with plain ``PeftModel.from_pretrained(base, dir)``.

Importing this module imports neither torch nor PEFT (they are imported by the functions that touch a model), so
:class:`~bayespeft.adapters.AdapterConfig` checks a method and its options against :data:`ADAPTERS` while a config
is validated without loading torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import Registry
from .config import METHOD_OPTIONS, AdapterConfig

if TYPE_CHECKING:
    from ..models.task import TaskModel


@dataclass(frozen=True)
class AdapterMethod:
    """``apply(model, cfg, heads)`` mutates ``model`` (wraps ``model.backbone`` for PEFT methods).

    ``options``: the method-specific fields of :class:`AdapterConfig` (:data:`~.config.METHOD_OPTIONS`) that
    ``apply`` reads; setting any other one for this method is a config error.
    """

    apply: Callable[[TaskModel, AdapterConfig, list[str]], None]
    uses_peft: bool
    description: str
    options: tuple[str, ...] = ()


ADAPTERS: Registry[AdapterMethod] = Registry("adapter method")

#: what LoRA reads: rank, scaling, dropout, target layers, and whether the head is trained
LORA_OPTIONS = ("r", "alpha", "dropout", "target_modules", "train_head")


def register_adapter(name: str, uses_peft: bool, description: str, options: tuple[str, ...] = ()):
    unknown = sorted(set(options) - set(METHOD_OPTIONS))
    if unknown:
        raise ValueError(f"adapter method {name!r}: unknown options {unknown}; method options are {list(METHOD_OPTIONS)}")

    def deco(fn):
        ADAPTERS.register(name, AdapterMethod(fn, uses_peft, description, tuple(options)))
        return fn

    return deco


def _lora_config(model: TaskModel, cfg: AdapterConfig, heads: list[str], extra_save: list[str]):
    from peft import LoraConfig

    from .modules import check_targets

    net = model.backbone
    targets = list(cfg.target_modules or model.default_targets)
    check_targets(net, targets, heads)
    to_save = heads + extra_save
    # transformers' Conv1D (GPT-2) stores W as (in, out): PEFT must transpose the LoRA update
    conv1d = any(
        type(m).__name__ == "Conv1D" and any(n == t or n.endswith("." + t) for t in targets) for n, m in net.named_modules()
    )
    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none",
        modules_to_save=to_save or None, fan_in_fan_out=conv1d,
    )


def _wrap(model: TaskModel, peft_config) -> None:
    from peft import get_peft_model

    with warnings.catch_warnings():
        # timm's LayerNorm subclass is "unsupported" for PEFT's in/out feature probing; harmless for LN tuning
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # PEFT on transformers 5
        model.backbone = get_peft_model(model.backbone, peft_config)


@register_adapter("lora", True, "LoRA on the attention projections (or conv layers) + head", LORA_OPTIONS)
def apply_lora(model: TaskModel, cfg: AdapterConfig, heads: list[str]) -> None:
    _wrap(model, _lora_config(model, cfg, heads, []))


@register_adapter("normtune", True, "normalisation-layer affine parameters + head (PEFT LN tuning)", ("train_head",))
def apply_normtune(model: TaskModel, cfg: AdapterConfig, heads: list[str]) -> None:
    from peft import LNTuningConfig

    from .modules import exact_regex, norm_module_names

    norms = norm_module_names(model.backbone, exclude=heads)
    if not norms:
        raise ValueError(f"normtune: {model.name} has no normalisation layers (LayerNorm/RMSNorm/BatchNorm) to tune")
    # an exact regex: PEFT's list matching is by suffix, and timm has parameter-free `*.norm` modules
    _wrap(model, LNTuningConfig(target_modules=exact_regex(norms), modules_to_save=heads or None))


@register_adapter("hybrid", True, "LoRA + normalisation layers + head", LORA_OPTIONS)
def apply_hybrid(model: TaskModel, cfg: AdapterConfig, heads: list[str]) -> None:
    from .modules import norm_module_names

    norms = norm_module_names(model.backbone, exclude=heads)
    if not norms:
        raise ValueError(f"hybrid: {model.name} has no normalisation layers (LayerNorm/RMSNorm/BatchNorm) to tune")
    _wrap(model, _lora_config(model, cfg, heads, norms))


@register_adapter("full", False, "every parameter (no PEFT)")
def apply_full(model: TaskModel, cfg: AdapterConfig, heads: list[str]) -> None:
    model.requires_grad_(True)


@register_adapter("linear", False, "the classification head only (linear probe)")
def apply_linear(model: TaskModel, cfg: AdapterConfig, heads: list[str]) -> None:
    if not heads:
        raise ValueError(
            f"linear: {model.name} has no classification head to train (causal-LM multiple choice reads the "
            "pretrained LM head); use lora, normtune, hybrid or full"
        )
    model.requires_grad_(False)
    for h in heads:
        model.backbone.get_submodule(h).requires_grad_(True)


def apply_adapter(model: TaskModel, cfg: AdapterConfig) -> TaskModel:
    """Make exactly the parameters of ``cfg.method`` trainable (see the table above); returns ``model`` (mutated).

    Raises ValueError for an unknown method (listing the known ones), a target module that does not exist
    (listing candidate layer names), a model that already has an adapter, or a method the model cannot take.
    """
    from ..models.task import TaskModel
    from .modules import check_heads

    if not isinstance(model, TaskModel):
        raise TypeError(f"apply_adapter needs a bayespeft TaskModel (from build_model), got {type(model).__name__}")
    if getattr(model, "adapter_method", None) is not None:
        raise ValueError(
            f"{model.name} already has a {model.adapter_method!r} adapter; build a fresh model to apply another"
        )
    method = ADAPTERS.get(cfg.method)
    net = model.backbone
    if cfg.head_modules is not None:
        check_heads(net, list(cfg.head_modules))
        model.head_modules = list(cfg.head_modules)
    heads = list(model.head_modules) if (cfg.train_head or cfg.method == "linear") else []
    check_heads(net, heads)
    if method.uses_peft:
        model.requires_grad_(False)  # PEFT freezes the base itself; this also freezes non-backbone parameters
    method.apply(model, cfg, heads)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{cfg.method}: no trainable parameters on {model.name}; check target_modules / train_head")
    model.adapter_method = cfg.method
    model.adapter_config = cfg
    model.train(model.training)  # re-apply frozen-BatchNorm handling for the new requires_grad pattern
    return model

