"""Lazy package re-exports (PEP 562): ``from bayespeft.laplace import fit`` imports only what ``fit`` needs.

A package ``__init__`` lists its public names by the submodule that defines them and installs the module-level
``__getattr__`` and ``__dir__`` returned by :func:`attach`::

    __getattr__, __dir__, __all__ = attach(__name__, {"fit": ["fit"], "base": ["STRUCTURES", "Structure"]})

The first access to a name imports its submodule and caches the value on the package, so later accesses cost a dict
lookup; submodules themselves (``bayespeft.laplace.kfac``) are imported on attribute access too. A public name
that is also its submodule's name (``bayespeft.laplace.fit``, the function in ``fit.py``) stays the public object:
the import system's ``setattr(package, "fit", <module fit>)`` is ignored, as it was when the package imported the
function eagerly. Importing a
package therefore costs nothing beyond the package itself: ``bayespeft validate`` and ``bayespeft list`` read
configs and registries without torch, timm or transformers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any


class _LazyPackage(ModuleType):
    """A package whose public names shadow same-named submodules (see the module docstring)."""

    def __setattr__(self, name: str, value: Any) -> None:
        shadowed = self.__dict__.get("_lazy_shadowed", ())
        if name in shadowed and isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            return  # the submodule was imported; the package attribute of that name is the public object
        super().__setattr__(name, value)


def attach(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` re-exporting ``exports`` (submodule -> public names)."""
    owner = {name: sub for sub, names in exports.items() for name in names}
    if len(owner) != sum(len(names) for names in exports.values()):
        raise ValueError(f"{package}: a public name is listed under two submodules")

    def __getattr__(name: str) -> Any:
        if name in owner:
            value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
        elif not name.startswith("__"):
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | owner.keys())

    module = sys.modules[package]
    module._lazy_shadowed = frozenset(name for name, sub in owner.items() if name == sub)
    module.__class__ = _LazyPackage
    return __getattr__, __dir__, sorted(owner)
