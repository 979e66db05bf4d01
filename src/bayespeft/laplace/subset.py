"""Which parameters the Laplace posterior covers ("subset"); every other parameter stays at its MAP value.

A subset is one of

* ``"all"`` — every trainable parameter (``requires_grad=True``);
* ``"last_layer"`` — the trainable parameters of the model's head (``model.head_names`` when the model has it,
  otherwise the last module, in registration order, that owns trainable parameters directly);
* a string or a list of strings — qualified module/parameter names or prefixes (``"blocks.3."``,
  ``["head", "blocks.11.attn.qkv"]``); a name matches a parameter if the parameter name equals it, starts with
  ``name + "."``, or (for names ending in ``"."``) starts with it. Names are the backbone's own, as the user knows
  them: the path that wrappers put in front (a :class:`~bayespeft.models.TaskModel`'s ``backbone.``, PEFT's
  ``base_model.model.``) may be given or left out -- ``"blocks.3."`` and
  ``"backbone.base_model.model.blocks.3."`` select the same parameters;
* a predicate ``(name, param) -> bool``.

Only trainable parameters are ever selected. Parameters are grouped by owning module (one prior-precision
group per module) and kept in ``model.named_parameters()`` order, which is the order of the flat parameter vector
``θ`` used throughout :mod:`bayespeft.laplace`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import nn

Subset = Union[str, Sequence[str], Callable[[str, torch.Tensor], bool]]


def _last_layer_names(model: nn.Module) -> list[str]:
    heads = getattr(model, "head_names", None)
    if heads:
        return list(heads)
    last = None
    for mname, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            last = mname
    return [last] if last is not None else []


def _matches(name: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


def wrapper_prefixes(model: nn.Module) -> list[str]:
    """Name prefixes that wrappers put in front of the backbone's own names, longest first.

    A :class:`~bayespeft.models.TaskModel` holds its network under ``backbone.`` (``model.backbone_prefix``:
    ``"backbone."`` or, PEFT-wrapped, ``"backbone.base_model.model."``); a bare ``peft.PeftModel`` holds it under
    ``base_model.model.``. Every level is listed, so names relative to any of them match.
    """
    full = getattr(model, "backbone_prefix", None)
    if isinstance(full, str) and full:
        levels = ["backbone.", full]
    elif hasattr(model, "peft_config") and hasattr(getattr(model, "base_model", None), "model"):
        levels = ["base_model.model."]
    else:
        levels = []
    return sorted(set(levels), key=len, reverse=True)


def user_name(name: str, prefixes: Sequence[str]) -> str:
    """``name`` without the longest wrapper prefix it starts with (the name as the backbone itself has it)."""
    return next((name[len(p):] for p in prefixes if name.startswith(p)), name)


def _matches_any_level(name: str, prefix: str, prefixes: Sequence[str]) -> bool:
    return _matches(name, prefix) or any(name.startswith(w) and _matches(name[len(w):], prefix) for w in prefixes)


def select_parameters(model: nn.Module, subset: Subset = "all") -> list[tuple[str, nn.Parameter]]:
    """Return ``[(qualified_name, parameter), ...]`` of the trainable parameters in ``subset``.

    Raises ``ValueError`` naming the subset when it selects no trainable parameter.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if callable(subset):
        chosen = [(n, p) for n, p in trainable if subset(n, p)]
        desc = f"predicate {getattr(subset, '__name__', repr(subset))}"
    else:
        if isinstance(subset, str) and subset == "all":
            chosen, desc = trainable, "'all'"
        else:
            if isinstance(subset, str) and subset == "last_layer":
                prefixes = _last_layer_names(model)
                desc = f"'last_layer' (modules {prefixes})"
            elif isinstance(subset, str):
                prefixes, desc = [subset], repr(subset)
            elif isinstance(subset, Sequence) and all(isinstance(s, str) for s in subset):
                prefixes, desc = list(subset), repr(list(subset))
            else:
                raise TypeError(
                    "subset must be 'all', 'last_layer', a module/parameter name or prefix, a list of them, "
                    f"or a predicate (name, param) -> bool; got {type(subset).__name__}"
                )
            levels = wrapper_prefixes(model)
            chosen = [(n, p) for n, p in trainable if any(_matches_any_level(n, pre, levels) for pre in prefixes)]
    if not chosen:
        sample = [user_name(n, wrapper_prefixes(model)) for n, _ in trainable][:8]
        raise ValueError(
            f"subset {desc} selects no trainable parameter (requires_grad=True). "
            f"{len(trainable)} trainable parameters exist, e.g. {sample}"
        )
    return chosen


def owner_module_name(param_name: str) -> str:
    """``"blocks.0.attn.qkv.weight" -> "blocks.0.attn.qkv"`` (``""`` for a parameter of the root module)."""
    return param_name.rpartition(".")[0]


def group_names(names: Sequence[str]) -> list[str]:
    """Prior-precision groups: the owning modules of ``names``, in first-appearance order."""
    groups: list[str] = []
    for n in names:
        m = owner_module_name(n)
        if m not in groups:
            groups.append(m)
    return groups


def live_parameters(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """The model's current parameter objects for ``names``, in that order (the ``θ`` order of a fitted structure).

    Raises ``KeyError`` when the model lacks one of them (a posterior applied to another model).
    """
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"the model has no parameters {missing[:5]}; was the posterior fitted on another model?")
    return [(n, named[n]) for n in names]
