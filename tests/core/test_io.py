"""File writing helpers: tensor files carry a SHA-256 of their contents that loading verifies; written files get
the permissions the umask allows."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from bayespeft import io
from bayespeft.errors import CheckpointError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(5, 7, generator=g), "b16": torch.randn(3, generator=g).bfloat16(),
            "flag": torch.tensor([True, False]), "scalar": torch.tensor(2.5), "idx": torch.arange(4)}


def test_tensor_files_round_trip_and_detect_flipped_bytes(tmp_path):
    path = tmp_path / "t.safetensors"
    io.save_tensors(path, _tensors(), metadata={"epoch": "3"})
    back = io.load_tensors(path)
    assert set(back) == set(_tensors()) and all(torch.equal(back[k], v) for k, v in _tensors().items())
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n + 5] ^= 0x10  # inside the tensor data; the header stays intact
    path.write_bytes(bytes(raw))
    load_file(str(path))  # safetensors alone reads it without complaint
    with pytest.raises(CheckpointError, match=rf"{path} is corrupted \(SHA-256 mismatch\)"):
        io.load_tensors(path)


def test_tensor_files_without_a_recorded_hash_still_load(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    assert torch.equal(io.load_tensors(path)["w"], torch.ones(2))
