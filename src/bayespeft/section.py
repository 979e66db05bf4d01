"""Base class for validated config sections (neutral ground: library packages and the config loader both use it).

Every config section (data, model, adapter, train, laplace, sgmcmc, ...) is a pydantic model deriving from
:class:`Section`, defined next to the library code that reads it (``bayespeft.data.DataConfig``, ...): unknown keys
are rejected (``extra="forbid"``), every field carries a ``description`` (used for CLI help and docs), and value
checks live in validators that say what is allowed. The application package ``bayespeft.config`` assembles the
sections into an experiment config and turns pydantic's errors into one readable message naming the key and the
closest valid key; this module imports nothing from it, so the library never depends on the config loader.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict


class Example(NamedTuple):
    """An example value of a config field that needs other settings to be valid (``Field(examples=[...])`` holds
    plain values or these): ``with_`` maps dotted keys to the values they need, e.g. ``{"sgmcmc.sampler": "sghmc"}``.
    `bayespeft config` shows every example and the test suite checks that each one validates (and builds)."""

    value: Any
    with_: dict[str, Any]


class Section(BaseModel):
    """A strict, validated config section."""

    # defer_build: the validators are built on first validation, so `bayespeft config` (which only reads the fields)
    # does not pay for them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), defer_build=True)
