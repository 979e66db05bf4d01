"""``SampleStore`` divergence records and a minimal index (tests/MUTATION.md, fifth pass).

Independent answer: the layout of the module docstring, ``index.json`` = ``{"version", "metadata", "diverged":
{chain: {"step", "reason"}}}``, read back as plain JSON; ``bayespeft sample`` prints ``diverged[c]["step"]``.
"""

from __future__ import annotations

import json

import torch

from bayespeft.sgmcmc.store import SampleStore


def test_a_diverged_chain_is_recorded_with_its_step_and_reason(tmp_path):
    s = SampleStore(tmp_path / "s")
    s.add(0, {"w": torch.zeros(1)}, step=0)
    s.mark_diverged(1, step=7.0, reason="non-finite log-probability")
    s.mark_diverged(3, step=2, reason="NaN")
    want = {"1": {"step": 7, "reason": "non-finite log-probability"}, "3": {"step": 2, "reason": "NaN"}}
    assert s.diverged == want
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["diverged"] == want and type(index["diverged"]["1"]["step"]) is int
    assert SampleStore(tmp_path / "s").diverged == want


def test_an_index_with_only_its_version_opens_empty(tmp_path):
    """An ``index.json`` without ``metadata`` / ``diverged`` (e.g. written by hand) means none of either."""
    root = tmp_path / "s"
    root.mkdir()
    (root / "index.json").write_text(json.dumps({"version": 2}))
    s = SampleStore(root)
    assert s.metadata == {} and s.diverged == {}
    s.update_metadata({"seed": 3})
    s.mark_diverged(0, step=1, reason="NaN")
    assert json.loads((root / "index.json").read_text()) == {
        "version": 2, "metadata": {"seed": 3}, "diverged": {"0": {"step": 1, "reason": "NaN"}}}
