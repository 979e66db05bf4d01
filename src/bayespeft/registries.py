"""One place to list every registry's names (for ``bayespeft list`` and for tests parametrised over registries)."""

from __future__ import annotations


def names(what: str) -> list[str]:
    if what == "models":
        from .models import list_models

        return list_models()
    if what == "datasets":
        from .data import list_datasets

        return list_datasets()
    if what == "methods":
        from .adapters import ADAPTERS

        return ADAPTERS.names()
    if what == "structures":
        from .laplace import STRUCTURES

        return STRUCTURES.names()
    if what == "samplers":
        from .sgmcmc import SAMPLERS

        return SAMPLERS.names()
    if what == "schedules":
        from .sgmcmc import SCHEDULES

        return SCHEDULES.names()
    raise ValueError(f"unknown registry {what!r}; choose models, datasets, methods, structures, samplers, schedules")
