"""``bayespeft sample --resume RUN_DIR`` end to end through the CLI (micro ViT + LoRA on 48 digits, random crops
from the global RNG): a run stopped mid-sampling (Ctrl-C: exit 130) and resumed gives the same sample tensors, the
same diagnostics and the same printed table as an uninterrupted run; a finished run has nothing to resume; a run of
another config, or a directory that is no run, is a one-line error (exit 2); and evaluating an incomplete store
says what is missing, on stderr and in ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from bayespeft.cli import main
from bayespeft.config import dump_config, validate
from bayespeft.experiments import sample as sp
from bayespeft.experiments.train import train_model
from bayespeft.sgmcmc import SampleStore

torch.set_num_threads(1)


def config(root: Path, **sgmcmc):
    sc = dict(lr=1e-3, epochs=4, burn_in_epochs=1, thin=1, n_chains=2, probe_size=16, n_projections=2)
    sc.update(sgmcmc)
    return validate({
        "name": "res",
        "data": {"name": "digits", "max_train": 48, "max_test": 40, "batch_size": 16, "eval_batch_size": 32,
                 "augment": True},
        "model": {"name": "micro_vit", "pretrained": False},
        "adapter": {"method": "lora", "r": 2},
        "train": {"epochs": 1, "lr": 0.01, "progress": False},
        "sgmcmc": sc,
        "output": {"root": str(root), "reliability_plots": False},
    })


def write_cfg(cfg, path: Path) -> str:
    path.write_text(dump_config(cfg))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("map")
    return train_model(config(root)).run_dir


def run_dirs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if p.is_dir() and p.name.startswith("res-")}


def stop_after(monkeypatch, k: int) -> None:
    """Ctrl-C right after the k-th kept sample is written (before the chain's resume state is updated)."""
    real, seen = SampleStore.add, [0]

    def add(self, *a, **kw):
        out = real(self, *a, **kw)
        seen[0] += 1
        if seen[0] == k:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(SampleStore, "add", add)


def table_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if not ln.startswith("run directory:")]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = SampleStore(a / "samples"), SampleStore(b / "samples")
    assert sa.entries == sb.entries and len(sa) == 18
    for i in range(len(sa)):
        ta, tb = sa.load(i), sb.load(i)
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sa.diagnostic_records() == sb.diagnostic_records()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for part in ("splits", "single"):
        for split, m in ma["sgmcmc"][part].items():
            for k in ("acc", "nll", "ece", "brier"):
                assert m[k] == mb["sgmcmc"][part][split][k], (part, split, k)
    strip = {s: {k: v for k, v in m.items() if not k.endswith("time_s")} for s, m in ma["map"].items()}
    assert strip == {s: {k: v for k, v in m.items() if not k.endswith("time_s")} for s, m in mb["map"].items()}
    da, db = (json.loads((d / "diagnostics.json").read_text()) for d in (a, b))
    assert da["verdict"] == db["verdict"] and da["summary"] == db["summary"]
    assert mb["sgmcmc"]["completeness"]["complete"] is True


@pytest.mark.parametrize("warm_start,k", [("checkpoint", 5), ("train", 12)], ids=["checkpoint-chain0", "trained-here-chain1"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, capsys, trained, warm_start, k):
    cfg_path = write_cfg(config(tmp_path / "runs"), tmp_path / "cfg.yaml")
    extra = ["--checkpoint", str(trained)] if warm_start == "checkpoint" else []
    assert main(["sample", cfg_path, *extra]) == 0
    want = table_lines(capsys.readouterr().out)
    (ref,) = run_dirs(tmp_path / "runs")

    with monkeypatch.context() as mp:
        stop_after(mp, k)
        assert main(["sample", cfg_path, *extra]) == 130
    (cut,) = run_dirs(tmp_path / "runs") - {ref}
    assert "sgmcmc" not in json.loads((cut / "metrics.json").read_text())  # MAP results kept, no sampling results
    capsys.readouterr()
    assert main(["sample", cfg_path, "--resume", str(cut)]) == 0
    got = capsys.readouterr()
    assert table_lines(got.out) == want and f"run directory: {cut}" in got.out
    assert "warning" not in got.err
    assert_same_run(ref, cut)
    assert run_dirs(tmp_path / "runs") == {ref, cut}  # resumed in place, no new run directory

    rows = pd.read_csv(tmp_path / "runs" / "results.csv")
    # one row per distinct result: the resumed run's MAP rows equal the reference run's (same checkpoint), so only
    # its sample rows are new
    assert sorted(rows[rows["run"] == cut.name]["posterior"]) == sorted(
        p for p in rows[rows["run"] == ref.name]["posterior"] if p != "map")

    # a finished run: nothing to do, nothing appended
    n_rows = len(rows)
    assert main(["sample", cfg_path, "--resume", str(cut)]) == 0
    assert capsys.readouterr().out.startswith(f"nothing to resume in {cut}: every chain finished")
    assert len(pd.read_csv(tmp_path / "runs" / "results.csv")) == n_rows


def test_resume_refuses_other_config_and_non_runs(tmp_path, monkeypatch, capsys, trained):
    cfg_path = write_cfg(config(tmp_path / "runs"), tmp_path / "cfg.yaml")
    with monkeypatch.context() as mp:
        stop_after(mp, 3)
        assert main(["sample", cfg_path, "--checkpoint", str(trained)]) == 130
    (cut,) = run_dirs(tmp_path / "runs")
    before = (cut / "samples" / "samples.jsonl").read_text()
    capsys.readouterr()

    other = write_cfg(config(tmp_path / "runs", lr=2e-3, thin=2), tmp_path / "other.yaml")
    assert main(["sample", other, "--resume", str(cut)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --resume {cut}: the run was sampled with a different config")
    assert "sgmcmc.lr: run has 0.001, config has 0.002; sgmcmc.thin: run has 1, config has 2" in err

    assert main(["sample", cfg_path, "--resume", str(cut), "--checkpoint", str(tmp_path)]) == 2
    assert "was warm-started from" in capsys.readouterr().err

    halfway = tmp_path / "halfway"  # `bayespeft sample` stopped while training the MAP: no checkpoint/ yet
    (halfway / "checkpoints").mkdir(parents=True)
    for bad, msg in ((tmp_path / "nope", "no such run directory"),
                     (trained, f"no SG-MCMC sample store in it ({trained}/samples/index.json is missing), so no "
                               f"sampling to continue; it is a finished training run: sample from it with `bayespeft "
                               f"sample CONFIG --checkpoint {trained}`"),
                     (halfway, f"If `bayespeft sample` was stopped while training the MAP, finish that with "
                               f"`bayespeft train CONFIG --resume {halfway}`")):
        assert main(["sample", cfg_path, "--resume", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err
    assert not (tmp_path / "nope").exists()  # nothing created
    assert (cut / "samples" / "samples.jsonl").read_text() == before  # refused resumes touch nothing


def test_incomplete_store_is_evaluated_with_a_warning(tmp_path, monkeypatch, capsys, trained):
    cfg = config(tmp_path / "runs")
    cfg_path = write_cfg(cfg, tmp_path / "cfg.yaml")
    with monkeypatch.context() as mp:
        stop_after(mp, 4)  # chain 0: 4 of 9 draws; chain 1 never started
        assert main(["sample", cfg_path, "--checkpoint", str(trained)]) == 130
    (cut,) = run_dirs(tmp_path / "runs")
    capsys.readouterr()
    assert main(["evaluate", cfg_path, "--checkpoint", str(trained), "--samples", str(cut)]) == 0
    err = capsys.readouterr().err
    assert f"warning: the sample store {cut / 'samples'} is incomplete" in err
    assert "1 of 2 chains present (missing: [1]), 9 draws per chain asked, present: chain 0: 4, chain 1: 0" in err
    assert f"bayespeft sample CONFIG --resume {cut}" in err
    (ev,) = run_dirs(tmp_path / "runs") - {cut}
    comp = json.loads((ev / "metrics.json").read_text())["sgmcmc"]["completeness"]
    assert comp["complete"] is False and comp["chains_asked"] == [0, 1] and comp["chains_present"] == [0]
    assert comp["draws_per_chain_asked"] == 9 and comp["draws_present"] == {"0": 4}


def test_sample_commands_own_evaluation_warns_when_chains_are_missing(tmp_path, monkeypatch, capsys, trained):
    """Chains run by separate calls into one store: evaluating before all asked chains ran says which are missing."""
    real = sp.run_chains
    monkeypatch.setattr(sp, "run_chains", lambda *a, **kw: real(*a, **{**kw, "chain_ids": [0]}))
    out = sp.sample_run(config(tmp_path / "runs"), checkpoint=trained)
    assert "missing: [1]" in capsys.readouterr().err
    metrics = json.loads((Path(out["run_dir"]) / "metrics.json").read_text())
    assert metrics["sgmcmc"]["completeness"]["unfinished"] == [1]


def test_stopped_during_evaluation_resumes_by_evaluating(tmp_path, capsys, trained):
    """Every chain finished but the run died while evaluating: --resume runs no step and evaluates."""
    cfg_path = write_cfg(config(tmp_path / "runs", epochs=2), tmp_path / "cfg.yaml")
    assert main(["sample", cfg_path, "--checkpoint", str(trained)]) == 0
    want = table_lines(capsys.readouterr().out)
    (run,) = run_dirs(tmp_path / "runs")
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["sgmcmc"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    before = (run / "samples" / "samples.jsonl").read_text()
    assert main(["sample", cfg_path, "--resume", str(run)]) == 0
    assert table_lines(capsys.readouterr().out) == want
    assert (run / "samples" / "samples.jsonl").read_text() == before
    assert json.loads((run / "metrics.json").read_text())["sgmcmc"]["resumed"] is True


def test_rows_of_an_incomplete_store_are_marked_and_kept_apart_from_the_complete_ones(tmp_path, monkeypatch, capsys,
                                                                                        trained):
    cfg_path = write_cfg(config(tmp_path / "runs"), tmp_path / "cfg.yaml")
    with monkeypatch.context() as mp:
        stop_after(mp, 4)  # chain 0: 4 of 9 draws; chain 1 never started
        assert main(["sample", cfg_path, "--checkpoint", str(trained)]) == 130
    (cut,) = run_dirs(tmp_path / "runs")
    evaluate = ["evaluate", cfg_path, "--checkpoint", str(trained), "--samples", str(cut)]
    assert main(evaluate) == 0
    csv = tmp_path / "runs" / "results.csv"

    def sample_rows():
        df = pd.read_csv(csv)
        return df[df["posterior"].str.startswith("sgld-")].reset_index(drop=True)

    part = sample_rows()
    assert sorted(part["posterior"]) == ["sgld-ensemble", "sgld-sample"]  # digits: test split only
    ens = part[part["posterior"] == "sgld-ensemble"].iloc[0]
    assert ens["n_samples"] == 4 and ens["samples_planned"] == 18 and not part["complete"].any()
    assert part["sampler_lr"].tolist() == [1e-3, 1e-3] and part["temperature"].tolist() == [1.0, 1.0]
    assert part[part["posterior"] == "sgld-sample"]["samples_planned"].isna().all()

    capsys.readouterr()
    assert main(["sample", cfg_path, "--resume", str(cut)]) == 0  # finishes the store; evaluates it as complete
    assert main(evaluate) == 0  # the complete store again: the same result as the resumed run's, no new row
    assert "already in" in capsys.readouterr().err
    rows = sample_rows()
    assert len(rows) == 4 and rows.iloc[:2].equals(part)  # the partial rows kept, unchanged
    done = rows.iloc[2:]
    assert done["complete"].all() and done[done["posterior"] == "sgld-ensemble"]["n_samples"].tolist() == [18]
    assert rows["result_key"].nunique() == 4
