"""Saving and loading a :class:`LaplacePosterior`: ``laplace.safetensors`` (tensors) + ``laplace.json`` (metadata).

No pickle. Loading needs the model (with the same parameter names/shapes); a custom ``forward_fn`` is not saved
and must be passed to :func:`load` again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bayespeft.batch import forward_batch
from bayespeft.io import load_tensors, save_tensors, write_json
from bayespeft.laplace.base import STRUCTURES
from bayespeft.laplace.capture import ForwardFn
from bayespeft.laplace.posterior import LaplacePosterior, warn_if_moved

FORMAT_VERSION = 1


def save_posterior(post: LaplacePosterior, path: str | os.PathLike) -> None:
    path = Path(path)
    s = post.structure
    tensors = {f"structure.{k}": v for k, v in s.state_tensors().items()}
    tensors["mean"], tensors["prior_precision"] = post.mean, post.prior_precision
    meta = {
        "format": "bayespeft.laplace", "version": FORMAT_VERSION, "structure": s.name, "options": s.options(),
        "param_names": s.names, "param_shapes": [list(x) for x in s.shapes], "likelihood": post.likelihood,
        "curvature": post.curvature, "subset": post.subset_desc, "temperature": post.temperature,
        "sigma_fit": post.sigma_fit, "sigma_noise": post.sigma_noise, "n_data": post.n_data,
        "n_outputs": post.n_outputs, "loss": post.loss,
    }
    save_tensors(path / "laplace.safetensors", tensors)
    write_json(path / "laplace.json", meta)


def load(path: str | os.PathLike, model: nn.Module, forward_fn: ForwardFn | None = None) -> LaplacePosterior:
    """Rebuild a posterior saved with :meth:`LaplacePosterior.save` on ``model`` (same parameter names/shapes)."""
    path = Path(path)
    meta_file = path / "laplace.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} not found; expected a directory written by LaplacePosterior.save")
    meta: dict[str, Any] = json.loads(meta_file.read_text())
    if meta.get("format") != "bayespeft.laplace":
        raise ValueError(f"{meta_file} is not a bayespeft Laplace posterior")
    named = dict(model.named_parameters())
    params = []
    for n, shape in zip(meta["param_names"], meta["param_shapes"]):
        if n not in named or list(named[n].shape) != shape:
            raise ValueError(f"the model has no parameter {n!r} of shape {shape}; load needs the model the posterior was fitted on")
        params.append((n, named[n]))
    struct = STRUCTURES.get(meta["structure"])(model, params, **meta["options"])
    device = params[0][1].device
    tensors = load_tensors(path / "laplace.safetensors", device=device)
    struct.load_state_tensors({k[len("structure."):]: v for k, v in tensors.items() if k.startswith("structure.")})
    post = LaplacePosterior(
        model, struct, likelihood=meta["likelihood"], curvature=meta["curvature"], subset_desc=meta["subset"],
        prior_precision=tensors["prior_precision"], temperature=meta["temperature"], sigma_noise=meta["sigma_fit"],
        n_data=meta["n_data"], n_outputs=meta["n_outputs"], loss=meta["loss"], mean=tensors["mean"],
        forward_fn=forward_fn or forward_batch,
    )
    post.sigma_noise = float(meta["sigma_noise"])
    warn_if_moved(post)
    return post
