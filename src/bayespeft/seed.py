"""Seeding and determinism."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; on CPU also ask torch for deterministic algorithms. Returns a torch Generator."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def randn(*shape: int, generator: torch.Generator | None, dtype: torch.dtype,
          device: torch.device | str) -> torch.Tensor:
    """``N(0, I)`` draws of ``shape`` on ``device``, taken from ``generator`` on the generator's own device.

    A CPU generator (or ``None``: torch's global CPU one) draws on the CPU and the draws are moved, so a seed gives
    the same numbers whichever device the result lives on; a CUDA generator draws on its device directly (CUDA
    streams differ from the CPU's). Any other pairing of generator and ``device`` is moved the same way.
    """
    where = "cpu" if generator is None else generator.device
    return torch.randn(*shape, generator=generator, dtype=dtype, device=where).to(device)


def multinomial1(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One category per row of probabilities ``p`` ``(B, C)`` -> ``(B,)`` on ``p``'s device, drawn on the generator's
    device (as :func:`randn`: a CPU generator gives the same labels wherever ``p`` lives)."""
    where = torch.device("cpu") if generator is None else generator.device
    return torch.multinomial(p.to(where), 1, generator=generator).squeeze(1).to(p.device)
