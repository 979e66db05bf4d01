"""``benchmarks/sweep_overhead.py --ray``: the Ray-vs-local measurement runs end to end at a tiny size (no timing
is checked: the figures depend on the machine and its load). Opt-in (``BAYESPEFT_BENCH_TESTS=1``): starting a local
Ray and its workers takes 40-110 s on 2 shared cores, and ``tests/sweep/test_ray.py`` already runs the executor."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("sweep_overhead", REPO / "benchmarks" / "sweep_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("BAYESPEFT_PROGRESS", "0")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the benchmark sets them for its Ray workers
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    return module


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BAYESPEFT_BENCH_TESTS") != "1", reason="opt-in (40-110 s): BAYESPEFT_BENCH_TESTS=1")
def test_ray_vs_local_runs_both_executors_on_the_same_sweep(bench, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        out = bench.ray_vs_local(tmp_path, n=2, epochs=1, cpus=2)
    finally:
        torch.set_num_threads(threads)
    assert (out["done_local"], out["done_ray"]) == (2, 2) and out["same_results"] is True
    assert out["ray_in_workers"] is True  # the Ray sweep really ran in Ray workers
    assert out["ratio"] == pytest.approx(out["ray_s"] / out["local_s"])
    printed = capsys.readouterr().out
    assert "ray vs local: 2 single-threaded runs of 1 epochs, Ray on 2 CPUs" in printed and "ratio" in printed
    assert "ray" in sys.modules and not sys.modules["ray"].is_initialized()  # shut down again
