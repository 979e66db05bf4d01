"""Base class for validated config sections (neutral ground: library packages and the config loader both use it).

Every config section (data, model, adapter, train, laplace, sgmcmc, ...) is a pydantic model deriving from
:class:`Section`, defined next to the library code that reads it (``bayespeft.data.DataConfig``, ...): unknown keys
are rejected (``extra="forbid"``), every field carries a ``description`` (used for CLI help and docs), and value
checks live in validators that say what is allowed. The application package ``bayespeft.config`` assembles the
sections into an experiment config and turns pydantic's errors into one readable message naming the key and the
closest valid key; this module imports nothing from it, so the library never depends on the config loader.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class Example(NamedTuple):
    """An example value of a config field that needs other settings to be valid (``Field(examples=[...])`` holds
    plain values or these): ``with_`` maps dotted keys to the values they need, e.g. ``{"sgmcmc.sampler": "sghmc"}``.
    `bayespeft config` shows every example and the test suite checks that each one validates (and builds)."""

    value: Any
    with_: dict[str, Any]


def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: ``int | None`` -> ``[int, NoneType]``; ``Annotated[T, ...]`` -> ``[T]``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def check_number_type(value: Any, annotation: Any) -> None:
    """Refuse what pydantic's lax mode would silently convert into a number field: a boolean (``epochs: yes``,
    ``--set train.lr=true`` -> 1) for an ``int``/``float`` field, and a float (``1.0``) for an ``int`` field.
    Strings stay lax (``"1e-3"``), as do ints for float fields; lists and dicts are checked item by item.

    Raises ``ValueError`` saying what the field takes."""
    members = _members(annotation)
    if isinstance(value, bool):
        if bool not in members and (int in members or float in members):
            kind = "a number" if float in members else "an integer"
            raise ValueError(f"must be {kind}, not a boolean; YAML reads true, false, yes, no, on and off as booleans")
        return
    if isinstance(value, float) and int in members and float not in members:
        raise ValueError("must be an integer" + (f", e.g. {int(value)} (not {value})" if value.is_integer() else ""))
    if isinstance(value, (list, tuple)):
        for m in members:
            if get_origin(m) in (list, tuple) and get_args(m):
                args = get_args(m)
                items = args if get_origin(m) is tuple and Ellipsis not in args else (args[0],) * len(value)
                for v, a in zip(value, items):
                    check_number_type(v, a)
    elif isinstance(value, dict):
        for m in members:
            if get_origin(m) is dict and len(get_args(m)) == 2:
                for v in value.values():
                    check_number_type(v, get_args(m)[1])


class Section(BaseModel):
    """A strict, validated config section."""

    # defer_build: the validators are built on first validation, so `bayespeft config` (which only reads the fields)
    # does not pay for them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), defer_build=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_silent_number_conversion(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode turns True into 1 and 1.0 into 1; strict mode would also refuse "1e-3" and paths as str
        if info.field_name is not None:
            check_number_type(v, cls.model_fields[info.field_name].annotation)
        return v
