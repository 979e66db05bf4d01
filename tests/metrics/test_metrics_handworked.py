"""Metrics on tiny arrays whose values are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayespeft.metrics import (
    accuracy,
    adaptive_calibration_error,
    brier,
    calibration_error,
    classification_metrics,
    confusion_matrix,
    nll,
    per_class_accuracy,
    precision_recall_f1,
    plot_reliability_comparison,
    reliability_diagram_data,
    reliability_from_top_label,
)

# Four examples, three classes (float64 so that the hand values are exact up to rounding):
#   a: [0.90, 0.05, 0.05] y=0 -> pred 0, conf 0.90, correct
#   b: [0.70, 0.20, 0.10] y=1 -> pred 0, conf 0.70, wrong
#   c: [0.40, 0.35, 0.25] y=0 -> pred 0, conf 0.40, correct
#   d: [0.20, 0.45, 0.35] y=2 -> pred 1, conf 0.45, wrong
P = torch.tensor([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.2, 0.45, 0.35]], dtype=torch.float64)
Y = torch.tensor([0, 1, 0, 2])


def test_ece_mce_rms_two_bins():
    # bins [0, .5) and [.5, 1]:  bin0 = {c, d}: acc 1/2, conf (.4+.45)/2 = .425, gap .075
    #                            bin1 = {a, b}: acc 1/2, conf (.9+.7)/2  = .8,   gap .3
    # ECE = .5*.075 + .5*.3 = .1875 ; MCE = .3 ; RMS = sqrt(.5*.075^2 + .5*.3^2) = sqrt(.0478125)
    assert calibration_error(P, Y, n_bins=2, norm="l1") == pytest.approx(0.1875, abs=1e-12)
    assert calibration_error(P, Y, n_bins=2, norm="max") == pytest.approx(0.3, abs=1e-12)
    assert calibration_error(P, Y, n_bins=2, norm="l2") == pytest.approx(math.sqrt(0.0478125), abs=1e-12)


def test_ece_three_bins_skips_empty_bin():
    # bins [0,1/3) [1/3,2/3) [2/3,1]: bin0 empty; bin1 = {c, d} gap .075; bin2 = {a, b} gap .3 -> same as 2 bins
    assert calibration_error(P, Y, n_bins=3) == pytest.approx(0.1875, abs=1e-12)


def test_adaptive_equal_mass():
    # sorted confidences .40(c) .45(d) .70(b) .90(a); 3 equal-mass bins of sizes 2, 1, 1:
    # {c, d}: gap .075 ; {b}: |0 - .7| = .7 ; {a}: |1 - .9| = .1
    # ACE = .5*.075 + .25*.7 + .25*.1 = .2375 ; max = .7
    assert adaptive_calibration_error(P, Y, n_bins=3) == pytest.approx(0.2375, abs=1e-12)
    assert adaptive_calibration_error(P, Y, n_bins=3, norm="max") == pytest.approx(0.7, abs=1e-12)
    # 2 bins: {c, d}, {b, a} = the equal-width bins above
    assert adaptive_calibration_error(P, Y, n_bins=2) == pytest.approx(0.1875, abs=1e-12)


def test_bin_edges_left_closed_and_one_in_last_bin():
    # conf 0.5 (tie -> class 0, correct) lies in [.5, 1]; conf 1.0 (wrong) lies in the last bin as well:
    # one bin {acc 1/2, conf .75} -> ECE .25.  (Right-closed bins, as sklearn's calibration_curve, or an extra bin
    # for conf == 1, as torchmetrics, would give .5*.5 + .5*1 = .75.)
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert calibration_error(p, y, n_bins=2) == pytest.approx(0.25, abs=1e-12)
    # a confidence exactly on an inner edge goes to the upper bin: 0.25 (4 bins) -> bin [.25, .5)
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    d = reliability_diagram_data(p, torch.tensor([0]), n_bins=4)
    assert d.count.tolist() == [0, 1, 0, 0]


def test_nll_brier_accuracy():
    # NLL = -(ln .9 + ln .2 + ln .4 + ln .35)/4
    assert nll(P, Y) == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.4) + math.log(0.35)) / 4, abs=1e-12)
    # Brier per example: a .1^2+.05^2+.05^2 = .015 ; b .7^2+.8^2+.1^2 = 1.14 ; c .6^2+.35^2+.25^2 = .545 ;
    #                    d .2^2+.45^2+.65^2 = .665 ; mean = 2.365/4 = .59125
    assert brier(P, Y) == pytest.approx(0.59125, abs=1e-12)
    assert accuracy(P, Y) == pytest.approx(0.5)
    # top-2: b's true class (.2) is 2nd, d's true class (.35) is 2nd -> all four
    assert accuracy(P, Y, k=2) == pytest.approx(1.0)


def test_nll_clamps_exact_zero_to_dtype_tiny():
    p32 = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    assert nll(p32, torch.tensor([1])) == pytest.approx(-math.log(torch.finfo(torch.float32).tiny))
    assert nll(p32.double(), torch.tensor([1])) == pytest.approx(-math.log(torch.finfo(torch.float64).tiny))


def test_topk_tie_rule():
    # true class 1 ties with class 0 at .4: the lower index ranks first, so class 1 has rank 1
    p = torch.tensor([[0.4, 0.4, 0.2]], dtype=torch.float64)
    assert accuracy(p, torch.tensor([1]), k=1) == 0.0
    assert accuracy(p, torch.tensor([0]), k=1) == 1.0
    assert accuracy(p, torch.tensor([1]), k=2) == 1.0


def test_confusion_precision_recall_f1():
    # preds 0,0,0,1 ; truth 0,1,0,2
    assert confusion_matrix(P, Y).tolist() == [[2, 0, 0], [1, 0, 0], [0, 1, 0]]
    r = precision_recall_f1(P, Y)
    # precision: c0 2/3, c1 0/1, c2 0/0 -> 0 ; recall: c0 2/2, c1 0/1, c2 0/1 ; F1_c = 2TP/(2TP+FP+FN): c0 4/5
    assert r["precision"].tolist() == pytest.approx([2 / 3, 0.0, 0.0])
    assert r["recall"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert r["f1"].tolist() == pytest.approx([0.8, 0.0, 0.0])
    assert r["precision_macro"] == pytest.approx(2 / 9)
    assert r["recall_macro"] == pytest.approx(1 / 3)
    assert r["f1_macro"] == pytest.approx(0.8 / 3)
    assert per_class_accuracy(P, Y).tolist() == pytest.approx([1.0, 0.0, 0.0])


def test_macro_excludes_classes_absent_from_labels_and_predictions():
    # 4 classes, class 3 never true nor predicted: macro over classes 0..2 only; per-class accuracy None for it
    p = torch.cat([P, torch.zeros(4, 1, dtype=torch.float64)], dim=1)
    r = precision_recall_f1(p, Y)
    assert r["f1_macro"] == pytest.approx(0.8 / 3)
    m = classification_metrics(p, Y, n_bins=2)
    assert m["per_class_accuracy"] == [1.0, 0.0, 0.0, None]
    assert m["f1_macro"] == pytest.approx(0.8 / 3)


def test_classification_metrics_dict_is_json_ready_and_consistent():
    m = classification_metrics(P.numpy(), Y.numpy(), n_bins=2)
    json.dumps(m)  # plain Python types only
    assert m["acc"] == 0.5 and m["n"] == 4 and m["num_classes"] == 3 and "top5_acc" not in m
    assert m["ece"] == pytest.approx(0.1875) and m["mce"] == pytest.approx(0.3) and m["ace"] == pytest.approx(0.1875)
    assert m["brier"] == pytest.approx(0.59125)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 1, 0]]
    p5 = torch.full((2, 5), 0.2, dtype=torch.float64)
    assert classification_metrics(p5, torch.tensor([4, 0]))["top5_acc"] == 1.0


def test_reliability_data_matches_ece():
    d = reliability_diagram_data(P, Y, n_bins=2)
    assert d.edges.tolist() == [0.0, 0.5, 1.0]
    assert d.count.tolist() == [2, 2]
    assert d.accuracy.tolist() == pytest.approx([0.5, 0.5])
    assert d.confidence.tolist() == pytest.approx([0.425, 0.8])
    assert d.ece == pytest.approx(0.1875)
    assert d.to_dict()["count"] == [2, 2]
    empty = reliability_diagram_data(P, Y, n_bins=3).to_dict()
    assert empty["accuracy"][0] is None


def test_reliability_from_top_label_is_the_same_diagram(tmp_path):
    # the hand-worked examples as (confidence, correct): a 0.90 ✓, b 0.70 ✗, c 0.40 ✓, d 0.45 ✗
    d = reliability_from_top_label(np.array([0.9, 0.7, 0.4, 0.45]), np.array([True, False, True, False]), n_bins=2)
    assert d.count.tolist() == [2, 2] and d.accuracy.tolist() == pytest.approx([0.5, 0.5])
    assert d.confidence.tolist() == pytest.approx([0.425, 0.8]) and d.ece == pytest.approx(0.1875)
    assert reliability_from_top_label(np.array([1.0]), np.array([1]), n_bins=4).count.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        reliability_from_top_label(np.array([1.2]), np.array([1]))
    with pytest.raises(ValueError, match="0/1"):
        reliability_from_top_label(np.array([0.5]), np.array([2]))
    out = plot_reliability_comparison({"MAP": d, "Bayes": reliability_diagram_data(P, Y, n_bins=2)}, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="same bins"):
        plot_reliability_comparison({"a": d, "b": reliability_diagram_data(P, Y, n_bins=3)}, tmp_path / "x.png")


@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (torch.tensor([0.5, 0.5]), torch.tensor([0]), r"shape \(N, C\)"),
        (P, torch.tensor([0, 1]), "4 rows but labels has 2"),
        (P * 3, Y, "sum to 1.*not logits"),
        (P - 0.5, Y, "non-negative"),
        (P, torch.tensor([0, 1, 0, 3]), r"\[0, 3\)"),
        (P, Y.double(), "integer class indices"),
        (torch.full((1, 2), float("nan")), torch.tensor([0]), "NaN"),
        ("abc", Y, "numpy array or a torch tensor"),
    ],
)
def test_bad_inputs_raise(probs, labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        classification_metrics(probs, labels)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="norm must be one of l1, l2, max"):
        calibration_error(P, Y, norm="l3")
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        calibration_error(P, Y, n_bins=0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\]"):
        accuracy(P, Y, k=4)


def test_numpy_and_torch_inputs_agree():
    assert classification_metrics(P.numpy(), Y.numpy()) == classification_metrics(P, Y)
    assert np.isclose(calibration_error(P.float(), Y, n_bins=2), 0.1875, atol=1e-6)
    # 15 bins of width 1/15: .40 and .45 share [6/15, 7/15), .70 is in [10/15, 11/15), .90 in [13/15, 14/15)
    # -> .5*.075 + .25*.7 + .25*.1 = .2375
    assert np.isclose(calibration_error(P.float(), Y), 0.2375, atol=1e-6)
