"""Classification-metric checks added for mutants that survived tests/metrics (tests/MUTATION.md); hand values."""

from __future__ import annotations

import math

import pytest
import torch

from bayespeft.metrics import accuracy, nll, per_class_accuracy, precision_recall_f1

# three examples, three classes; predictions 0, 1, 0 and labels 0, 1, 2:
#   class 0: predicted twice (once right), 1 example  -> precision 1/2, recall 1
#   class 1: predicted once (right), 1 example        -> precision 1 (a count of exactly one), recall 1
#   class 2: never predicted, 1 example               -> precision 0 (0/0 -> 0), recall 0
P = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]], dtype=torch.float64)
Y = torch.tensor([0, 1, 2])


def test_counts_of_one_are_divided_by_one():
    out = precision_recall_f1(P, Y)
    assert out["precision"].tolist() == [0.5, 1.0, 0.0]
    assert out["recall"].tolist() == [1.0, 1.0, 0.0]
    assert out["support"].tolist() == [1, 1, 1] and out["support"].dtype == torch.int64
    assert per_class_accuracy(P, Y).tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("k", [True, 1.0, 0, 4])
def test_top_k_must_be_an_int_in_range(k):
    with pytest.raises(ValueError):
        accuracy(P, Y, k=k)


def test_float16_zero_probability_is_clamped_to_float32_tiny():
    # float16's own tiny (6.1e-5) would give -log = 9.7; the documented clamp uses float32's (1.18e-38) -> 87.3
    probs = torch.tensor([[1.0, 0.0]], dtype=torch.float16)
    assert nll(probs, torch.tensor([1])) == pytest.approx(-math.log(torch.finfo(torch.float32).tiny), rel=1e-12)


def test_non_array_probs_error_names_the_argument():
    with pytest.raises(TypeError, match="probs must be a numpy array or a torch tensor"):
        nll("0.5", [0])
