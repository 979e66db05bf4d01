"""Finding the modules an adapter acts on: LoRA targets, normalisation layers, heads (with clear errors)."""

from __future__ import annotations

import re

from torch import nn

#: Normalisation layer classes whose affine parameters ``normtune``/``hybrid`` train.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer with its own parameters (torch norms, or e.g. transformers' ``LlamaRMSNorm``)."""
    if not any(True for _ in module.parameters(recurse=False)):
        return False
    if isinstance(module, NORM_TYPES):
        return True
    cls = type(module).__name__
    return cls.endswith(("LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d"))


def norm_module_names(net: nn.Module, exclude: list[str] = ()) -> list[str]:
    """Full names of the normalisation layers of ``net`` (outside the ``exclude`` modules, e.g. the head)."""
    return [n for n, m in net.named_modules() if n and is_norm(m) and not _under(n, exclude)]


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def exact_regex(names: list[str]) -> str:
    """A regex that PEFT full-matches against module names, selecting exactly ``names``."""
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def _adaptable(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)) or type(m).__name__ == "Conv1D"


def check_targets(net: nn.Module, targets: list[str], heads: list[str]) -> None:
    """Every LoRA target must name at least one adaptable layer, with PEFT's rule (``key == t`` or ``key`` ends
    with ``"." + t``), and none may lie inside a head module (the head is trained in full instead)."""
    modules = dict(net.named_modules())
    missing, not_layer, in_head = [], [], []
    for t in targets:
        hits = [k for k in modules if k and (k == t or k.endswith("." + t))]
        if not hits:
            missing.append(t)
        elif not any(_adaptable(modules[k]) for k in hits):
            not_layer.append(f"{t} ({type(modules[hits[0]]).__name__})")
        elif any(_under(k, heads) for k in hits):
            in_head.append(t)
    if missing or not_layer:
        leaves = sorted({k.rpartition(".")[2] for k, m in modules.items() if k and _adaptable(m)})
        problems = []
        if missing:
            problems.append(f"no module named {missing}")
        if not_layer:
            problems.append(f"not a Linear/Conv/Embedding layer: {not_layer}")
        raise ValueError(
            f"adapter.target_modules: {'; '.join(problems)} in {type(net).__name__}. "
            f"Candidate layer names: {leaves[:30]}{' ...' if len(leaves) > 30 else ''}"
        )
    if in_head:
        raise ValueError(
            f"adapter.target_modules {in_head} match layers inside the head {heads}; the head is trained in full "
            "(train_head) -- choose backbone layers or set train_head: false"
        )


def check_heads(net: nn.Module, heads: list[str]) -> None:
    modules = dict(net.named_modules())
    missing = [h for h in heads if h not in modules]
    if missing:
        top = sorted(n for n, _ in net.named_children())
        raise ValueError(f"adapter.head_modules {missing} not found in {type(net).__name__}; top-level modules: {top}")
