"""Parameter accounting and grouping of the trainable parameters (for reports and layer-wise Laplace)."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

MIB = 2**20
_PEFT_ADDED = (".lora_", ".modules_to_save.", ".ln_tuning_layers.")
_BLOCK = re.compile(r"\.(?:blocks|layers|layer|h|block)\.(\d+)\.")


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Counts and sizes of the model's parameters (each shared tensor counted once).

    Returns ``total_params`` (every parameter, including PEFT's frozen originals, trainable copies and LoRA factors,
    i.e. what PEFT's ``get_nb_trainable_parameters`` calls "all"), ``base_params`` (the backbone as built: without
    LoRA factors and PEFT's trainable copies), ``trainable_params`` (``requires_grad``),
    ``trainable_pct = 100 * trainable / base_params`` (the convention of the LoRA literature), ``lora_params``
    (parameters named ``lora_*``), ``head_params`` (trainable parameters under ``model.head_names``),
    ``model_size_mb`` and ``trainable_size_mb`` (``numel * element_size`` at each parameter's dtype, in MiB =
    2^20 bytes), and ``method`` (the adapter method, or None).
    """
    heads = list(getattr(model, "head_names", []) or [])
    total = trainable = lora = head = added = 0
    total_bytes = trainable_bytes = 0
    for name, p in model.named_parameters():
        n, b = p.numel(), p.numel() * p.element_size()
        total += n
        total_bytes += b
        if p.requires_grad:
            trainable += n
            trainable_bytes += b
            if any(name.startswith(h + ".") for h in heads):
                head += n
        if "lora_" in name:
            lora += n
        if any(t in "." + name for t in _PEFT_ADDED):
            added += n
    return {
        "method": getattr(model, "adapter_method", None),
        "total_params": total,
        "trainable_params": trainable,
        "base_params": total - added,
        "trainable_pct": 100.0 * trainable / (total - added) if total > added else 0.0,
        "lora_params": lora,
        "head_params": head,
        "model_size_mb": total_bytes / MIB,
        "trainable_size_mb": trainable_bytes / MIB,
    }


def adapter_layers(model: nn.Module) -> dict[str, list[str]]:
    """Trainable parameter names grouped by transformer block / residual stage.

    The group of a parameter is the first index ``i`` in its qualified name after ``.blocks.``, ``.layers.``,
    ``.layer.``, ``.h.`` or ``.block.`` (timm ViT, transformers ViT/BERT/Llama, GPT-2); parameters under
    ``model.head_names`` form ``"head"``; all others (embeddings, final norm, CNN stem, ...) form ``"other"``.
    Keys: ``"0", "1", ...`` in numeric order, then ``"head"``, then ``"other"`` (only non-empty groups). Names are
    in ``model.named_parameters()`` order within each group.
    """
    heads = list(getattr(model, "head_names", []) or [])
    blocks: dict[int, list[str]] = {}
    head, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if any(name.startswith(h + ".") for h in heads):
            head.append(name)
            continue
        m = _BLOCK.search(name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(name)
        else:
            other.append(name)
    out = {str(i): blocks[i] for i in sorted(blocks)}
    if head:
        out["head"] = head
    if other:
        out["other"] = other
    return out


def head_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the trainable head parameters (the trainable copy when PEFT wraps the head)."""
    heads = list(getattr(model, "head_names", []) or [])
    return [n for n, p in model.named_parameters() if p.requires_grad and any(n.startswith(h + ".") for h in heads)]
