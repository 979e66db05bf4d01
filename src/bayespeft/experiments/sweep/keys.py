"""Dotted config keys (``adapter.r``, ``model.overrides.depth``) over raw config dicts and the config schema.

* :func:`check_key` says whether a dotted key names a field of :class:`~bayespeft.config.ExperimentConfig`
  (descending into sections, and anywhere below a free-form dict field such as ``model.overrides``), and if not,
  the closest valid key;
* :func:`get_key` / :func:`set_key` / :func:`del_key` read and write raw (YAML) config dicts;
* :func:`default_of` is the schema default of a key the raw config leaves unset;
* :func:`short_names` shortens keys for tables and progress lines without making two read the same.
"""

from __future__ import annotations

import copy
from typing import Any

from ...config import ExperimentConfig
from ...registry import closest
from ...section import Section

MISSING = object()


def _section_of(annotation: Any) -> type[Section] | None:
    args = getattr(annotation, "__args__", None) or ()
    return next((c for c in (annotation, *args) if isinstance(c, type) and issubclass(c, Section)), None)


def _is_mapping(annotation: Any) -> bool:
    args = getattr(annotation, "__args__", None) or ()
    return any(c is dict or getattr(c, "__origin__", None) is dict for c in (annotation, *args))


def all_keys(section: type[Section] = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the schema (sections expanded), e.g. ``adapter.r``, ``train.lr``."""
    out = []
    for name, f in section.model_fields.items():
        sub = _section_of(f.annotation)
        out.extend(all_keys(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"])
    return out


def check_key(key: str) -> str | None:
    """None if ``key`` is a valid dotted config key, else a message naming the closest valid key."""
    parts = key.split(".")
    model: type[Section] = ExperimentConfig
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            here = ".".join(parts[:i])
            candidates = [f"{here}.{k}" if here else k for k in fields]
            hint = closest(key, all_keys()) or closest(".".join(parts[: i + 1]), candidates)
            msg = f"unknown config key {key!r}"
            if hint:
                msg += f" (did you mean {hint!r}?)"
            return msg + (f"; valid keys under {here!r}: {', '.join(sorted(fields))}" if here else
                          f"; valid sections: {', '.join(fields)}")
        ann = fields[part].annotation
        sub = _section_of(ann)
        if i == len(parts) - 1:
            if sub is not None:
                return f"{key!r} is a whole section; sweep over its keys instead (e.g. {key}.{next(iter(sub.model_fields))})"
            return None
        if sub is None:
            if _is_mapping(ann):
                return None  # a free-form mapping: any sub-key (e.g. model.overrides.depth)
            return f"{'.'.join(parts[: i + 1])!r} is a value, not a section, so {key!r} does not exist"
        model = sub
    return None


def get_key(raw: dict, key: str, default: Any = MISSING) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_key(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def del_key(raw: dict, key: str) -> None:
    parts = key.split(".")
    node = get_key(raw, ".".join(parts[:-1])) if len(parts) > 1 else raw
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def default_of(key: str) -> Any:
    """The schema default of ``key`` (MISSING for required fields, optional sections and free-form sub-keys)."""
    model: Any = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not hasattr(model, "model_fields") or part not in model.model_fields:
            return MISSING
        f = model.model_fields[part]
        if i == len(parts) - 1:
            return MISSING if f.is_required() else f.get_default(call_default_factory=True)
        model = _section_of(f.annotation)
    return MISSING


def value_of(raw: dict, key: str) -> Any:
    """``key``'s value in the raw config, else its schema default, else MISSING."""
    v = get_key(raw, key)
    return default_of(key) if v is MISSING else v


def same_value(a: Any, b: Any) -> bool:
    """Equality for YAML values: numbers compare numerically (``1e-4`` written as a string counts as 0.0001)."""
    fa, fb = _as_number(a), _as_number(b)
    if fa is not None and fb is not None:
        return fa == fb
    return a == b


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def short_names(keys: list[str]) -> dict[str, str]:
    """Column headers and run labels: the last part of each dotted key, the whole key where two would read the same
    (``model.name`` and ``data.name`` stay whole; ``adapter.r`` is ``r``)."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}
