"""``benchmarks/cli_start.py`` end to end, once per command: every quick command runs and is measured (no timing
assertion: the figures are for the benchmark's printout)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("cli_start", REPO / "benchmarks" / "cli_start.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_quick_command_is_measured(tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "figures.json"
    assert bench.main(["--repeats", "1", "--config", "configs/digits/lora.yaml", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == set(bench.commands("configs/digits/lora.yaml"))
    for label, r in results.items():
        assert r["failed"] == 0, label
        assert 0 < r["median_cpu_s"] and 0 < r["median_s"] <= r["max_s"] and 5 < r["median_mb"] <= r["max_mb"], label
    printed = capsys.readouterr().out
    assert "validate configs/digits/lora.yaml" in printed and "target <= 1.5 s and <= 300 MB" in printed


def test_a_failing_command_is_reported(capsys):
    bench = load_benchmark()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    wall, cpu, rss, status = bench.run_once(["validate", "no/such/config.yaml"], env)
    assert status == 2 and wall > 0 and rss > 5
    assert "failed (2)" in capsys.readouterr().err
