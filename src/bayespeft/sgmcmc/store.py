"""``SampleStore``: posterior samples of the trainable parameters streamed to disk as safetensors.

Layout of a store directory::

    index.json                      # {"version", "metadata", "diverged": {chain: {"step", "reason"}}};
                                    #  replaced atomically when metadata or divergence changes (rare)
    samples.jsonl                   # append-only: one line {"file", "chain", "draw", "step"} per kept sample,
                                    #  written after its tensor file is in place
    diagnostics.jsonl               # append-only: one JSON line per kept sample: {"chain", "draw", <diagnostic>...}
    chain000/draw000000.safetensors # ONLY the trainable tensors of that sample (names = model parameter names)

Each sample is written as soon as it is kept (atomic temp file + rename, then one appended line), so memory does
not grow with the number of samples, keeping a sample costs one safetensors write plus a short append (no index
rewrite that grows with the store), and iteration loads one sample at a time. Already-written samples stay valid
if a later chain diverges or the process dies: a partial last line of a ``.jsonl`` file is ignored on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io import load_tensors, save_tensors, write_json

INDEX, SAMPLES, DIAG = "index.json", "samples.jsonl", "diagnostics.jsonl"


class SampleStore:
    """Open (or create) a store at ``root``. ``metadata`` (JSON-able) is recorded in the index when given."""

    def __init__(self, root: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        index = self.root / INDEX
        if index.exists():
            data = json.loads(index.read_text())
            self.metadata: dict[str, Any] = data.get("metadata", {})
            self.diverged: dict[str, dict[str, Any]] = data.get("diverged", {})
        else:
            self.metadata, self.diverged = {}, {}
        self.entries: list[dict[str, Any]] = _read_jsonl(self.root / SAMPLES)
        self._draws: dict[int, int] = {}
        for e in self.entries:
            self._draws[e["chain"]] = max(self._draws.get(e["chain"], 0), e["draw"] + 1)
        if metadata:
            self.metadata.update(metadata)
        self._flush()

    # ---- writing ---------------------------------------------------------------------------------------------
    def add(self, chain: int, params: Mapping[str, Tensor], step: int, diagnostics: Mapping[str, Any] | None = None) -> int:
        """Write one sample of chain ``chain`` (taken after sampler step ``step``); returns its index in the store."""
        draw = self._draws.get(chain, 0)
        rel = f"chain{chain:03d}/draw{draw:06d}.safetensors"
        save_tensors(self.root / rel, dict(params), metadata={"chain": str(chain), "draw": str(draw), "step": str(step)})
        if diagnostics:
            line = json.dumps({"chain": chain, "draw": draw, **{k: _jsonable(v) for k, v in diagnostics.items()}})
            with open(self.root / DIAG, "a") as f:
                f.write(line + "\n")
        entry = {"file": rel, "chain": int(chain), "draw": draw, "step": int(step)}
        with open(self.root / SAMPLES, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.entries.append(entry)
        self._draws[chain] = draw + 1
        return len(self.entries) - 1

    def update_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the store's metadata and persist it (index.json)."""
        self.metadata.update(metadata)
        self._flush()

    def mark_diverged(self, chain: int, step: int, reason: str) -> None:
        self.diverged[str(chain)] = {"step": int(step), "reason": reason}
        self._flush()

    def _flush(self) -> None:
        write_json(self.root / INDEX, {"version": 2, "metadata": self.metadata, "diverged": self.diverged})

    # ---- reading ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int, device: str | torch.device = "cpu") -> dict[str, Tensor]:
        return load_tensors(self.root / self.entries[i]["file"], device=device)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Yield samples lazily (one file read per sample), in the order they were kept."""
        for i in range(len(self.entries)):
            yield self.load(i)

    def chains(self) -> list[int]:
        return sorted({e["chain"] for e in self.entries})

    def indices(self, chain: int | None = None) -> list[int]:
        return [i for i, e in enumerate(self.entries) if chain is None or e["chain"] == chain]

    def nbytes(self) -> int:
        """Total bytes of the sample files on disk."""
        return sum((self.root / e["file"]).stat().st_size for e in self.entries)

    def diagnostic_records(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.root / DIAG)

    def diagnostic_arrays(self, chains: list[int] | None = None) -> dict[str, np.ndarray]:
        """``{name: array (n_chains, n_draws, *shape)}`` for the given chains (default: all that are not diverged),
        truncated to the shortest of those chains (R-hat/ESS need equal lengths)."""
        recs = self.diagnostic_records()
        if chains is None:
            chains = [c for c in self.chains() if str(c) not in self.diverged]
        per = {c: sorted((r for r in recs if r["chain"] == c), key=lambda r: r["draw"]) for c in chains}
        per = {c: v for c, v in per.items() if v}
        if not per:
            return {}
        n = min(len(v) for v in per.values())
        names = [k for k in per[next(iter(per))][0] if k not in ("chain", "draw")]
        return {k: np.asarray([[r[k] for r in v[:n]] for v in per.values()], dtype=np.float64) for k in names}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of an append-only JSON-lines file (a partial line from an interrupted write is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _jsonable(v: Any) -> Any:
    if torch.is_tensor(v):
        return v.detach().cpu().tolist()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return float(v) if isinstance(v, (np.floating, np.integer)) else v
