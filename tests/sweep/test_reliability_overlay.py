"""The report's reliability overlay: per-bin data saved by every run, pooled per method, checked against bins
computed here with numpy from the runs' own predictions."""

import json

import numpy as np
import pytest

from bayespeft.experiments import run as run_mod
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.reliability import pool
from bayespeft.experiments.sweep.report import build_report
from bayespeft.metrics import reliability_from_top_label


def numpy_bins(conf, correct, n_bins=15):
    """Equal-width bins [b/M, (b+1)/M), the last one closed: count, accuracy and confidence (None if empty)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    acc = [float(correct[idx == b].mean()) if count[b] else None for b in range(n_bins)]
    cf = [float(conf[idx == b].mean()) if count[b] else None for b in range(n_bins)]
    return count.tolist(), acc, cf


def test_pooling_equals_the_bins_of_the_concatenated_predictions():
    rng = np.random.default_rng(0)
    runs = [(rng.uniform(0.05, 1.0, n), rng.integers(0, 2, n).astype(float)) for n in (7, 40, 1, 23)]
    runs[2] = (np.array([1.0]), np.array([1.0]))  # a confidence on the last edge
    pooled = pool([reliability_from_top_label(c, y).to_dict() for c, y in runs])
    count, acc, conf = numpy_bins(np.concatenate([c for c, _ in runs]), np.concatenate([y for _, y in runs]))
    assert pooled["count"] == count
    for got, want in ((pooled["accuracy"], acc), (pooled["confidence"], conf)):
        assert [g is None for g in got] == [w is None for w in want]
        np.testing.assert_allclose([g for g in got if g is not None], [w for w in want if w is not None], rtol=1e-12)


def test_report_overlays_one_pooled_curve_per_method(sweep_file, tmp_path, monkeypatch):
    predictions = {}  # (run id, posterior, split) -> (probs, labels) the run recorded
    real = run_mod.record_predictive

    def spy(cfg, built, run_dir, posterior, split, probs, labels, *args, **kwargs):
        predictions[(run_dir.parent.name, posterior, split)] = (probs.double().numpy(), labels.numpy())
        return real(cfg, built, run_dir, posterior, split, probs, labels, *args, **kwargs)

    monkeypatch.setattr(run_mod, "record_predictive", spy)
    path = sweep_file("base: base.yaml\naxes: {adapter.method: [lora, full], train.seed: [1, 2]}\n")
    out = tmp_path / "out"
    run_sweep(path, SweepOptions(out=str(out)))
    doc = build_report(out)

    (overlay,) = doc["reliability"]
    assert (overlay["dataset"], overlay["split"]) == ("digits", "test")
    assert sorted(overlay["curves"]) == ["full", "lora"]
    runs = json.loads((out / "report" / "report.json").read_text())["reliability"][0]["curves"]
    for method, curve in overlay["curves"].items():
        ids = curve["runs"]
        assert len(ids) == 2 and curve["n_runs"] == 2 and runs[method]["runs"] == ids
        probs = np.concatenate([predictions[(i, "map", "test")][0] for i in ids])
        labels = np.concatenate([predictions[(i, "map", "test")][1] for i in ids])
        conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
        count, acc, cf = numpy_bins(conf, correct)
        assert curve["count"] == count and sum(count) == 32
        for got, want in ((curve["accuracy"], acc), (curve["confidence"], cf)):
            assert [g is None for g in got] == [w is None for w in want]
            np.testing.assert_allclose([g for g in got if g is not None], [w for w in want if w is not None],
                                       rtol=1e-6)
        filled = [b for b in range(15) if count[b]]
        ece = sum(count[b] / 32 * abs(acc[b] - cf[b]) for b in filled)
        assert curve["ece"] == pytest.approx(ece, rel=1e-6)

    fig = next(f for f in doc["figures"] if f["title"].startswith("reliability overlay"))
    assert "pooled over seeds" in fig["title"] and fig["n_runs"] == 4
    png = out / "report" / "plots" / "reliability_digits_test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    md = (out / "report" / "report.md").read_text()
    assert "](plots/reliability_digits_test.png)" in md
    assert "2 curves resting on 4 runs (full: 2 runs; lora: 2 runs)" in md


def test_overlay_legend_says_its_ece_is_of_the_pooled_bins(tmp_path, monkeypatch):
    """The overlay's ECE is that of the bins pooled over runs, not the mean of the runs' ECEs that the summary table
    shows: the legend says "pooled ECE" (its value: the pooled bins' ECE, computed here by hand)."""
    from bayespeft.metrics import reliability as rel_mod
    from bayespeft.experiments.sweep.reliability import reliability_plots

    seen = {}
    real = rel_mod._finish

    def spy(fig, ax, axc, *a, **kw):
        seen["labels"] = ax.get_legend_handles_labels()[1]
        return real(fig, ax, axc, *a, **kw)

    monkeypatch.setattr(rel_mod, "_finish", spy)
    runs = [(np.array([0.95, 0.95, 0.55]), np.array([1.0, 0.0, 1.0])), (np.array([0.95]), np.array([1.0]))]
    pooled = pool([reliability_from_top_label(c, y).to_dict() for c, y in runs])
    overlay = {"dataset": "digits", "split": "test",
               "curves": {"lora": {**pooled, "n_runs": 2, "runs": ["a", "b"]}}}
    reliability_plots([overlay], tmp_path)
    # pooled bins: 0.95 -> 3 examples, 2 right (gap |2/3 - 0.95|); 0.55 -> 1 right (gap 0.45); ECE over 4 examples
    ece = (3 * abs(2 / 3 - 0.95) + 1 * 0.45) / 4
    assert seen["labels"] == [f"lora (pooled ECE {100 * ece:.2f}%)"]
