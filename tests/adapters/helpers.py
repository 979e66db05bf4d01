"""Tiny backbones for the adapter tests and independent (hand) parameter counts."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from bayespeft.assets import find_minilm_dir
from bayespeft.models import ModelConfig, TaskModel, build_model
from bayespeft.models.tiny import bpe_tokenizer, tiny_model_config, tiny_tokenizer

TEXTS = ["Question: which is a mammal? A. shark B. whale Answer:", "Hello there. Answer:", "a b c Answer:"]


@functools.lru_cache(maxsize=None)
def _pristine(key: str) -> TaskModel:
    torch.manual_seed(1234)
    if key == "minilm":
        return build_model(ModelConfig(name="hf_text", path=str(find_minilm_dir()), max_length=32), 2)
    if key == "llama":
        over = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 2, "intermediate_size": 64}
        return build_model(ModelConfig(name="hf_causal_lm", pretrained=False, overrides=over), 4, tokenizer=bpe_tokenizer())
    name = {"micro_vit": "micro_vit", "timm_vit": "vit_tiny_patch16_224", "hf_vit": "hf_vit", "bert": "hf_text",
            "gpt2": "hf_causal_lm", "wrn": "wrn28_10", "resnet": "resnet18_cifar"}[key]
    k = 4 if name == "hf_causal_lm" else 3
    return build_model(tiny_model_config(name), k, tokenizer=tiny_tokenizer(name))


def fresh(key: str) -> TaskModel:
    """A new copy of the (cached) pristine backbone ``key``: identical base weights on every call."""
    return copy.deepcopy(_pristine(key))


def inputs(model: TaskModel, batch: int = 3) -> dict[str, torch.Tensor]:
    spec = model.input_spec
    if spec.kind == "image":
        g = torch.Generator().manual_seed(7)
        return {"pixel_values": torch.randn(batch, spec.in_chans, spec.image_size, spec.image_size, generator=g)}
    return dict(spec.tokenizer(TEXTS[:batch], padding=True, truncation=True, max_length=spec.max_length, return_tensors="pt"))


def _numel(mod: nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in mod.parameters(recurse=recurse))


def hand_counts(model: TaskModel, r: int) -> dict[str, int]:
    """Trainable-parameter counts per method, from the *unadapted* model, without PEFT.

    LoRA on ``W`` (out x in): ``r (in + out)``; on a Conv2d ``k x k``: ``A`` is a conv in -> r (``r in k^2``),
    ``B`` a 1x1 conv r -> out (``out r``). GPT-2 ``Conv1D`` stores ``W`` as (in, out).
    """
    net = model.backbone
    heads = [net.get_submodule(h) for h in model.head_modules]
    head = sum(_numel(h) for h in heads)
    head_ids = {id(m) for h in heads for m in h.modules()}
    norms = sum(
        _numel(m, recurse=False) for m in net.modules()
        if id(m) not in head_ids and (isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) or "RMSNorm" in type(m).__name__)
    )
    lora = 0
    for name, m in net.named_modules():
        if name.rpartition(".")[2] not in model.default_targets and name not in model.default_targets:
            continue
        if isinstance(m, nn.Linear):
            lora += r * (m.in_features + m.out_features)
        elif isinstance(m, nn.Conv2d):
            lora += r * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels * r
        elif type(m).__name__ == "Conv1D":
            fan_in, fan_out = m.weight.shape
            lora += r * (fan_in + fan_out)
    return {
        "lora": lora + head,
        "normtune": norms + head,
        "hybrid": lora + norms + head,
        "full": _numel(model),
        "linear": head,
    }
