"""The curvature-structure registry, importable without torch: name -> :class:`~bayespeft.laplace.base.Structure`.

:data:`MODULES` names the module that registers each built-in structure, so the names are known (a config
validates, ``bayespeft list structures`` prints) without importing torch; ``STRUCTURES.get(name)`` imports that one
module. A new structure is one file plus one line here (a test checks that they agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayespeft.registry import Registry

if TYPE_CHECKING:
    from bayespeft.laplace.base import Structure

#: built-in structure name -> the module whose import registers it
MODULES: dict[str, str] = {name: f"bayespeft.laplace.{name}" for name in ("diag", "kfac", "lowrank_kfac", "full")}

STRUCTURES: Registry[type[Structure]] = Registry("Laplace structure", lazy=MODULES)
