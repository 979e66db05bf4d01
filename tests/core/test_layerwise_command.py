"""`bayespeft layerwise` end to end on a micro ViT with LoRA (two blocks + head): the JSON's numbers against an
independent computation from the saved per-example arrays, resume after an interrupt, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import bayespeft.experiments.layerwise as lw_cmd


def ece_top_label(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE by hand: bins [b/M, (b+1)/M), last bin closed."""
    conf = conf.astype(np.float64)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return float(sum(abs((correct[idx == b].mean()) - conf[idx == b].mean()) * (idx == b).sum()
                     for b in range(n_bins) if (idx == b).any()) / len(conf))


def test_results_json_matches_an_independent_computation(lw_trained, lw_full):
    res, arrays, out = lw_full
    _, _, run = lw_trained
    assert res["status"] == "finished" and res["eval_splits"] == ["val", "test", "test_shift"]
    assert [g["name"] for g in res["groups"]] == ["blocks.0", "blocks.1", "head"]
    assert [g["depth"] for g in res["groups"]] == [0, 1, 3]
    assert set(res["reference"]) == {"all", "last_layer"} and res["select_split"] == "val"
    assert res["seed"] == 0 and res["versions"]["torch"] and res["config"]["adapter"]["r"] == 2
    trained_metrics = json.loads((run / "metrics.json").read_text())
    assert sum(g["n_params"] for g in res["groups"]) == trained_metrics["params"]["trainable_params"]
    for split in ("test", "test_shift"):
        # the MAP block agrees with the training run's own evaluation (another code path: predict_probs)
        for k in ("ece", "nll", "acc"):
            assert res["map"][split][k] == pytest.approx(trained_metrics["map"][split][k], rel=1e-5, abs=1e-7)
        mconf, mcorr = arrays[f"map/{split}/confidence"], arrays[f"map/{split}/correct"]
        assert ece_top_label(mconf, mcorr) == pytest.approx(res["map"][split]["ece"], abs=1e-6)
        for row in res["groups"] + list(res["reference"].values()):
            kind = "group" if row in res["groups"] else "reference"
            sp = row["splits"][split]
            bconf, bcorr = arrays[f"{kind}/{row['name']}/{split}/confidence"], arrays[f"{kind}/{row['name']}/{split}/correct"]
            p_true = arrays[f"{kind}/{row['name']}/{split}/p_true"].astype(np.float64)
            assert ece_top_label(bconf, bcorr) == pytest.approx(sp["bayes"]["ece"], abs=1e-6)
            assert ece_top_label(mconf, mcorr) - ece_top_label(bconf, bcorr) == pytest.approx(sp["delta_ece"], abs=1e-6)
            assert -np.log(p_true).mean() == pytest.approx(sp["bayes"]["nll"], rel=1e-5)
            assert sp["delta_nll"] == pytest.approx(sp["map"]["nll"] - sp["bayes"]["nll"], abs=1e-12)
            assert bcorr.mean() == pytest.approx(sp["bayes"]["acc"])
            # the paired bootstrap interval by brute force: the same index draws, ECE of each resample by hand
            ci = sp["delta_ece_interval"]
            idx = np.random.default_rng(0).integers(0, len(mconf), (200, len(mconf)))
            reps = [ece_top_label(mconf[i], mcorr[i]) - ece_top_label(bconf[i], bcorr[i]) for i in idx]
            assert [ci["lo"], ci["hi"]] == pytest.approx(list(np.quantile(reps, [0.025, 0.975])), abs=1e-6)
            assert ci["n_boot"] == 200 and ci["n"] == len(mconf)
    greedy = res["greedy"]
    assert len(greedy) == 1 and greedy[0]["select_split"] == "val" and greedy[0]["added"] in ("blocks.0", "blocks.1", "head")
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {f"reliability_{g}_{s}.png" for g in ("blocks.0", "blocks.1", "head", "all") for s in ("test", "test_shift")} <= plots


def test_prints_progress_per_group_and_the_ranked_table(lw_cli, lw_full, capsys):
    res, _, _ = lw_full
    capsys.readouterr()
    assert lw_cli("full") == 0  # finished: nothing recomputed, the table printed again
    out = capsys.readouterr().out
    assert "nothing to do" in out
    table = [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[0] in ("blocks.0", "blocks.1", "head")]
    by_delta = sorted(res["groups"], key=lambda r: -r["splits"]["test"]["delta_ece"])
    assert table[:3] == [r["name"] for r in by_delta]
    assert "ΔECE test [95%]" in out and "ΔECE test_shift [95%]" in out and "greedy selection" in out


def test_an_interrupted_run_resumes_from_the_groups_already_done(lw_trained, lw_cli, lw_full, monkeypatch, capsys):
    real = lw_cmd.layerwise_study
    computed: list[str] = []

    def interrupted(*args, on_row, **kwargs):
        def stop(row):
            on_row(row)
            raise KeyboardInterrupt

        return real(*args, on_row=stop, **kwargs)

    monkeypatch.setattr(lw_cmd, "layerwise_study", interrupted)
    assert lw_cli("resumed") == 130
    out = lw_trained[0] / "resumed"
    state = json.loads((out / "layer_wise_results.json").read_text())
    assert state["status"] == "interrupted" and [g["name"] for g in state["groups"]] == ["blocks.0"]
    # the group's ΔECE intervals were written with its row, and are those of the uninterrupted run
    finished = {r["name"]: r for r in lw_full[0]["groups"]}
    for split, sp in state["groups"][0]["splits"].items():
        assert sp["delta_ece_interval"] == finished["blocks.0"]["splits"][split]["delta_ece_interval"]

    def recording(*args, on_row, **kwargs):
        return real(*args, on_row=lambda r: (computed.append(r["name"]), on_row(r)), **kwargs)

    monkeypatch.setattr(lw_cmd, "layerwise_study", recording)
    capsys.readouterr()
    assert lw_cli("resumed") == 0
    assert "1 group(s) already done (blocks.0)" in capsys.readouterr().out
    assert computed == ["blocks.1", "head"]
    full, arrays, _ = lw_full
    resumed = json.loads((out / "layer_wise_results.json").read_text())
    assert resumed["config"]["output"].pop("reliability_plots") is False  # the only setting that differs
    full = {**full, "config": {**full["config"], "output": {k: v for k, v in full["config"]["output"].items() if k != "reliability_plots"}}}
    assert resumed == full
    again = load_file(str(out / "per_example.safetensors"))
    assert sorted(again) == sorted(arrays) and all(np.array_equal(again[k], arrays[k]) for k in arrays)


def one_line_error(capsys, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_naming_what_to_fix(lw_cli, capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("no study should start on bad input")

    monkeypatch.setattr(lw_cmd, "layerwise_study", never)
    err = one_line_error(capsys, lw_cli("bad", "--set", "adapter.r=4"))
    assert "'r': 4" in err and "'r': 2" in err  # the config's adapter and the checkpoint's
    err = one_line_error(capsys, lw_cli("bad", "--groups", "blocks.0,blocks.7"))
    assert "blocks.7" in err and "available groups: ['blocks.0', 'blocks.1', 'head']" in err
    err = one_line_error(capsys, lw_cli("bad", "--groups", ","))
    assert "no group selected" in err and "available groups" in err
    for n in ("0", "-2"):
        err = one_line_error(capsys, lw_cli("bad", "--samples", n))
        assert "--samples" in err and "greater than or equal to 1" in err
    err = one_line_error(capsys, lw_cli("bad", "--prior", "-1"))
    assert "--prior" in err


def test_a_directory_of_other_settings_is_refused(lw_cli, lw_full, capsys):
    err = one_line_error(capsys, lw_cli("full", "--samples", "4"))
    assert "other settings" in err and "layerwise" in err


def test_announces_the_reference_rows_and_greedy_steps(lw_cli, capsys):
    """Between the last group line and the table the command used to print nothing (MC reference rows, greedy)."""
    capsys.readouterr()
    assert lw_cli("stages") == 0
    out = capsys.readouterr().out.splitlines()
    i = out.index("reference rows: all, last_layer (mc predictive)")
    assert out[i - 1].startswith("[3/3] ") and out[i + 1] == "greedy step 1/1: 3 candidate set(s) scored on val"
