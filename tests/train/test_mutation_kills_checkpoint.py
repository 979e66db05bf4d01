"""Checkpoint RNG-state checks added for mutants that survived the suite (tests/MUTATION.md)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bayespeft.errors import CheckpointError
from bayespeft.train.checkpoint import get_rng_state, set_rng_state


def test_generator_count_mismatch_is_refused_with_the_counts():
    state = get_rng_state([torch.Generator().manual_seed(1)])
    with pytest.raises(CheckpointError, match=r"has 2 generator\(s\) but the checkpoint saved 1; resume with the same"):
        set_rng_state(state, [torch.Generator(), torch.Generator()])


def test_every_stream_continues_where_it_was_saved():
    g = torch.Generator().manual_seed(3)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = get_rng_state([g])
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    set_rng_state(state, [g])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == expected
