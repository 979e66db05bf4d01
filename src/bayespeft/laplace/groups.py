"""Grouping the trainable parameters of a (PEFT-wrapped) model by block or by adapted module, for layer-wise Laplace.

A :class:`ParamGroup` is a set of trainable parameters named as the user knows it: relative to the raw backbone
(no ``backbone.`` / PEFT ``base_model.model.`` prefix, no PEFT infixes such as ``lora_A.default`` or
``modules_to_save.default``).

``by="block"`` (default). The block stack is found from the network's structure: an ``nn.ModuleList`` /
``nn.Sequential`` whose children are named ``0..n-1`` and are composite modules of one class (timm ViT/DeiT and
micro ViT ``blocks``, transformers ``vit.layers`` / ``encoder.layer`` / GPT-2 ``transformer.h``); only outermost
stacks count. One stack: each child is a group (``"blocks.3"``, depth 3). Several stacks (the CIFAR ResNet's
``layer1``..``layer4``, the WRN's ``layer1``..``layer3``): each stack is a stage and a group (``"layer3"``, depth =
its position, 0-based). Every other trainable parameter goes to

* the head group (parameters under ``model.head_names``; named by the head module(s), e.g. ``"head"``,
  ``"classifier"``, ``"fc"``), always last;
* one group before the blocks (embeddings / CNN stem; depth -1) and one after them (final norm; depth ``n_blocks``),
  each named by the longest common module path of its parameters, or ``"a+b"`` when they share none.

A network without any block stack is grouped by its top-level modules, in order.

``by="module"``: one group per adapted module (the owning module of the parameters with PEFT infixes removed:
``"blocks.0.attn.qkv"`` holds its ``lora_A`` and ``lora_B``; transformers ViT ``q_proj`` and ``v_proj`` are separate),
depth = the depth of the block it sits in. Parameters owned directly by the root (``cls_token``, ``pos_embed``) form
one group, since they share one prior-precision group in :mod:`bayespeft.laplace`.

Depth orders the groups along the forward pass: pre-block ``-1`` < blocks ``0..L-1`` < post-block ``L`` < head
``L + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

GroupBy = Literal["block", "module"]

# PEFT adds these between a module and its parameters (``qkv.lora_A.default.weight``, ``head.modules_to_save.default.bias``)
_PEFT_INFIX = re.compile(r"\.(?:lora_A|lora_B|modules_to_save|ln_tuning_layers)\.[^.]+(?=\.|$)")
_PEFT_PARAM_DICT = re.compile(r"\.(?:lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)?$")


@dataclass(frozen=True)
class ParamGroup:
    """One group: ``name`` (user-facing), ``depth``, ``kind`` (``block``/``head``/``other``), the qualified
    ``param_names`` (as in ``model.named_parameters()``, in that order) and ``n_params`` (total elements)."""

    name: str
    depth: int
    kind: Literal["block", "head", "other"]
    param_names: tuple[str, ...]
    n_params: int


def base_prefix(model: nn.Module) -> tuple[nn.Module, str]:
    """``(raw network, its qualified-name prefix in model)``: ``"backbone.base_model.model."`` for a PEFT-wrapped
    :class:`~bayespeft.models.TaskModel`, ``"backbone."`` without PEFT, the PEFT model's path for any module that
    holds one, else ``(model, "")``."""
    if hasattr(model, "backbone_prefix") and hasattr(model, "base_network"):
        return model.base_network, model.backbone_prefix
    for name, m in model.named_modules():
        inner = getattr(getattr(m, "base_model", None), "model", None)
        if inner is not None and hasattr(m, "peft_config"):
            return inner, (name + "." if name else "") + "base_model.model."
    return model, ""


def display_name(qualified: str, prefix: str) -> str:
    """``"backbone.base_model.model.blocks.0.attn.qkv.lora_A.default"`` -> ``"blocks.0.attn.qkv"``."""
    rel = qualified[len(prefix):] if qualified.startswith(prefix) else qualified
    return _PEFT_PARAM_DICT.sub("", _PEFT_INFIX.sub("", rel))


def block_stacks(net: nn.Module) -> list[str]:
    """Names (in ``net``) of the outermost repeated-block containers, in registration order."""
    found = []
    for name, m in net.named_modules():
        if not name or not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) == 0:
            continue
        kids = list(m.named_children())
        same = len({type(c) for _, c in kids}) == 1
        composite = any(True for _ in kids[0][1].children())
        if [k for k, _ in kids] == [str(i) for i in range(len(kids))] and same and composite:
            found.append(name)
    return [s for s in found if not any(s.startswith(o + ".") for o in found)]


def _common_name(names: Sequence[str]) -> str:
    """Longest common module path of parameter names (leaf dropped), else ``"a+b"`` of their first components."""
    paths = [n.split(".")[:-1] for n in names]
    common = []
    for parts in zip(*paths):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if common:
        return ".".join(common)
    firsts: list[str] = []
    for n in names:
        first = n.split(".")[0]
        if first not in firsts:
            firsts.append(first)
    return "+".join(firsts)


def discover_groups(model: nn.Module, by: GroupBy = "block") -> list[ParamGroup]:
    """The groups of ``model``'s trainable parameters (see the module docstring), sorted by depth.

    Raises ``ValueError`` when ``by`` is unknown or the model has no trainable parameter.
    """
    if by not in ("block", "module"):
        raise ValueError(f"group must be 'block' or 'module', got {by!r}")
    net, prefix = base_prefix(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (requires_grad=True) to group; apply an adapter first")
    heads = [h + "." for h in (getattr(model, "head_names", None) or [])]
    stacks = [prefix + s for s in block_stacks(net)]
    if len(stacks) == 1:
        stack = dict(net.named_modules())[stacks[0][len(prefix):]]
        blocks = [(f"{stacks[0]}.{i}", i) for i in range(len(stack))]
    elif stacks:
        blocks = [(s, i) for i, s in enumerate(stacks)]
    else:  # no repeated blocks: top-level modules in order
        tops: list[str] = []
        for n, _ in trainable:
            if any(n.startswith(h) for h in heads):
                continue
            top = prefix + n[len(prefix):].split(".")[0]
            if top not in tops:
                tops.append(top)
        blocks = [(t, i) for i, t in enumerate(tops)]
    n_blocks = len(blocks)

    def locate(name: str) -> tuple[str, int, str]:
        """(group key, depth, kind) of one parameter in block mode."""
        if any(name.startswith(h) for h in heads):
            return "head", n_blocks + 1, "head"
        for key, depth in blocks:
            if name.startswith(key + ".") or name == key:
                return key, depth, "block"
        return "", 0, "other"

    located = [(n, p, *locate(n)) for n, p in trainable]
    first_block = next((i for i, (*_, kind) in enumerate(located) if kind == "block"), len(located))
    members: dict[str, list[tuple[str, int]]] = {}
    info: dict[str, tuple[int, str]] = {}
    for i, (n, p, key, depth, kind) in enumerate(located):
        if kind == "other":
            key, depth = ("#pre", -1) if i < first_block else ("#post", n_blocks)
        if by == "module":
            owner = n.rpartition(".")[0]
            key = "#root" if owner == prefix.rstrip(".") or not owner else display_name(owner, prefix)
        members.setdefault(key, []).append((n, p.numel()))
        info.setdefault(key, (depth, kind))
    groups = []
    for key, params in members.items():
        depth, kind = info[key]
        names = tuple(n for n, _ in params)
        shown = [display_name(n, prefix) for n in names]
        if key.startswith("#") or key == "head":
            label = _common_name(shown) if key != "#root" else "+".join(shown)
        else:
            label = display_name(key, prefix)
        groups.append(ParamGroup(label, depth, kind, names, sum(k for _, k in params)))
    order = {g.name: i for i, g in enumerate(groups)}
    return sorted(groups, key=lambda g: (g.depth, order[g.name]))


def select_groups(groups: Sequence[ParamGroup], names: str | Sequence[str]) -> list[ParamGroup]:
    """The groups called ``names`` (in ``groups`` order); ``ValueError`` listing the available names otherwise."""
    wanted = [names] if isinstance(names, str) else list(names)
    available = [g.name for g in groups]
    unknown = [n for n in wanted if n not in available]
    if unknown or not wanted:
        what = f"unknown group(s) {unknown}" if unknown else "no group selected"
        raise ValueError(f"{what}; available groups: {available}")
    return [g for g in groups if g.name in wanted]


def group_of(groups: Sequence[ParamGroup]) -> dict[str, str]:
    """``{qualified parameter name: group name}``; ``ValueError`` if a parameter is in two groups."""
    out: dict[str, str] = {}
    for g in groups:
        for n in g.param_names:
            if n in out:
                raise ValueError(f"parameter {n!r} is in groups {out[n]!r} and {g.name!r}; groups must be disjoint")
            out[n] = g.name
    return out
