"""``sgmcmc/resume.py``: which state fields are saved, and the loader mismatch message (tests/MUTATION.md, fourth
pass (b)). The resume tests only ran whole runs with one loader setup and never read what ``buffer_fields`` lists."""

from __future__ import annotations

import re

import pytest
import torch

from bayespeft.sgmcmc import psgld, sghmc, sgld
from bayespeft.sgmcmc.resume import buffer_fields, capture_rng, read_info, restore_rng


def test_buffers_are_the_sampler_own_list_fields_only():
    theta = {"w": torch.zeros(3), "b": torch.zeros(2)}
    assert buffer_fields(sgld.init(theta)) == []  # params, leaves, noise, ... are shared state, not buffers
    assert buffer_fields(sghmc.init(theta)) == ["momenta"]
    assert buffer_fields(psgld.init(theta)) == ["square_avg"]


def test_restoring_into_a_loader_with_another_number_of_generators_is_refused():
    data = torch.utils.data.TensorDataset(torch.arange(4.0))
    shuffled = torch.utils.data.DataLoader(data, shuffle=True, generator=torch.Generator().manual_seed(0))
    snap = capture_rng(shuffled)
    msg = ("the train loader has 0 generator(s) but the resume state saved 1; "
           "resume with the same data loader setup")
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        restore_rng(snap, torch.utils.data.DataLoader(data))


def test_a_file_of_another_format_is_refused_with_both_formats_named():
    msg = "not an SG-MCMC resume state (format 'bayespeft.other/1', expected bayespeft.sgmcmc.resume/1)"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        read_info({}, {"format": "bayespeft.other/1", "state": "{}"})
