"""``SampleStore`` opening, reopening and the per-file metadata (tests/MUTATION.md, third pass).

The store was only reached through whole sampling runs: a nested new root, metadata merged on reopening, draw
numbers continued after reopening and the chain/draw/step written into each sample file were not checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from bayespeft.sgmcmc.store import SampleStore


def test_reopening_merges_metadata_and_continues_draw_numbers(tmp_path):
    root = tmp_path / "nested" / "store"  # parents created
    s = SampleStore(root, metadata={"sampler": "sgld"})
    s.add(0, {"w": torch.zeros(2)}, step=3)
    s.add(0, {"w": torch.ones(2)}, step=5)
    again = SampleStore(root, metadata={"seed": 1})
    assert again.metadata == {"sampler": "sgld", "seed": 1}
    assert again.add(0, {"w": torch.full((2,), 2.0)}, step=7) == 2
    entry = again.entries[-1]
    assert entry == {"file": "chain000/draw000002.safetensors", "chain": 0, "draw": 2, "step": 7}
    with safe_open(root / entry["file"], "pt") as f:
        meta = f.metadata()
        assert {k: meta[k] for k in ("chain", "draw", "step")} == {"chain": "0", "draw": "2", "step": "7"}
        assert torch.equal(f.get_tensor("w"), torch.full((2,), 2.0))


# ---- fourth pass (b): completeness and the index file ---------------------------------------------------------
def _store(root, draws: dict[int, int], plan=None) -> SampleStore:
    s = SampleStore(root, metadata=None if plan is None else {"plan": plan})
    for c, n in draws.items():
        for _ in range(n):
            s.add(c, {"w": torch.zeros(1)}, step=1)
    return s


def _state(s: SampleStore, chain: int, status: str, draws: int) -> None:
    s.save_chain_state(chain, {"x": torch.zeros(1)}, {"format": "f", "state": json.dumps({"status": status, "draws": draws})})


def test_completeness_without_a_plan_lists_what_is_there(tmp_path):
    s = _store(tmp_path, {2: 1, 0: 2})
    assert s.completeness() == {"chains_asked": None, "chains_present": [0, 2], "draws_per_chain_asked": None,
                                "draws_present": {2: 1, 0: 2}, "unfinished": [], "complete": None}
    assert json.loads((tmp_path / "index.json").read_text()) == {"version": 2, "metadata": {}, "diverged": {}}


def test_a_chain_is_finished_by_its_resume_state_its_divergence_or_its_draws(tmp_path):
    plan = {"chains": [0, 1, 2, 3, 4, 5, 6], "draws_per_chain": 2, "steps_per_chain": 10}
    s = _store(tmp_path, {0: 2, 1: 1, 2: 3, 4: 1, 5: 2, 6: 1}, plan)
    s.mark_diverged(3, step=4, reason="NaN")  # no draws, diverged: finished
    _state(s, 4, "done", 1)  # finished early by its own account
    _state(s, 5, "running", 2)  # has the draws but says it is still running
    _state(s, 6, "diverged", 1)
    got = s.completeness()
    assert got["unfinished"] == [1, 5] and got["complete"] is False
    assert (got["chains_asked"], got["draws_per_chain_asked"]) == (plan["chains"], 2)
    assert got["draws_present"] == {0: 2, 1: 1, 2: 3, 4: 1, 5: 2, 6: 1}


@pytest.mark.parametrize(("want", "unfinished"), [(1, [1]), (0, [0, 1])])
def test_without_resume_states_a_chain_needs_the_asked_draws_and_at_least_one(tmp_path, want, unfinished):
    s = _store(tmp_path, {0: 1}, {"chains": [0, 1], "draws_per_chain": want, "steps_per_chain": 4})
    assert s.completeness()["unfinished"] == unfinished  # chain 1 holds nothing; want = 0 finishes nobody


def test_diagnostic_arrays_are_cut_to_the_shortest_chain_and_hold_only_the_diagnostics(tmp_path):
    s = SampleStore(tmp_path)
    for c, values in {0: [1.0], 1: [2.0, 3.0], 2: [4.0, 5.0, 6.0]}.items():
        for v in values:
            s.add(c, {"w": torch.zeros(1)}, step=1,
                  diagnostics={"lp": np.float32(v), "proj": torch.tensor([v, -v]), "k": c, "m": np.int64(c)})
    s.mark_diverged(0, step=1, reason="NaN")
    got = s.diagnostic_arrays()  # default: the chains that did not diverge, 1 and 2, cut to 2 draws
    assert set(got) == {"lp", "proj", "k", "m"} and all(a.dtype == np.float64 for a in got.values())
    np.testing.assert_array_equal(got["lp"], [[2.0, 3.0], [4.0, 5.0]])
    np.testing.assert_array_equal(got["k"], [[1, 1], [2, 2]])
    np.testing.assert_array_equal(got["m"], [[1, 1], [2, 2]])
    np.testing.assert_array_equal(got["proj"], [[[2.0, -2.0], [3.0, -3.0]], [[4.0, -4.0], [5.0, -5.0]]])
    one = s.diagnostic_arrays([0, 2])  # a chain with a single draw
    assert set(one) == {"lp", "proj", "k", "m"}
    np.testing.assert_array_equal(one["lp"], [[1.0], [4.0]])


def test_a_broken_line_inside_the_index_skips_that_line_only(tmp_path):
    s = _store(tmp_path, {0: 3})
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    (tmp_path / "samples.jsonl").write_text(lines[0] + "\n" + lines[1][:10] + "\n" + lines[2] + "\n")
    assert [e["draw"] for e in SampleStore(tmp_path).entries] == [0, 2]
