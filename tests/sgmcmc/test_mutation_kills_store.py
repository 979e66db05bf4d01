"""``SampleStore`` opening, reopening and the per-file metadata (tests/MUTATION.md, third pass).

The store was only reached through whole sampling runs: a nested new root, metadata merged on reopening, draw
numbers continued after reopening and the chain/draw/step written into each sample file were not checked.
"""

from __future__ import annotations

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
