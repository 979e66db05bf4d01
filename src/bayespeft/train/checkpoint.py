"""Training checkpoints: trainable tensors in safetensors, resumable state in a ``weights_only`` torch file.

Layout under ``run_dir/checkpoints/``:

* ``best.safetensors`` — the weights of the best epoch so far (trainable parameters + persistent buffers).
* ``last.safetensors`` — the weights after the last completed epoch.
* ``last_state.pt`` — everything else needed to continue exactly: optimiser and scheduler state dicts, completed
  epoch, global step, best metric/epoch, early-stopping counter, epoch history, RNG states (python, numpy, torch CPU,
  CUDA, and the train loader's generators) and the config. Written with ``torch.save`` and read with
  ``torch.load(weights_only=True)`` (tensors, dicts, lists, tuples, numbers and strings only; never arbitrary pickles).

"Weights" are the parameters with ``requires_grad=True`` plus the module buffers that ``state_dict`` keeps
(BatchNorm running statistics change in train mode even when the module itself is frozen). Frozen parameters are
not stored: they are rebuilt from the backbone. Both safetensors files carry the epoch in their metadata so that
``last.safetensors`` and ``last_state.pt`` can be checked to belong together. Write order per epoch:
``last.safetensors``, ``last_state.pt``, then ``best.safetensors`` if the epoch improved, each atomically; a crash
between the last two is repaired on resume (the best epoch is then the last one, whose weights are in
``last.safetensors``).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from ..errors import CheckpointError
from ..io import atomic_path, load_tensors, save_tensors
from ..state_dict import describe_mismatch

FORMAT = "bayespeft.train/1"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and persistent buffers, by qualified name (``state_dict`` names)."""
    out = {n: p for n, p in model.named_parameters() if p.requires_grad}
    persistent = set(model.state_dict(keep_vars=True))
    out.update({n: b for n, b in model.named_buffers() if n in persistent})
    return out


def save_weights(path: Path, model: nn.Module, epoch: int) -> None:
    save_tensors(path, trainable_state(model), metadata={"format": FORMAT, "epoch": str(epoch)})


def weights_epoch(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or "epoch" not in meta:
        raise CheckpointError(f"{path} is not a bayespeft training checkpoint (metadata {meta})")
    return int(meta["epoch"])


@torch.no_grad()
def load_weights(path: Path, model: nn.Module) -> int:
    """Copy the tensors of ``path`` into ``model`` (names and shapes must match exactly); returns their epoch."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    epoch = weights_epoch(path)
    saved = load_tensors(path)
    target = trainable_state(model)
    what = describe_mismatch({k: t.shape for k, t in target.items()}, {k: t.shape for k, t in saved.items()})
    if what:
        raise CheckpointError(
            f"checkpoint {path} does not match the model's trainable tensors: {what}. "
            "Was it written for another model or adapter? Start a new run (CLI: without --resume; Python: a new "
            "run_dir or resume=False)."
        )
    for name, t in target.items():
        t.copy_(saved[name])
    return epoch


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch Generators a DataLoader draws its order/worker seeds from (deduplicated, fixed order)."""
    cands = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    out: list[torch.Generator] = []
    for g in cands:
        if isinstance(g, torch.Generator) and all(g is not h for h in out):
            out.append(g)
    return out


def cuda_rng_states() -> list[torch.Tensor]:
    """The RNG state of every CUDA device (``[]`` without CUDA)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def restore_cuda_rng(states: list[torch.Tensor]) -> None:
    """Put back :func:`cuda_rng_states`. States saved on a machine with another number of CUDA devices (or restored
    without CUDA) cannot be put back: a warning says so, because the resumed run's CUDA draws then differ from the
    interrupted run's (CPU and data-order RNGs are restored all the same)."""
    if not states:
        return
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(states) != have:
        warnings.warn(f"the saved RNG state covers {len(states)} CUDA device(s) but this machine has {have}; CUDA "
                      "random draws will not repeat the interrupted run (resume on the same devices for bit-exact "
                      "results)", RuntimeWarning, stacklevel=3)
        return
    torch.cuda.set_rng_state_all(states)


def get_rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": cuda_rng_states(),
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    restore_cuda_rng(state["cuda"])
    if len(state["generators"]) != len(generators):
        raise CheckpointError(
            f"the train loader has {len(generators)} generator(s) but the checkpoint saved {len(state['generators'])}; "
            "resume with the same data loader setup"
        )
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickle with arbitrary objects
        raise CheckpointError(f"cannot read training state {path}: {e}") from e
