"""``metrics._inputs.check_inputs`` edge cases and messages (tests/MUTATION.md, third pass).

The metric tests only passed valid inputs or checked that some ``ValueError`` is raised; the boundaries (one class,
boolean labels, int32 labels) and the words that tell the user
which argument was wrong were free to change.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bayespeft.metrics._inputs import check_inputs


def test_argument_names_in_type_errors():
    with pytest.raises(TypeError, match=r"^probs must be a numpy array or a torch tensor, got str$"):
        check_inputs("0.5", [0])
    with pytest.raises(TypeError, match=r"^labels must be a numpy array or a torch tensor, got dict$"):
        check_inputs(np.ones((1, 1)), {0: 0})


@pytest.mark.parametrize(("probs", "labels", "message"), [
    (np.ones((2, 1)), np.zeros((2, 1), dtype=int), "labels must have shape (N,), got shape (2, 1)"),
    (np.ones((0, 3)), np.zeros(0, dtype=int), "probs must be non-empty with at least one class, got shape (0, 3)"),
    (np.ones((2, 0)), np.zeros(2, dtype=int), "probs must be non-empty with at least one class, got shape (2, 0)"),
    (np.ones((2, 1), dtype=int), np.zeros(2, dtype=int), "probs must be floating point, got dtype torch.int64"),
    (np.ones((2, 1)), np.zeros(2, dtype=bool), "labels must be integer class indices, got dtype torch.bool"),
    (np.full((1, 1), np.nan), np.zeros(1, dtype=int), "probs contains NaN or Inf values"),
    (np.full((1, 2), 0.25), np.zeros(1, dtype=int), "each row of probs must sum to 1 (largest deviation 0.5 > 0.001); "
     "pass probabilities (e.g. logits.softmax(-1)), not logits"),
])
def test_messages(probs, labels, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_inputs(probs, labels)


def test_one_class_is_allowed():
    p, y = check_inputs(np.ones((3, 1)), np.zeros(3, dtype=int))
    assert p.shape == (3, 1) and y.tolist() == [0, 0, 0]


def test_int32_labels_become_int64():
    _, y = check_inputs(np.full((2, 2), 0.5, dtype=np.float32), np.array([1, 0], dtype=np.int32))
    assert y.dtype == torch.int64 and y.tolist() == [1, 0]
