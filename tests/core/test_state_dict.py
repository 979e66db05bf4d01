"""``describe_mismatch``: the one missing / unexpected / shape-mismatch message."""

from __future__ import annotations

import pytest
import torch

from bayespeft.errors import CheckpointError
from bayespeft.io import save_tensors
from bayespeft.state_dict import describe_mismatch
from bayespeft.train.checkpoint import FORMAT, load_weights, save_weights


def test_equal_names_and_shapes_is_none() -> None:
    assert describe_mismatch({"a": (2, 3), "b": ()}, {"b": torch.Size([]), "a": torch.Size([2, 3])}) is None


def test_each_kind_is_counted_and_named() -> None:
    expected = {"a": (2, 3), "b": (4,), "c": (1,), "d": (5,)}
    got = {"a": (3, 2), "b": (4,), "z": (7,), "y": (7,)}
    msg = describe_mismatch(expected, got, source="file")
    assert msg == ("2 missing keys (e.g. ['c', 'd']), 2 unexpected keys (e.g. ['y', 'z']), "
                   "1 shape mismatches (a: file (3, 2) vs model (2, 3))")


def test_at_most_five_examples_each() -> None:
    msg = describe_mismatch({f"k{i}": (1,) for i in range(8)}, {})
    assert msg == "8 missing keys (e.g. ['k0', 'k1', 'k2', 'k3', 'k4'])"


def test_training_checkpoint_reports_shape_and_key_mismatches(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    save_weights(tmp_path / "w.safetensors", model, epoch=1)
    other = torch.nn.Linear(4, 2)
    with pytest.raises(CheckpointError, match=r"does not match the model's trainable tensors: 1 shape mismatches "
                                              r"\(weight: checkpoint \(2, 3\) vs model \(2, 4\)\)"):
        load_weights(tmp_path / "w.safetensors", other)
    save_tensors(tmp_path / "x.safetensors", {"weight": torch.zeros(2, 3)}, metadata={"format": FORMAT, "epoch": "1"})
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e\.g\. \['bias'\]\)"):
        load_weights(tmp_path / "x.safetensors", model)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointError):
        load_weights(tmp_path / "x.safetensors", model)
    torch.testing.assert_close(model.weight.detach(), before)  # nothing copied when a check fails
