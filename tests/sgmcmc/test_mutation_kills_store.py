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


def test_truncate_keeps_none_of_the_chains_not_listed(tmp_path):
    s = SampleStore(tmp_path / "s")
    for chain in (0, 1):
        for step in range(3):
            s.add(chain, {"w": torch.full((1,), float(step))}, step=step, diagnostics={"loss": float(step)})
    s.truncate({0: 2})
    assert [(e["chain"], e["draw"]) for e in s.entries] == [(0, 0), (0, 1)]
    assert [(r["chain"], r["draw"]) for r in s.diagnostic_records()] == [(0, 0), (0, 1)]
    s.add(1, {"w": torch.zeros(1)}, step=9)
    assert s.entries[-1]["draw"] == 0  # chain 1 starts again at draw 0


def test_completeness_without_and_with_a_plan(tmp_path):
    import json

    s = SampleStore(tmp_path / "s")
    for chain, n in ((0, 2), (1, 1), (2, 1), (4, 3)):
        for step in range(n):
            s.add(chain, {"w": torch.zeros(1)}, step=step)
    assert s.completeness() == {"chains_asked": None, "chains_present": [0, 1, 2, 4], "draws_per_chain_asked": None,
                                "draws_present": {0: 2, 1: 1, 2: 1, 4: 3}, "unfinished": [], "complete": None}
    s.mark_diverged(2, step=1, reason="nan")
    state = {"w": torch.zeros(1)}
    s.save_chain_state(3, state, {"state": json.dumps({"status": "done"})})  # finished with no draws kept
    s.save_chain_state(4, state, {"state": json.dumps({"status": "running"})})  # more draws than asked, not done
    s.save_chain_state(5, state, {"state": json.dumps({"status": "diverged"})})
    s.update_metadata({"plan": {"chains": [0, 1, 2, 3, 4, 5], "draws_per_chain": 2}})
    assert s.completeness() == {"chains_asked": [0, 1, 2, 3, 4, 5], "chains_present": [0, 1, 2, 4],
                                "draws_per_chain_asked": 2, "draws_present": {0: 2, 1: 1, 2: 1, 4: 3},
                                "unfinished": [1, 4], "complete": False}
    s.update_metadata({"plan": {"chains": [0, 2, 3], "draws_per_chain": 2}})
    assert s.completeness()["complete"] is True and s.completeness()["unfinished"] == []
    s.update_metadata({"plan": {"chains": [0], "draws_per_chain": 0}})  # nothing asked: a stateless chain is not done
    assert s.completeness()["unfinished"] == [0]
    s.update_metadata({"plan": {"chains": [1, 6], "draws_per_chain": 1}})  # 6 absent and stateless: not finished
    assert s.completeness()["unfinished"] == [6]


def test_diagnostic_arrays_are_float64_truncated_to_the_shortest_chain_without_chain_and_draw(tmp_path):
    import numpy as np

    s = SampleStore(tmp_path / "s")
    for chain, n in ((0, 3), (1, 2)):
        for step in range(n):
            s.add(chain, {"w": torch.zeros(1)}, step=step, diagnostics={"loss": 10 * chain + step})  # integers
    arrays = s.diagnostic_arrays()
    assert list(arrays) == ["loss"] and arrays["loss"].dtype == np.float64
    assert arrays["loss"].tolist() == [[0.0, 1.0], [10.0, 11.0]]


def test_diagnostics_of_every_array_kind_are_stored_as_json_numbers(tmp_path):
    import json

    import numpy as np

    s = SampleStore(tmp_path / "s")
    s.add(0, {"w": torch.zeros(1)}, step=0, diagnostics={
        "t": torch.tensor([1.5, 2.0]), "a": np.array([3, 4]), "f": np.float32(0.5), "i": np.int64(7), "x": 1.25})
    assert s.diagnostic_records() == [{"chain": 0, "draw": 0, "t": [1.5, 2.0], "a": [3, 4], "f": 0.5, "i": 7.0,
                                       "x": 1.25}]
    assert json.loads((tmp_path / "s" / "index.json").read_text()) == {"version": 2, "metadata": {}, "diverged": {}}


def test_a_broken_line_inside_a_jsonl_file_is_skipped_and_reading_goes_on(tmp_path):
    from bayespeft.sgmcmc.store import _read_jsonl

    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b\n{"a": 3}\n')  # an interrupted append followed by a later one
    assert _read_jsonl(path) == [{"a": 1}, {"a": 3}]


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
