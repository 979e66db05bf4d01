"""``bayespeft config``: every key of a config section with its type, default, help text and examples.

Examples come from the fields themselves (``Field(examples=[...])``: plain values, or
:class:`~bayespeft.section.Example` for values that need other settings), never from free text, so the test suite
can check that every example shown validates.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ..section import Example, Section


def _sub_section(ann: Any) -> type[Section] | None:
    args = getattr(ann, "__args__", None) or ()
    return next((c for c in (ann, *args) if isinstance(c, type) and issubclass(c, Section)), None)


def yaml_value(v: Any) -> str:
    """``v`` as one line of YAML (what ``--set key=...`` accepts)."""
    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10**6).strip().removesuffix("...").strip()


def field_examples(section: type[Section], prefix: str = "") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """``(dotted key, example value, other settings it needs)`` for every example of every field, recursively."""
    for name, f in section.model_fields.items():
        sub = _sub_section(f.annotation)
        if sub is not None:
            yield from field_examples(sub, prefix=f"{prefix}{name}.")
            continue
        for value, with_ in _examples(f):
            yield f"{prefix}{name}", value, with_


def _examples(f: Any) -> list[tuple[Any, dict[str, Any]]]:
    return [(ex.value, dict(ex.with_)) if isinstance(ex, Example) else (ex, {}) for ex in f.examples or ()]


def _show(value: Any, with_: dict[str, Any]) -> str:
    ctx = ", ".join(f"{k}={yaml_value(v)}" for k, v in with_.items())
    return yaml_value(value) + (f" (with {ctx})" if ctx else "")


def type_name(ann: Any) -> str:
    """How ``bayespeft config`` names a field's type: ``Literal["a", "b"]`` as ``'a' | 'b'`` (also inside a union,
    e.g. ``bool | 'auto'``), ``None`` for ``NoneType``, other types as written (``int``, ``list[str] | None``)."""
    if get_origin(ann) is Literal:
        return " | ".join(repr(a) for a in get_args(ann))
    if get_origin(ann) in (Union, types.UnionType) and any(get_origin(a) is Literal for a in get_args(ann)):
        return " | ".join(type_name(a) for a in get_args(ann))
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def describe_section(section: type[Section], prefix: str = "") -> list[str]:
    """One line per field: dotted key, type, default, help text and examples (used by `bayespeft config`)."""
    out = []
    for name, f in section.model_fields.items():
        ann = f.annotation
        sub = _sub_section(ann)
        if sub is not None:
            out.append(f"{prefix}{name}: section — {f.description or ''}")
            out.extend(describe_section(sub, prefix=f"{prefix}{name}."))
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        line = f"{prefix}{name} ({type_name(ann)}, default {default}): {f.description or ''}"
        examples = _examples(f)
        if examples:
            line = line.rstrip(".") + "; e.g. " + " | ".join(_show(v, w) for v, w in examples)
        out.append(line)
    return out

