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
