"""A tiny name -> object registry shared by backbones, adapters, datasets, samplers and curvature structures.

Looking up an unknown name raises :class:`UnknownNameError` listing every valid name (and the closest one), so a
typo in a config or on the command line is reported with the fix.

A registry may be told which module registers each of its built-in names (``Registry(kind, lazy={name: module})``):
its names are then known without importing those modules (torch, timm, ... stay unloaded while a config is
validated or ``bayespeft list`` runs), and :meth:`Registry.get` imports the module of a name on first use. A test
(``tests/core/test_lazy_registries.py``) imports every module and checks that each registers exactly the names the
table gives it, so the table cannot drift from the registrations.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised when a registry lookup fails; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """Return the closest valid spelling of ``name`` among ``choices`` (or None)."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


class Registry(Generic[T]):
    """Map names to objects (usually factories). ``kind`` names the registry in error messages.

    ``lazy`` maps built-in names to the module whose import registers them (see the module docstring).
    """

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator. Duplicate names are rejected."""

        def _add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        if name not in self._items and name in self._lazy:
            importlib.import_module(self._lazy[name])
            if name not in self._items:
                raise RuntimeError(f"{self.kind} {name!r}: importing {self._lazy[name]} did not register it; "
                                   "fix the registry's table of modules")
        self.check(name)
        return self._items[name]

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` (listing the valid names) unless ``name`` is known; imports nothing."""
        if name not in self:
            known = self.names()
            hint = closest(name, known)
            extra = f" Did you mean {hint!r}?" if hint else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{extra} Known {self.kind}s: {', '.join(known)}")

    def lazy_table(self) -> dict[str, str]:
        """The built-in names this registry knows before their modules are imported: name -> registering module."""
        return dict(self._lazy)

    def names(self) -> list[str]:
        return sorted(self._items.keys() | self._lazy.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
