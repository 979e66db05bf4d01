"""``SampleStore``: posterior samples of the trainable parameters streamed to disk as safetensors.

Layout of a store directory::

    index.json                      # {"version", "metadata", "diverged": {chain: {"step", "reason"}}};
                                    #  replaced atomically when metadata or divergence changes (rare)
    samples.jsonl                   # append-only: one line {"file", "chain", "draw", "step"} per kept sample,
                                    #  written after its tensor file is in place
    diagnostics.jsonl               # append-only: one JSON line per kept sample: {"chain", "draw", <diagnostic>...}
    chain000/draw000000.safetensors # ONLY the trainable tensors of that sample (names = model parameter names)
    resume/chain000.safetensors     # resume state of chain 0 (see :mod:`.resume`): sampler state, RNGs, position and
                                    #  {"status", "draws", ...} as JSON in its metadata; replaced atomically at the
                                    #  chain's start, after every kept sample and at its end

The index metadata ``plan`` (``{"chains": [...], "draws_per_chain": D, "steps_per_chain": T}``) records what was
asked, so that :meth:`SampleStore.completeness` can tell an interrupted store from a finished one.

Each sample is written as soon as it is kept (atomic temp file + rename, then one appended line), so memory does
not grow with the number of samples, keeping a sample costs one safetensors write plus a short append (no index
rewrite that grows with the store), and iteration loads one sample at a time. Already-written samples stay valid
if a later chain diverges or the process dies: a partial last line of a ``.jsonl`` file is ignored on reading, and
:meth:`SampleStore.truncate` (run before resuming) drops the lines written after a chain's last resume state.
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

from safetensors import safe_open

from ..io import load_tensors, save_tensors, write_json, write_text

INDEX, SAMPLES, DIAG, RESUME = "index.json", "samples.jsonl", "diagnostics.jsonl", "resume"
#: chain statuses of a resume state that need no more steps
FINISHED = ("done", "diverged")


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

    def save_chain_state(self, chain: int, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
        """Replace chain ``chain``'s resume file (one atomic safetensors write: tensors + JSON metadata)."""
        save_tensors(self.root / RESUME / f"chain{chain:03d}.safetensors", dict(tensors), metadata=dict(metadata))

    def load_chain_state(self, chain: int) -> tuple[dict[str, Tensor], dict[str, str]] | None:
        """``(tensors, metadata)`` of chain ``chain``'s resume file, or None when the chain never started."""
        path = self.root / RESUME / f"chain{chain:03d}.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_tensors(path), meta

    def chain_status(self, chain: int) -> dict[str, Any] | None:
        """The JSON part of chain ``chain``'s resume state (``status``, ``draws``, ``step``, ...), or None."""
        loaded = self.load_chain_state(chain)
        if loaded is None or "state" not in loaded[1]:
            return None
        return json.loads(loaded[1]["state"])

    def truncate(self, draws: Mapping[int, int]) -> None:
        """Keep only the first ``draws[c]`` draws of each chain ``c`` (chains not listed keep none) and rewrite the
        ``.jsonl`` files whole (atomically), which also drops a partial last line left by an interrupted append."""
        def kept(rec: dict[str, Any]) -> bool:
            return rec["draw"] < draws.get(rec["chain"], 0)

        self.entries = [e for e in self.entries if kept(e)]
        diag = [r for r in self.diagnostic_records() if kept(r)]
        write_text(self.root / SAMPLES, "".join(json.dumps(e) + "\n" for e in self.entries))
        write_text(self.root / DIAG, "".join(json.dumps(r) + "\n" for r in diag))
        self._draws = {}
        for e in self.entries:
            self._draws[e["chain"]] = max(self._draws.get(e["chain"], 0), e["draw"] + 1)

    def completeness(self) -> dict[str, Any]:
        """What was asked (index metadata ``plan``) against what the store holds.

        Returns ``{"chains_asked", "chains_present", "draws_per_chain_asked", "draws_present": {chain: n},
        "unfinished": [chains that neither finished nor diverged], "complete": bool}``. A chain is finished when
        its resume state says so (``done`` / ``diverged``), when it is marked diverged, or (stores without resume
        states) when it holds the asked number of draws. Without a recorded plan, ``complete`` is None.
        """
        plan = self.metadata.get("plan")
        present = {c: len(self.indices(c)) for c in self.chains()}
        if not plan:
            return {"chains_asked": None, "chains_present": sorted(present), "draws_per_chain_asked": None,
                    "draws_present": present, "unfinished": [], "complete": None}
        want = int(plan["draws_per_chain"])
        unfinished = []
        for c in plan["chains"]:
            st = self.chain_status(c)
            finished = (str(c) in self.diverged or (st is not None and st.get("status") in FINISHED)
                        or (st is None and present.get(c, 0) >= want and want > 0))
            if not finished:
                unfinished.append(c)
        return {"chains_asked": list(plan["chains"]), "chains_present": sorted(present), "draws_per_chain_asked": want,
                "draws_present": present, "unfinished": unfinished, "complete": not unfinished}

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
