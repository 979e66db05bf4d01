"""Mean ± std and t-interval over runs: hand values, numpy, and "no std" for a single run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayespeft.stats import format_summary, summarize_metrics, summarize_over_runs

T975_2 = 4.302652730  # t_{0.975, 2} from a printed table


def test_summary_over_three_seeds():
    # 0.81 0.82 0.80: mean 0.81, s = sqrt((0 + 1e-4 + 1e-4) / 2) = 0.01, half-width t_{.975,2} * 0.01 / sqrt 3
    s = summarize_over_runs([0.81, 0.82, 0.80])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.81, abs=1e-12), pytest.approx(0.01, abs=1e-12))
    half = T975_2 * 0.01 / math.sqrt(3)
    assert s.interval == pytest.approx((0.81 - half, 0.81 + half), abs=1e-9)
    assert format_summary(s) == f"0.8100 ± 0.0100 [{0.81 - half:.4f}, {0.81 + half:.4f}] (n=3, 95% t)"


def test_summary_agrees_with_numpy():
    x = np.random.default_rng(2).uniform(size=7)
    s = summarize_over_runs(x, level=0.9)
    assert s.mean == pytest.approx(np.mean(x), abs=1e-15) and s.std == pytest.approx(np.std(x, ddof=1), abs=1e-15)
    assert format_summary(s, digits=2).endswith("(n=7, 90% t)")


def test_one_run_has_no_std_not_zero():
    s = summarize_over_runs([0.8123])
    assert s.std is None and s.interval is None and s.half_width is None
    assert format_summary(s) == "0.8123 (n=1, no std)"
    assert format_summary(summarize_over_runs([])) == "n/a (n=0)"


def test_summarize_metrics_counts_each_metric_separately():
    runs = [
        {"acc": 0.80, "ece": 0.10, "method": "lora", "diverged": False},
        {"acc": 0.82, "ece": None, "peak_mem_mb": np.float32(512.0)},
        {"acc": 0.84, "ece": 0.06},
    ]
    out = summarize_metrics(runs)
    assert list(out) == ["acc", "ece", "peak_mem_mb"]
    assert (out["acc"].n, out["acc"].mean) == (3, pytest.approx(0.82))
    assert (out["ece"].n, out["ece"].mean) == (2, pytest.approx(0.08))
    assert out["peak_mem_mb"].n == 1 and out["peak_mem_mb"].std is None
    with pytest.raises(ValueError, match="metric 'nll'.*non-finite"):
        summarize_metrics([{"nll": 0.3}, {"nll": float("nan")}])
