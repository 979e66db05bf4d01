"""``bayespeft.experiments.sample`` end to end on a micro ViT + LoRA on 48 digits: warm start from a checkpoint or a
fresh MAP, the evaluation table against independently recomputed ensembles, divergence handling, and the verdict
against R-hat / ESS recomputed with arviz-stats directly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.func import functional_call

from bayespeft.config import validate
from bayespeft.metrics import classification_metrics
from bayespeft.experiments import sample as sp
from bayespeft.experiments.run import build, load_checkpoint_into, split_loaders
from bayespeft.experiments.train import train_model
from bayespeft.sgmcmc import SampleStore, SamplerConfig

torch.set_num_threads(1)

SPLITS = ["test", "test_shift"]


def config(root: Path, **sgmcmc):
    sc = dict(lr=1e-3, epochs=4, burn_in_epochs=1, thin=1, n_chains=2, probe_size=16, n_projections=2)
    sc.update(sgmcmc)
    return validate({
        "name": "pipe",
        "data": {"name": "digits", "max_train": 48, "max_test": 40, "batch_size": 16, "eval_batch_size": 32,
                 "shift": "rotate"},
        "model": {"name": "micro_vit", "pretrained": False},
        "adapter": {"method": "lora", "r": 2},
        "train": {"epochs": 1, "lr": 0.01, "progress": False},
        "sgmcmc": sc,
        "output": {"root": str(root), "reliability_plots": False},  # plots: tests/configs (they cost seconds)
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One MAP run (the warm start of the checkpoint tests)."""
    root = tmp_path_factory.mktemp("runs")
    return train_model(config(root)), root


def manual_probs(cfg, run_dir: Path, store: SampleStore, indices: list[int]) -> dict[str, torch.Tensor]:
    """Average of softmax over the given samples, recomputed with functional_call on a freshly loaded model."""
    built = build(cfg)
    load_checkpoint_into(built, run_dir)
    model = built.model.eval()
    out = {}
    for split, loader in split_loaders(built.loaders).items():
        batches = list(loader)
        per_sample = []
        for i in indices:
            params = {**dict(model.named_parameters()), **store.load(i)}
            with torch.no_grad():
                per_sample.append(torch.cat([functional_call(model, params, args=(), kwargs={"pixel_values": b["pixel_values"]})
                                             .softmax(-1) for b in batches]))
        out[split] = (torch.stack(per_sample).mean(0), torch.cat([b["labels"] for b in batches]))
    return out


def assert_metrics_match(got: dict, probs: torch.Tensor, labels: torch.Tensor) -> None:
    want = classification_metrics(probs, labels)
    for k in ("acc", "nll", "ece", "brier"):
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k


def test_sample_run_from_checkpoint_table_files_and_csv(trained):
    run, root = trained
    cfg = config(root)
    out = sp.sample_run(cfg, checkpoint=run.run_dir)
    run_dir = Path(out["run_dir"])
    assert run_dir != run.run_dir  # a new run directory; the MAP run is untouched
    assert [(r["posterior"], r["split"]) for r in out["table"]] == [
        (p, s) for p in ("map", "sgld-sample", "sgld-ensemble") for s in SPLITS]
    for s in SPLITS:  # the warm start is the saved MAP: same predictions as when it was trained
        assert out["map"][s]["nll"] == pytest.approx(run.metrics["map"][s]["nll"], rel=1e-6)

    store = SampleStore(run_dir / "samples")
    per_chain = {c: store.indices(c) for c in store.chains()}
    assert sorted(per_chain) == [0, 1] and all(len(v) == 9 for v in per_chain.values())  # 12 steps, burn-in 3
    assert len(list((run_dir / "samples").glob("chain*/draw*.safetensors"))) == 18
    ens = manual_probs(cfg, run.run_dir, store, list(range(len(store))))
    one = manual_probs(cfg, run.run_dir, store, [per_chain[0][-1]])
    for s in SPLITS:
        assert_metrics_match(out["sgmcmc"]["splits"][s], *ens[s])
        assert_metrics_match(out["sgmcmc"]["single"][s], *one[s])
    assert out["sgmcmc"]["single_sample"]["chain"] == 0 and out["sgmcmc"]["single_sample"]["draw"] == 8
    assert out["sgmcmc"]["n_samples"] == 18 and out["diverged"] == {}

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sgmcmc"]["splits"]["test"]["nll"] == out["sgmcmc"]["splits"]["test"]["nll"]
    assert metrics["checkpoint"] == str(run.run_dir)
    # the sampling run holds no checkpoint/ of its own: evaluating its samples "with it" uses the recorded warm start
    ev = sp.evaluate_samples_run(cfg, run_dir, run_dir)
    assert ev["checkpoint"] == str(run.run_dir)
    for s in SPLITS:
        assert ev["sgld-ensemble"][s]["nll"] == out["sgmcmc"]["splits"][s]["nll"]
    diag = json.loads((run_dir / "diagnostics.json").read_text())
    assert diag["n_chains"] == 2 and diag["n_draws"] == 9 and set(diag["summary"]) >= {"loglik", "param_norm", "proj_1"}
    assert not (run_dir / "plots").exists()  # output.reliability_plots: false switches every plot off
    rows = pd.read_csv(cfg.output.csv_path())
    # the warm start's MAP rows are recorded once (by its training run), not again by the sampling run
    assert sorted(rows[rows["posterior"] == "map"]["run"]) == [run.run_dir.name] * len(SPLITS)
    rows = rows[rows["run"] == run_dir.name]
    assert sorted(zip(rows["posterior"], rows["split"])) == sorted(
        (r["posterior"], r["split"]) for r in out["table"] if r["posterior"] != "map")
    ens_row = rows[(rows["posterior"] == "sgld-ensemble") & (rows["split"] == "test")].iloc[0]
    assert ens_row["nll"] == pytest.approx(out["sgmcmc"]["splits"]["test"]["nll"], rel=1e-5)


def test_sample_run_trains_map_then_evaluate_samples_reproduces_it_exactly(tmp_path):
    cfg = config(tmp_path)
    out = sp.sample_run(cfg)  # no checkpoint: `bayespeft train`'s code path first, samples in the same run
    run_dir = Path(out["run_dir"])
    assert (run_dir / "checkpoint").is_dir() and (run_dir / "samples" / "index.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train", "map", "sgmcmc", "params"} <= set(metrics) and metrics["train"]["epochs_run"] == 1
    rows = pd.read_csv(cfg.output.csv_path())
    assert (rows["posterior"] == "map").sum() == 2  # MAP rows written once (by training), not again

    ev = sp.evaluate_samples_run(cfg, run_dir, run_dir)  # the run directory holding samples/
    assert Path(ev["run_dir"]) != run_dir
    for s in SPLITS:  # same model, same samples, same loaders: bit-identical metrics
        for k in ("acc", "nll", "ece", "brier"):
            assert ev["sgld-ensemble"][s][k] == out["sgmcmc"]["splits"][s][k]
            assert ev["sgld-sample"][s][k] == out["sgmcmc"]["single"][s][k]
            assert ev["map"][s][k] == pytest.approx(out["map"][s][k], rel=1e-6)
    assert ev["verdict"] == out["verdict"]
    assert json.loads((Path(ev["run_dir"]) / "diagnostics.json").read_text())["verdict"] == \
        json.loads((run_dir / "diagnostics.json").read_text())["verdict"]
    # one row per distinct result: evaluating the same samples of the same checkpoint again adds no row
    n_rows = len(pd.read_csv(cfg.output.csv_path()))
    sp.evaluate_samples_run(cfg, run_dir, run_dir)
    assert len(pd.read_csv(cfg.output.csv_path())) == n_rows


def _flatten(arrays):
    out = {}
    for k, v in arrays.items():
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        for i in range(flat.shape[2]):
            out[f"{k}[{i}]" if v.ndim > 2 else k] = flat[:, :, i]
    return out


def test_verdict_is_what_arviz_measures(trained, tmp_path):
    """R-hat / ESS recomputed with arviz-stats directly; pass/fail must follow the thresholds, whichever way."""
    from arviz_stats.base import array_stats

    run, root = trained
    store_dir = tmp_path / "s"
    cfg = config(tmp_path, epochs=6)
    built = build(cfg)
    load_checkpoint_into(built, run.run_dir)
    res = sp.sample_and_evaluate(cfg, built, tmp_path, store_dir=store_dir)
    store = SampleStore(store_dir)
    arrays = store.diagnostic_arrays()
    r_max, e_min = -math.inf, math.inf
    for x in _flatten(arrays).values():
        if np.all(x == x.flat[0]):
            continue
        r = float(array_stats.rhat(x, chain_axis=0, draw_axis=1, method="rank"))
        e = min(float(array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk")),
                float(array_stats.ess(x, chain_axis=0, draw_axis=1, method="tail", prob=(0.05, 0.95)))) / x.shape[0]
        r_max, e_min = max(r_max, r), min(e_min, e)
    loose = {"rhat_strict": 50.0, "rhat_lenient": 50.0, "min_ess_per_chain": 0.5}
    for thresholds in ({}, loose):
        sc = cfg.sgmcmc.model_copy(update=thresholds)
        out_dir = tmp_path / f"diag{len(thresholds)}"
        sp.diagnose(store, sc, out_dir, plots=False)
        diag = json.loads((out_dir / "diagnostics.json").read_text())
        v = diag["verdict"]
        assert v["n_chains"] == 2 and v["n_draws"] == 15
        assert v["rhat_max"] == pytest.approx(r_max, rel=1e-9)
        assert v["ess_per_chain_min"] == pytest.approx(e_min, rel=1e-9)
        assert v["strict"] == (r_max <= sc.rhat_strict and e_min >= sc.min_ess_per_chain)
        assert v["lenient"] == (r_max <= sc.rhat_lenient and e_min >= sc.min_ess_per_chain)
        assert v["strict"] == bool(thresholds)  # 15 draws never reach ESS 100/chain; the loose thresholds pass
        assert diag["verdict_text"].startswith("PASS" if thresholds else "FAIL")
        want = float(array_stats.rhat(arrays["loglik"], chain_axis=0, draw_axis=1, method="rank"))
        assert diag["summary"]["loglik"]["rhat"] == pytest.approx(want, rel=1e-9)
        if not thresholds:
            assert res["verdict"] == v and res["verdict_text"] == diag["verdict_text"]


def test_diverged_chain_is_reported_and_left_out_of_ensemble(trained, tmp_path, monkeypatch, capsys):
    """Chain 0 runs with a huge step and diverges; chains 1 and 2 run normally into the same store."""
    run, root = trained
    real = sp.run_chains

    def chain0_diverges(model, loader, sc, n_chains=None, *, store, **kw):
        bad = sc.model_copy(update={"lr": 1e3, "burn_in_epochs": 0.0, "divergence_check_every": 1})
        real(model, loader, bad, store=store, chain_ids=[0], **kw)
        return real(model, loader, sc, store=store, chain_ids=[1, 2], **kw)

    monkeypatch.setattr(sp, "run_chains", chain0_diverges)
    cfg = config(tmp_path)
    out = sp.sample_run(cfg, checkpoint=run.run_dir)
    run_dir = Path(out["run_dir"])
    store = SampleStore(run_dir / "samples")
    assert list(out["diverged"]) == [0] and "NaN/Inf" in out["diverged"][0]["reason"]
    assert "diverged chain(s) excluded: 0" in out["verdict"]
    n0 = len(store.indices(0))
    assert n0 >= 1 and len(store.indices(1)) == len(store.indices(2)) == 9  # chain 0's earlier samples stay
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["sgmcmc"]["diverged"]) == ["0"]
    diag = json.loads((run_dir / "diagnostics.json").read_text())
    assert diag["verdict"]["n_chains"] == 2 and diag["kept_chains"] == [1, 2]
    assert out["sgmcmc"]["n_samples"] == 18 and out["sgmcmc"]["single_sample"]["chain"] == 1

    good = store.indices(1) + store.indices(2)
    ens = manual_probs(cfg, run.run_dir, store, good)
    for s in SPLITS:
        assert_metrics_match(out["sgmcmc"]["splits"][s], *ens[s])
    with_bad = manual_probs(cfg, run.run_dir, store, store.indices(0)[:1] + good)
    assert not torch.allclose(with_bad["test"][0], ens["test"][0], atol=1e-4)  # chain 0 would have changed it

    from bayespeft.cli import main

    capsys.readouterr()
    assert main(["evaluate", _write_cfg(cfg, tmp_path), "--checkpoint", str(run.run_dir),
                 "--samples", str(run_dir / "samples")]) == 0
    printed = capsys.readouterr()
    assert "sgld-ensemble" in printed.out and "diagnostics verdict: FAIL" in printed.out
    assert "warning: chain 0 diverged" in printed.err


def _write_cfg(cfg, tmp_path: Path) -> str:
    from bayespeft.config import dump_config

    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


def test_all_chains_diverging_is_an_error_after_writing_the_report(trained, tmp_path):
    run, root = trained
    cfg = config(tmp_path, lr=1e3, burn_in_epochs=0, divergence_check_every=1)
    with pytest.raises(sp.NoSamplesError, match=r"no non-diverged chain kept a sample \(chain 0 at step \d+, chain 1"):
        sp.sample_run(cfg, checkpoint=run.run_dir)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("pipe-")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(metrics["sgmcmc"]["diverged"]) == ["0", "1"] and "map" in metrics
    assert json.loads((run_dir / "diagnostics.json").read_text())["verdict"] is None


def test_bad_inputs_have_clear_messages(trained, tmp_path):
    run, root = trained
    cfg = config(tmp_path)
    with pytest.raises(FileNotFoundError, match="no SG-MCMC sample store"):
        sp.evaluate_samples_run(cfg, run.run_dir, tmp_path / "nowhere")
    built = build(cfg)
    load_checkpoint_into(built, run.run_dir)
    store = SampleStore(tmp_path / "used")
    store.add(0, {n: p.detach() for n, p in built.model.named_parameters() if p.requires_grad}, step=1)
    with pytest.raises(ValueError, match="already holds 1 samples"):
        sp.sample_and_evaluate(cfg, built, tmp_path, SamplerConfig(), store_dir=tmp_path / "used")
