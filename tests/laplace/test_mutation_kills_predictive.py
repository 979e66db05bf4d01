"""``laplace.predictive`` batch helpers (tests/MUTATION.md, fourth pass): bare inputs get long zero labels of the
batch length, and dict batches are split row-wise with non-tensor entries kept whole."""

from __future__ import annotations

import torch

from bayespeft.laplace.predictive import as_batch, chunks


def test_bare_inputs_get_long_zero_labels_of_the_batch_length():
    x = torch.randn(5, 3)
    xb, yb = as_batch(x)
    assert xb is x and yb.dtype == torch.long and yb.tolist() == [0] * 5
    d = as_batch({"mask": "kept", "x": x})
    assert d["x"] is x and d["mask"] == "kept" and d["labels"].dtype == torch.long and d["labels"].tolist() == [0] * 5


def test_a_batch_with_labels_is_returned_as_it_is():
    batch = {"x": torch.randn(5, 3), "labels": torch.tensor([2, 1, 0, 1, 2])}
    assert as_batch(batch) is batch
    pair = (torch.randn(5, 3), torch.ones(5))
    assert as_batch(pair) is pair


def test_dict_batches_are_split_by_rows_and_non_tensors_are_kept_whole():
    batch = {"x": torch.arange(15.0).reshape(5, 3), "labels": torch.arange(5), "tag": "abc"}
    parts = list(chunks(batch, 2))
    assert [p["labels"].tolist() for p in parts] == [[0, 1], [2, 3], [4]]
    assert [p["x"].shape[0] for p in parts] == [2, 2, 1] and torch.equal(parts[2]["x"], batch["x"][4:])
    assert all(p["tag"] == "abc" for p in parts)
    assert [p is batch for p in chunks(batch, 5)] == [True]  # size >= n: the batch itself, not a copy
    assert [p is batch for p in chunks(batch, None)] == [True]
