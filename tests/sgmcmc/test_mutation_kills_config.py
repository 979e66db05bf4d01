"""``SamplerConfig`` positive-number message without an explanation (tests/MUTATION.md, fourth pass)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bayespeft.sgmcmc.config import SamplerConfig


@pytest.mark.parametrize("field", ["prior_std", "poly_b"])
def test_a_non_positive_value_is_refused_with_the_plain_message(field):
    with pytest.raises(ValidationError, match=f"{field} must be a finite number > 0, got -1.0"):
        SamplerConfig(**{field: -1.0})
