"""The studies in configs/sweeps/: the full plans (dry run, exact counts) and their CPU variants end to end."""

import csv
import itertools
import json
from pathlib import Path

import pytest

from bayespeft.cli import main
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.expand import expand
from bayespeft.experiments.sweep.report import ReportOptions, build_report
from bayespeft.experiments.sweep.spec import load_sweep
from bayespeft.experiments.sweep.store import SweepStore

SWEEPS = Path(__file__).resolve().parents[2] / "configs" / "sweeps"
ALL = sorted(SWEEPS.glob("*.yaml")) + sorted((SWEEPS / "tiny").glob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SWEEPS)))
def test_every_study_validates(path):
    plan = expand(load_sweep(path))
    assert plan.runs and not plan.invalid


def test_each_study_has_a_tiny_variant():
    assert {p.name for p in SWEEPS.glob("*.yaml")} == {p.name for p in (SWEEPS / "tiny").glob("*.yaml")}


def test_peft_vit_baselines_plan_is_60_lora_runs_plus_baselines(capsys):
    path = SWEEPS / "peft_vit_baselines.yaml"
    plan = expand(load_sweep(path))
    models, datasets = ["deit_tiny_patch16_224", "deit_small_patch16_224"], ["cifar10", "cifar100"]
    seeds, ranks = [42, 123, 456], [2, 4, 8, 16, 32]
    lora = {(r.config.model.name, r.config.data.name, r.config.adapter.r, r.config.adapter.alpha,
             r.config.adapter.dropout, r.config.train.seed) for r in plan.runs if r.config.adapter.method == "lora"}
    assert lora == {(m, d, rk, 2.0 * rk, 0.1, s) for m, d, rk, s in itertools.product(models, datasets, ranks, seeds)}
    for method in ("full", "normtune", "hybrid"):
        runs = [r for r in plan.runs if r.config.adapter.method == method]
        assert {(r.config.model.name, r.config.data.name, r.config.train.seed) for r in runs} == set(
            itertools.product(models, datasets, seeds))
        assert len(runs) == 12
    hybrid = [r.config.adapter for r in plan.runs if r.config.adapter.method == "hybrid"]
    assert {(a.r, a.alpha, a.dropout) for a in hybrid} == {(8, 16.0, 0.1)}
    cfg = plan.runs[0].config
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.train.lr, cfg.train.patience) == (10, 32, 1e-4, 3)
    assert main(["sweep", str(path), "--dry-run", "--out", "/nonexistent/never-created"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep peft-vit-baselines: 96 runs (60 lora, 12 full, 12 normtune, 12 hybrid)")
    assert sum(" lora " in line and line.endswith("new") for line in out.splitlines()) == 60


def test_tiny_peft_study_end_to_end_with_rank_plots(tmp_path):
    out = tmp_path / "peft"
    res = run_sweep(SWEEPS / "tiny" / "peft_vit_baselines.yaml", SweepOptions(out=str(out)))
    assert res["counts"] == {"pending": 0, "running": 0, "done": 7, "failed": 0}
    doc = build_report(out, ReportOptions(metrics=["acc@1", "ece", "tuned_%"]))
    figs = {f["title"]: f for f in doc["figures"]}
    assert figs["acc@1 vs LoRA rank"]["n_runs"] == 4 + 1  # lora r2, r4 x 2 seeds, hybrid r8 x 1
    assert (out / "report" / "plots" / "rank_acc1.png").is_file()
    lora2 = next(r for r in doc["summary"] if r["method"] == "lora" and r["rank"] == 2 and r["metric"] == "acc@1")
    assert lora2["n"] == 2 and lora2["std"] is not None
    full = next(r for r in doc["summary"] if r["method"] == "full" and r["metric"] == "acc@1")
    assert full["n"] == 1 and full["std"] is None and full["lo"] is None


def _overrides(data_root, mrpc=False):
    from bayespeft.assets import find_minilm_dir

    out = [f"data.root={data_root}", "data.verify_checksums=false", "data.download=false", "train.progress=false",
           "output.reliability_plots=false"]
    return tuple(out + ([f"model.tokenizer={find_minilm_dir()}"] if mrpc else []))


def test_tiny_vit_tiny_cifar10_methods_appends_csv_rows(tmp_path, data_root):
    out = tmp_path / "vit"
    res = run_sweep(SWEEPS / "tiny" / "vit_tiny_cifar10_methods.yaml",
                    SweepOptions(out=str(out), overrides=_overrides(data_root)))
    assert res["counts"]["done"] == 3
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["hybrid", "lora", "normtune"]
    for r in rows:
        assert r["dataset"] == "cifar10" and r["backbone"] == "vit_tiny_patch16_224" and r["epochs"] == "1"
        assert all(r[c] != "" for c in ("ts", "tuned_params_%", "acc@1", "ece", "train_time_s"))


def test_tiny_sgmcmc_study_end_to_end_with_verdicts(tmp_path, data_root):
    out = tmp_path / "sg"
    res = run_sweep(SWEEPS / "tiny" / "sgmcmc_study.yaml",
                    SweepOptions(out=str(out), overrides=_overrides(data_root, mrpc=True)))
    store = SweepStore.open(out)
    assert res["counts"]["done"] == 5, [(r.id, r.error) for r in store.runs(status="failed")]
    doc = build_report(out, ReportOptions(by=["base"], metrics=["acc@1", "nll"], plots=False))
    assert len(doc["diagnostics"]) == 5
    for d in doc["diagnostics"]:
        assert d["stage"] == "sample" and d["verdict_text"]
        diag = json.loads((out / "runs" / d["run"] / "sample" / "diagnostics.json").read_text())
        assert d["verdict_text"] == diag["verdict_text"]
    posteriors = {(r["base"], r["posterior"]) for r in doc["summary"]}
    assert ("cifar100-wrn28-10-sam-sgld", "sam_sgld-ensemble") in posteriors
    assert ("mrpc-roberta-base-lora-sgld", "map") in posteriors
    md = (out / "report" / "report.md").read_text()
    assert "R-hat / ESS verdicts" in md
