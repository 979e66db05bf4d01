"""``classification_metrics``: every key, its value, the default ``n_bins``; the lazy diagnostics names of
``bayespeft.metrics`` (tests/MUTATION.md, third pass).

The suite checked a handful of its keys; a dropped or renamed key (``rmsce``, ``precision_macro``, ``per_class_f1``,
``n_bins``, ...) or a value set to ``None`` passed. References: the individual metric functions, each tested
against sklearn / torchmetrics / hand-worked values in the other files of this package.
"""

from __future__ import annotations

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
)

KEYS = {"n", "num_classes", "n_bins", "acc", "top5_acc", "nll", "brier", "ece", "mce", "rmsce", "ace",
        "precision_macro", "recall_macro", "f1_macro", "per_class_accuracy", "per_class_f1", "confusion_matrix"}


def _data():
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(60, 6, generator=g)).softmax(-1)  # float32, sharp enough to spread over the bins
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)  # calibrated: bins with conf < acc and > acc
    return probs, labels


def test_every_key_and_value():
    probs, labels = _data()
    m = classification_metrics(probs, labels, n_bins=7)
    assert set(m) == KEYS
    prf = precision_recall_f1(probs, labels)
    assert (m["n"], m["num_classes"], m["n_bins"]) == (60, 6, 7)
    assert m["acc"] == accuracy(probs, labels, k=1) and m["top5_acc"] == accuracy(probs, labels, k=5)
    assert m["nll"] == nll(probs, labels) and m["brier"] == pytest.approx(brier(probs, labels), rel=1e-12)
    for key, norm in (("ece", "l1"), ("mce", "max"), ("rmsce", "l2")):
        assert m[key] == pytest.approx(calibration_error(probs, labels, n_bins=7, norm=norm), rel=1e-12)
    assert m["ace"] == pytest.approx(adaptive_calibration_error(probs, labels, n_bins=7), rel=1e-12)
    for key in ("precision_macro", "recall_macro", "f1_macro"):
        assert m[key] == pytest.approx(prf[key], rel=1e-12)
    assert m["per_class_accuracy"] == pytest.approx(per_class_accuracy(probs, labels).tolist(), rel=1e-12)
    assert m["per_class_f1"] == pytest.approx(prf["f1"].tolist(), rel=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(probs, labels).tolist()


def test_default_is_15_bins():
    probs, labels = _data()
    ece15 = calibration_error(probs, labels, n_bins=15)
    assert ece15 != pytest.approx(calibration_error(probs, labels, n_bins=16), rel=1e-6)  # the data tell them apart
    m = classification_metrics(probs, labels)
    assert m["n_bins"] == 15 and m["ece"] == pytest.approx(ece15, rel=1e-12)


def test_diagnostics_are_importable_lazily_from_the_package():
    import bayespeft.metrics as metrics
    from bayespeft.metrics import diagnostics

    for name in ("rhat", "ess", "summarize", "verdict", "ConvergenceVerdict", "plot_traces", "plot_autocorr"):
        assert getattr(metrics, name) is getattr(diagnostics, name)
    with pytest.raises(AttributeError, match="^no_such_metric$"):
        metrics.no_such_metric  # noqa: B018
