"""The quickstart end to end in its fast mode (same code path, fewer epochs)."""

from __future__ import annotations

import math

import pandas as pd

from bayespeft.experiments.quickstart import DOWNSTREAM_METHODS, run_quickstart


def test_quickstart_fast_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESPEFT_CACHE", str(tmp_path / "cache"))
    rows = run_quickstart(tmp_path / "qs", fast=True)
    posteriors = {(r["method"], r["posterior"]) for r in rows}
    assert {(m, "map") for m in DOWNSTREAM_METHODS} <= posteriors
    assert {("lora", "laplace-diag"), ("lora", "laplace-kfac"), ("lora", "laplace-full[last_layer]"), ("lora", "sgld-ensemble")} <= posteriors
    assert {r["split"] for r in rows} == {"test", "test_shift"}
    for r in rows:
        assert 0.0 <= r["acc@1"] <= 1.0 and r["nll"] > 0 and 0.0 <= r["ece"] <= 1.0 and math.isfinite(r["brier"])
    table = pd.read_csv(tmp_path / "qs" / "quickstart.csv")
    assert len(table) == len(rows)
    full_pct = table[(table.method == "full")]["tuned_%"].iloc[0]
    lora_pct = table[(table.method == "lora") & (table.posterior == "map")]["tuned_%"].iloc[0]
    assert full_pct == 100.0 and 0 < lora_pct < full_pct
    results = pd.read_csv(tmp_path / "qs" / "results.csv")
    # every row of the table is in the append-only CSV (which also holds e.g. the single-sample SGLD rows)
    table_keys = {(r["method"], r["posterior"], r["split"]) for r in rows}
    assert table_keys <= set(zip(results.method, results.posterior, results.split))
    assert list((tmp_path / "cache" / "quickstart").glob("micro_vit_upstream_*.safetensors"))
    assert list((tmp_path / "qs").glob("quickstart-lora-*/plots/reliability_map_test.png"))
