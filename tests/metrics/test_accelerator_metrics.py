"""Metrics of accelerator tensors (the ``accelerator`` fixture: a real GPU, else tests/virtual_device.py).

Every metric moves its inputs to the CPU first (:func:`bayespeft.metrics._inputs.as_tensor`) and computes in
float64 there, so the numbers of accelerator inputs equal those of the same values on the CPU exactly (on a GPU
too: no arithmetic runs on the device), and tensor results live on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from bayespeft import metrics
from bayespeft.metrics._inputs import as_tensor, check_inputs


def problem():
    """60 examples, 6 classes: float32 probabilities (a softmax) and int64 labels, with some confident mistakes."""
    g = torch.Generator().manual_seed(3)
    logits = 3.0 * torch.randn(60, 6, generator=g)
    labels = torch.randint(0, 6, (60,), generator=g)
    labels[:20] = logits[:20].argmax(-1)  # a third right for sure, so the bins hold both outcomes
    return logits.softmax(-1), labels


def test_inputs_come_back_on_the_cpu(accelerator):
    probs, labels = problem()
    for x in (probs, labels):
        got = as_tensor(x.to(accelerator), "x")
        assert got.device.type == "cpu" and got.dtype == x.dtype and torch.equal(got, x)
    p, y = check_inputs(probs.to(accelerator), labels.to(accelerator))
    want_p, want_y = check_inputs(probs, labels)
    assert p.device.type == y.device.type == "cpu"
    assert torch.equal(p, want_p) and torch.equal(y, want_y)


def test_every_metric_of_accelerator_tensors_equals_the_cpu_ones(accelerator):
    probs, labels = problem()
    calls = {
        "summary": lambda p, y: metrics.classification_metrics(p, y, n_bins=7),
        "nll": metrics.nll,
        "brier": metrics.brier,
        "top3": lambda p, y: metrics.accuracy(p, y, k=3),
        "confusion": metrics.confusion_matrix,
        "prf": metrics.precision_recall_f1,
        "per_class": metrics.per_class_accuracy,
        "ece": lambda p, y: metrics.calibration_error(p, y, n_bins=7, norm="l2"),
        "ace": lambda p, y: metrics.adaptive_calibration_error(p, y, n_bins=5, norm="max"),
        "reliability": lambda p, y: metrics.reliability_diagram_data(p, y, n_bins=7).to_dict(),
    }
    for name, f in calls.items():
        want = f(probs, labels)
        for p, y in ((probs.to(accelerator), labels.to(accelerator)), (probs.to(accelerator), labels)):
            assert_same(f(p, y), want, name)


def test_reliability_from_accelerator_top_label_arrays(accelerator):
    """``confidence`` / ``correct`` given as accelerator tensors (float and bool), as a run's evaluation makes them."""
    probs, labels = problem()
    conf, pred = probs.max(-1)
    correct = pred == labels
    want = metrics.reliability_from_top_label(conf.numpy(), correct.numpy(), n_bins=6).to_dict()
    assert want == metrics.reliability_diagram_data(probs, labels, n_bins=6).to_dict()
    got = metrics.reliability_from_top_label(conf.to(accelerator), correct.to(accelerator), n_bins=6)
    assert isinstance(got.count, np.ndarray) and got.to_dict() == want


def assert_same(got, want, name: str) -> None:
    """Equal (NaN equals NaN), and every tensor on the CPU; dicts and lists compared item by item."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), name
        for k in want:
            assert_same(got[k], want[k], f"{name}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), name
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{name}[{i}]")
    elif torch.is_tensor(want):
        assert torch.is_tensor(got) and got.device.type == "cpu", name
        assert got.dtype == want.dtype and torch.equal(got.nan_to_num(-1.0), want.nan_to_num(-1.0)), name
    else:
        assert type(got) is type(want) and (got == want or got != got and want != want), name
