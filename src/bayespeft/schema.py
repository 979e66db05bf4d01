"""Base class for validated config sections.

Every config section (data, model, adapter, train, laplace, sgmcmc, ...) is a pydantic model deriving from
:class:`Section`: unknown keys are rejected (``extra="forbid"``), every field carries a ``description`` (used for
CLI help and docs), and value checks live in validators that say what is allowed.
``bayespeft.config`` turns pydantic's errors into one readable message naming the key and the closest valid key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A strict, validated config section."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
