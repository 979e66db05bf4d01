"""The quickstart end to end in its fast mode (same code path, fewer downstream epochs), and the shipped
``configs/digits/{lora,normtune,hybrid,full}.yaml`` reproducing its MAP rows through ``bayespeft train``."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bayespeft.cli import main
from bayespeft.config import load_config
from bayespeft.experiments.quickstart import DOWNSTREAM_METHODS, FAST_EPOCHS, method_config, quickstart_config, run_quickstart

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: the digits configs give the quickstart's numbers; runs in one process are bit-identical on CPU, the tolerance only
#: absorbs float formatting (across machines / thread counts expect agreement to about 1e-4)
REL = 1e-6


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """The fast quickstart from a cold cache (it makes the upstream backbone; the tests below then build from the warm
    cache, so they also show that making it leaves the runs' random state alone). The file is shared with the
    session's cache afterwards."""
    out, cache = tmp_path_factory.mktemp("qs"), tmp_path_factory.mktemp("cold_cache")
    session_cache = Path(os.environ["BAYESPEFT_CACHE"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAYESPEFT_CACHE", str(cache))
        rows = run_quickstart(out, fast=True)
        yield out, rows
    (session_cache / "quickstart").mkdir(parents=True, exist_ok=True)
    for f in (cache / "quickstart").glob("*.safetensors"):
        shutil.copy2(f, session_cache / "quickstart" / f.name)


def test_quickstart_fast_writes_the_table(fast):
    out, rows = fast
    posteriors = {(r["method"], r["posterior"]) for r in rows}
    assert {(m, "map") for m in DOWNSTREAM_METHODS} <= posteriors
    assert {("lora", "laplace-diag"), ("lora", "laplace-kfac"), ("lora", "laplace-full[last_layer]"), ("lora", "sgld-ensemble")} <= posteriors
    assert {r["split"] for r in rows} == {"test", "test_shift"}
    for r in rows:
        assert 0.0 <= r["acc@1"] <= 1.0 and r["nll"] > 0 and 0.0 <= r["ece"] <= 1.0 and math.isfinite(r["brier"])
    table = pd.read_csv(out / "quickstart.csv")
    assert len(table) == len(rows)
    full_pct = table[(table.method == "full")]["tuned_%"].iloc[0]
    lora_pct = table[(table.method == "lora") & (table.posterior == "map")]["tuned_%"].iloc[0]
    assert full_pct == 100.0 and 0 < lora_pct < full_pct
    results = pd.read_csv(out / "results.csv")
    # every row of the table is in the append-only CSV (which also holds e.g. the single-sample SGLD rows)
    table_keys = {(r["method"], r["posterior"], r["split"]) for r in rows}
    assert table_keys <= set(zip(results.method, results.posterior, results.split))
    cache = Path(os.environ["BAYESPEFT_CACHE"]) / "quickstart"
    assert len(list(cache.glob("micro_vit_upstream_*.safetensors"))) == 1  # made once, for the fast and full runs alike
    assert list(out.glob("quickstart-lora-*/plots/reliability_map_test.png"))


@pytest.mark.parametrize("method", DOWNSTREAM_METHODS)
def test_digits_config_is_the_quickstarts_run(method, tmp_path):
    """The shipped config resolves to exactly the quickstart's config of that method (name and output aside), so a
    full-length `bayespeft train` of it is the quickstart's full-length row."""
    ours = load_config(CONFIGS / "digits" / f"{method}.yaml").model_dump(mode="json")
    theirs = method_config(quickstart_config(tmp_path), method).model_dump(mode="json")
    for d in (ours, theirs):
        d.pop("name"), d.pop("output")
    assert ours == theirs
    assert ours["model"]["pretrained"] == "quickstart-upstream" and ours["adapter"]["method"] == method


@pytest.mark.parametrize("method", DOWNSTREAM_METHODS)
def test_digits_config_reproduces_the_quickstart_row(method, fast, tmp_path, capsys):
    """`bayespeft train configs/digits/METHOD.yaml` with the fast mode's epochs gives the fast quickstart's MAP row
    (same upstream backbone from the cache, same data, same seeds)."""
    _, rows = fast
    capsys.readouterr()
    assert main(["train", str(CONFIGS / "digits" / f"{method}.yaml"), "--set", f"train.epochs={FAST_EPOCHS}",
                 "--set", f"output.root={tmp_path}", "--set", "output.reliability_plots=false"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run directory: "))
    metrics = json.loads((run / "metrics.json").read_text())
    mine = {r["split"]: r for r in rows if r["method"] == method and r["posterior"] == "map"}
    assert set(mine) == set(metrics["map"]) == {"test", "test_shift"}
    for split, row in mine.items():
        m = metrics["map"][split]
        for ours, theirs in (("acc", "acc@1"), ("nll", "nll"), ("ece", "ece"), ("brier", "brier")):
            assert m[ours] == pytest.approx(row[theirs], rel=REL, abs=1e-9), (split, ours)
        assert round(metrics["params"]["trainable_pct"], 2) == row["tuned_%"]
