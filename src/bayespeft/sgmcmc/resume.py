"""Resume state of one SG-MCMC chain: everything needed to continue it bit-exactly from its last kept sample.

A chain's trajectory is a deterministic function of

* the sampler state: the parameters ``θ_t`` (not stored again: at a resume point they are the chain's last kept
  sample, or its deterministic start), the sampler's own buffers (SGHMC momenta, pSGLD/ASGLD moment
  averages: every list-of-tensors field of the state dataclass beyond :class:`~.base.SGMCMCState`'s), the step
  counter ``t`` (which is also the schedule position: ``ε_t``, noise on/off and keep/skip are functions of ``t``) and
  the chain's noise generator;
* the data order: the train loader's shuffling generator(s) and the global RNGs the data pipeline draws from
  (python, numpy, torch CPU/CUDA: random crops and flips), at the start of the current epoch, and how many batches
  of that epoch were consumed.

:func:`chain_state` packs that into ``(tensors, info)``: tensors for a safetensors file and a JSON-able dict stored in
its metadata (one file per chain, ``<store>/resume/chainCCC.safetensors``, replaced atomically, so the tensors and
the JSON can never disagree). :func:`restore_chain_state` puts the sampler part back into a freshly ``init``-ed state;
:func:`capture_rng` / :func:`restore_rng` handle the RNG part. Loaders with worker processes draw augmentation noise
inside the workers; those are re-seeded from the loader generator, so resume is bit-exact for ``num_workers = 0``
(the default) and reproduces the data order, not the in-worker augmentation, otherwise.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..train.checkpoint import cuda_rng_states, loader_generators, restore_cuda_rng
from .base import SGMCMCState

FORMAT = "bayespeft.sgmcmc.resume/1"
_BASE_FIELDS = {f.name for f in fields(SGMCMCState)}


# ---- RNG snapshots ----------------------------------------------------------------------------------------------
def capture_rng(loader: Any) -> dict[str, Any]:
    """Snapshot of the global RNGs and the loader's generators: ``{"tensors": {name: uint8/int64}, "json": {...}}``."""
    version, pstate, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64))}
    tensors.update({f"cuda{i}": s for i, s in enumerate(cuda_rng_states())})
    tensors.update({f"loader{i}": g.get_state() for i, g in enumerate(loader_generators(loader))})
    info = {"python": [version, list(pstate), gauss], "numpy": [name, int(pos), int(has_gauss), float(cached)]}
    return {"tensors": tensors, "json": info}


def restore_rng(snap: dict[str, Any], loader: Any) -> None:
    """Put back a :func:`capture_rng` snapshot (the loader must have as many generators as when it was taken)."""
    t, info = snap["tensors"], snap["json"]
    version, pstate, gauss = info["python"]
    random.setstate((version, tuple(pstate), gauss))
    name, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((name, t["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(t["torch"])
    restore_cuda_rng([t[f"cuda{i}"] for i in range(len(t)) if f"cuda{i}" in t])
    gens = loader_generators(loader)
    saved = sorted(k for k in t if k.startswith("loader"))
    if len(saved) != len(gens):
        raise ValueError(f"the train loader has {len(gens)} generator(s) but the resume state saved {len(saved)}; "
                         "resume with the same data loader setup")
    for i, g in enumerate(gens):
        g.set_state(t[f"loader{i}"])


# ---- sampler state ----------------------------------------------------------------------------------------------
def buffer_fields(state: SGMCMCState) -> list[str]:
    """Names of the state's per-leaf tensor buffers beyond the shared ones (e.g. ``momenta``, ``square_avg``)."""
    return [f.name for f in fields(state) if f.name not in _BASE_FIELDS and isinstance(getattr(state, f.name), list)]


def chain_state(state: SGMCMCState, info: dict[str, Any], rngs: dict[str, dict[str, Any]]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a chain's resume file (everything but the parameters).

    ``state``: the sampler state; ``info``: JSON-able bookkeeping (chain, status, draws, epoch, batches consumed,
    ...), stored with ``step`` added; ``rngs``: named :func:`capture_rng` snapshots (e.g. ``{"epoch", "now"}``).
    """
    tensors: dict[str, Tensor] = {}
    for name in buffer_fields(state):
        tensors.update({f"buffer/{name}/{i}": b.detach() for i, b in enumerate(getattr(state, name))})
    tensors["rng/sampler"] = state.rng.get_state()
    tensors["log_prob"] = state.log_prob.detach().reshape(1)
    rng_json = {}
    for label, snap in rngs.items():
        tensors.update({f"rng/{label}/{k}": v for k, v in snap["tensors"].items()})
        rng_json[label] = snap["json"]
    meta = {**info, "step": int(state.step), "rng": rng_json}
    return tensors, {"format": FORMAT, "state": json.dumps(meta)}


def read_info(tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """The JSON part of a resume file, with its RNG snapshots re-joined to their tensors under ``"rngs"``."""
    if metadata.get("format") != FORMAT:
        raise ValueError(f"not an SG-MCMC resume state (format {metadata.get('format')!r}, expected {FORMAT})")
    info = json.loads(metadata["state"])
    info["rngs"] = {label: {"json": js, "tensors": {k.split("/", 2)[2]: v for k, v in tensors.items()
                                                    if k.startswith(f"rng/{label}/")}}
                    for label, js in info.pop("rng").items()}
    return info


@torch.no_grad()
def restore_chain_state(state: SGMCMCState, tensors: dict[str, Tensor], step: int,
                        params: dict[str, Tensor] | None = None) -> SGMCMCState:
    """Copy a saved chain state into ``state`` (fresh from ``init``) in place; ``params`` (the chain's last kept
    sample; None: keep the start values) must have exactly the state's parameter names."""
    if params is not None:
        if set(params) != set(state.params):
            raise ValueError(f"the resume point holds parameters {sorted(set(params) ^ set(state.params))[:5]} that "
                             "the model does not (or the reverse); resume with the run's own config and checkpoint")
        for k, v in state.params.items():
            v.copy_(params[k])
    for name in buffer_fields(state):
        for i, b in enumerate(getattr(state, name)):
            b.copy_(tensors[f"buffer/{name}/{i}"])
    state.rng.set_state(tensors["rng/sampler"])
    state.log_prob = tensors["log_prob"].reshape(()).to(state.log_prob.device)
    state.step = int(step)
    return state
