"""Loading a local ``.safetensors`` state dict into a backbone (CIFAR nets, micro ViT), with clear mismatch errors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import load_tensors
from ..state_dict import describe_mismatch


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing file -> FileNotFoundError, an unreadable one -> CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_tensors(path)
    except Exception as e:  # safetensors raises its own error types for garbage/truncated files
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e


def load_backbone_weights(model: nn.Module, path: str | Path, head_modules: list[str]) -> None:
    """Copy the tensors of ``path`` into ``model`` (all keys required, same shapes).

    Head tensors (under ``head_modules``) whose shape differs (another number of classes) are skipped, so the head
    keeps its fresh initialisation -- the same rule timm applies to pretrained classifiers. Nothing is modified
    unless every check passes.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"{path} is a directory; expected exactly one .safetensors file in it, found {len(candidates)}")
        path = candidates[0]
    sd = read_safetensors(path)
    own = model.state_dict()

    def is_head(k: str) -> bool:
        return any(k.startswith(h + ".") for h in head_modules)

    sd = {k: v for k, v in sd.items() if not (is_head(k) and k in own and own[k].shape != v.shape)}
    # head tensors may be absent from the file (a fresh head); every other tensor of the model is required
    expected = {k: v.shape for k, v in own.items() if k in sd or not is_head(k)}
    what = describe_mismatch(expected, {k: v.shape for k, v in sd.items()}, source="file")
    if what:
        raise CheckpointError(f"weights in {path} do not match the {type(model).__name__} architecture: {what}")
    model.load_state_dict(sd, strict=False)
