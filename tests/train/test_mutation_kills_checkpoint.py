"""Checkpoint RNG-state checks added for mutants that survived the suite (tests/MUTATION.md)."""

from __future__ import annotations

import datetime
import random

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from bayespeft.errors import CheckpointError
from bayespeft.io import save_tensors
from bayespeft.train.checkpoint import get_rng_state, load_state, loader_generators, set_rng_state, weights_epoch


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


def test_weights_without_the_bayespeft_format_are_refused(tmp_path):
    # an epoch in the metadata is not enough: the format tag must say it is a bayespeft training checkpoint
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"w": torch.zeros(2)}, metadata={"epoch": "3"})
    with pytest.raises(CheckpointError, match="is not a bayespeft training checkpoint"):
        weights_epoch(path)


def test_training_state_with_arbitrary_objects_is_refused(tmp_path):
    # last_state.pt is read with weights_only=True: a pickle with other objects is a corrupt checkpoint, not code to run
    path = tmp_path / "last_state.pt"
    torch.save({"epoch": 1, "when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_state(path)


def test_loader_generators_found_wherever_the_loader_keeps_them():
    ds = TensorDataset(torch.arange(6.0))
    g = torch.Generator().manual_seed(1)
    # no shuffling: only the loader holds the generator (it seeds the workers)
    assert loader_generators(DataLoader(ds, batch_size=2, shuffle=False, generator=g)) == [g]
    # no batching (batch_sampler is None): only the sampler holds it
    assert loader_generators(DataLoader(ds, batch_size=None, sampler=RandomSampler(ds, generator=g))) == [g]
    # a custom batch sampler: only batch_sampler.sampler holds it
    bs = BatchSampler(RandomSampler(ds, generator=g), batch_size=2, drop_last=False)
    assert loader_generators(DataLoader(ds, batch_sampler=bs)) == [g]
    # shuffled: loader, sampler and batch_sampler.sampler share one generator, listed once
    assert loader_generators(DataLoader(ds, batch_size=2, shuffle=True, generator=g)) == [g]
    assert loader_generators([1, 2, 3]) == []
