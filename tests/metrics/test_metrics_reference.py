"""Cross-checks against torchmetrics and scikit-learn on random inputs (independent implementations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from bayespeft.metrics import (
    accuracy,
    brier,
    calibration_error,
    confusion_matrix,
    nll,
    plot_reliability_diagram,
    precision_recall_f1,
)


def random_case(seed: int, n: int, c: int, absent: int = 0):
    """Random softmax probabilities (float32) and labels; the last ``absent`` classes are never true nor predicted."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 2.5
    logits[:, c - absent :] -= 50.0
    probs = logits.softmax(-1)
    labels = torch.randint(0, c - absent, (n,), generator=g)
    # make about half of the predictions right so that calibration gaps are not all large
    right = torch.rand(n, generator=g) < 0.5
    labels = torch.where(right, probs.argmax(1), labels)
    return probs, labels


CASES = [(0, 500, 10, 0), (1, 257, 3, 0), (2, 400, 10, 2), (3, 64, 7, 1)]


@pytest.mark.parametrize("seed,n,c,absent", CASES)
@pytest.mark.parametrize("norm", ["l1", "max", "l2"])
@pytest.mark.parametrize("n_bins", [15, 4])
def test_calibration_matches_torchmetrics(seed, n, c, absent, norm, n_bins):
    probs, labels = random_case(seed, n, c, absent)
    assert probs.max(1).values.max() < 1.0  # the conventions agree when no confidence is exactly 1
    ref = MulticlassCalibrationError(num_classes=c, n_bins=n_bins, norm=norm)(probs, labels).item()
    assert calibration_error(probs, labels, n_bins=n_bins, norm=norm) == pytest.approx(ref, abs=2e-6)


def test_torchmetrics_extra_bin_for_confidence_one_is_the_documented_difference():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    assert MulticlassCalibrationError(num_classes=2, n_bins=2)(p, y).item() == pytest.approx(0.75)
    assert calibration_error(p, y, n_bins=2) == pytest.approx(0.25)


@pytest.mark.parametrize("seed,n,c,absent", CASES)
def test_classification_matches_sklearn_and_torchmetrics(seed, n, c, absent):
    probs, labels = random_case(seed, n, c, absent)
    p, y = probs.numpy(), labels.numpy()
    pred = p.argmax(1)
    p64 = p.astype(np.float64)
    p64 /= p64.sum(1, keepdims=True)  # sklearn checks row sums in float64; float32 softmax is off by ~1e-7
    assert nll(p64, y) == pytest.approx(skm.log_loss(y, p64, labels=list(range(c))), rel=1e-12)
    assert (confusion_matrix(probs, labels).numpy() == skm.confusion_matrix(y, pred, labels=list(range(c)))).all()
    r = precision_recall_f1(probs, labels)
    assert r["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert r["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert r["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    f1_per = skm.f1_score(y, pred, average=None, labels=list(range(c)), zero_division=0)
    assert r["f1"].numpy() == pytest.approx(f1_per, abs=1e-12)
    for cls, key in [(MulticlassF1Score, "f1_macro"), (MulticlassPrecision, "precision_macro"), (MulticlassRecall, "recall_macro")]:
        assert r[key] == pytest.approx(cls(num_classes=c, average="macro")(probs, labels).item(), abs=1e-6), key
    assert accuracy(probs, labels) == pytest.approx(skm.accuracy_score(y, pred))
    if c >= 5:
        ref = MulticlassAccuracy(num_classes=c, top_k=5, average="micro")(probs, labels).item()
        assert accuracy(probs, labels, k=5) == pytest.approx(ref, abs=1e-6)
        assert accuracy(probs, labels, k=5) == pytest.approx(skm.top_k_accuracy_score(y, p, k=5, labels=list(range(c))))
    # scikit-learn's multi-class Brier with scale_by_half=False is the sum-over-classes convention
    ref_brier = skm.brier_score_loss(y, p64, labels=list(range(c)), scale_by_half=False)
    assert brier(p64, y) == pytest.approx(ref_brier, rel=1e-12)


def test_reliability_png_written_atomically(tmp_path):
    import matplotlib.image as mpimg

    probs, labels = random_case(0, 300, 10)
    out = plot_reliability_diagram(probs, labels, tmp_path / "plots" / "rel.png", title="random")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert [f.name for f in (tmp_path / "plots").iterdir()] == ["rel.png"]  # no temp file left behind
