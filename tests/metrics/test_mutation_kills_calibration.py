"""Calibration checks added for mutants that survived the suite (tests/MUTATION.md); values worked out by hand."""

from __future__ import annotations

import json

import pytest
import torch

from bayespeft.metrics import adaptive_calibration_error, calibration_error, reliability_diagram_data
from bayespeft.metrics.calibration import top_label


def _binary(conf: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class probabilities whose top label is class 0 with confidence ``conf`` (> 0.5); label 0 iff correct."""
    c = torch.tensor(conf, dtype=torch.float64)
    probs = torch.stack([c, 1 - c], dim=1)
    labels = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, labels


def test_one_bin_is_allowed_and_is_the_global_gap():
    # n_bins=1: one bin holding everything, ECE = |mean correct - mean conf| = |2/4 - (0.9+0.8+0.7+0.6)/4| = 0.25
    probs, labels = _binary([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    assert calibration_error(probs, labels, n_bins=1) == pytest.approx(0.25, abs=1e-12)
    assert adaptive_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.25, abs=1e-12)
    assert len(reliability_diagram_data(probs, labels, n_bins=1).count) == 1


@pytest.mark.parametrize("bad", [True, 2.5, 0, -3])
def test_n_bins_must_be_a_positive_int_and_not_a_bool(bad):
    probs, labels = _binary([0.9, 0.6], [True, False])
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        calibration_error(probs, labels, n_bins=bad)


def test_top_label_correctness_is_float_zero_one():
    conf, correct = top_label(torch.tensor([[0.2, 0.8], [0.7, 0.3]], dtype=torch.float64), torch.tensor([1, 1]))
    assert correct.dtype == torch.float64
    assert correct.tolist() == [1.0, 0.0] and conf.tolist() == [0.8, 0.7]


def test_equal_mass_ties_are_split_in_input_order():
    # 20 examples, all with confidence 0.6; the first 5 (by position) correct, the other 15 wrong. A stable sort keeps
    # input order, so the 4 equal-mass bins of 5 have accuracies 1, 0, 0, 0:
    # ECE = (|1-0.6| + 3*|0-0.6|) / 4 = 0.55. A split of the ties in any other order spreads the 5 correct examples
    # over more than one bin and gives less (e.g. accuracies 0, 0, 0.2, 0.8 -> 0.45).
    probs, labels = _binary([0.6] * 20, [True] * 5 + [False] * 15)
    assert adaptive_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.55, abs=1e-12)


def test_default_bin_count_is_15():
    # 16 examples with distinct confidences, alternating correct/wrong: 15 and 16 equal-mass bins group them
    # differently, so the defaults are pinned by comparing against explicit n_bins=15.
    conf = [0.51 + 0.03 * i for i in range(16)]
    probs, labels = _binary(conf, [i % 2 == 0 for i in range(16)])
    assert adaptive_calibration_error(probs, labels) == adaptive_calibration_error(probs, labels, n_bins=15)
    assert adaptive_calibration_error(probs, labels, n_bins=15) != adaptive_calibration_error(probs, labels, n_bins=16)
    data = reliability_diagram_data(probs, labels)
    assert len(data.count) == 15 and len(data.edges) == 16


def test_reliability_to_dict_keys_values_and_nan_as_none():
    # conf 0.9 (correct) and 0.6 (wrong), 2 bins [0, .5), [.5, 1]: bin 0 empty, bin 1 holds both:
    # acc 0.5, conf 0.75 -> ECE = MCE = 0.25
    probs, labels = _binary([0.9, 0.6], [True, False])
    d = reliability_diagram_data(probs, labels, n_bins=2).to_dict()
    assert d == {
        "edges": [0.0, 0.5, 1.0],
        "count": [0, 2],
        "accuracy": [None, 0.5],
        "confidence": [None, pytest.approx(0.75)],
        "ece": pytest.approx(0.25),
        "mce": pytest.approx(0.25),
    }
    json.dumps(d)  # JSON-ready: no NaN, no numpy scalars
    assert all(type(v) is float for v in d["edges"]) and all(type(v) is int for v in d["count"])
