"""``sgmcmc.resume``: which state fields are buffers, and the refusal messages (tests/MUTATION.md, fourth pass)."""

from __future__ import annotations

import pytest
import torch

from bayespeft.sgmcmc.registry import build
from bayespeft.sgmcmc.resume import buffer_fields, capture_rng, read_info, restore_rng


def _log_prob(theta, batch):
    return -(theta["w"] ** 2).sum()


@pytest.mark.parametrize("name,expected", [("sgld", []), ("sghmc", ["momenta"]), ("psgld", ["square_avg"]),
                                           ("asgld", ["exp_avg", "exp_avg_sq"])])
def test_buffers_are_the_list_fields_beyond_the_shared_ones(name, expected):
    state = build(name, _log_prob, lr=1e-3).init({"w": torch.zeros(2)})
    assert buffer_fields(state) == expected


def test_resume_refusals_say_what_was_wrong():
    loader = torch.utils.data.DataLoader(list(range(4)), shuffle=True, generator=torch.Generator().manual_seed(0))
    snap = capture_rng(loader)
    with pytest.raises(ValueError, match=r"^the train loader has 0 generator\(s\) but the resume state saved 1; "
                       r"resume with the same data loader setup$"):
        restore_rng(snap, torch.utils.data.DataLoader(list(range(4))))
    with pytest.raises(ValueError, match=r"^not an SG-MCMC resume state \(format 'other', expected "
                       r"bayespeft\.sgmcmc\.resume/1\)$"):
        read_info({}, {"format": "other"})
