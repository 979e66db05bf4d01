"""``SamplerConfig`` positive-number messages without an explanation (tests/MUTATION.md, fourth pass (b))."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bayespeft.sgmcmc.config import SamplerConfig


@pytest.mark.parametrize("key", ["prior_std", "poly_b"])
def test_plain_positive_options_say_what_is_allowed_and_what_was_given(key):
    with pytest.raises(ValidationError, match=rf"Value error, {key} must be a finite number > 0, got -2.0 \[type=value_error"):
        SamplerConfig(**{key: -2.0})
