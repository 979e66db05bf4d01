"""`bayespeft analyze` on layer-wise runs: the table and the statistics against numpy/scipy on the written rows, one
run (no std) vs two runs (mean ± std, t-interval), plots, and directories without results."""

from __future__ import annotations

import json
import shutil
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayespeft.cli import main


def analyze(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["analyze", *argv]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("analysis: ")]
    path = line.removeprefix("analysis: ")
    return {"dir": path, "printed": out, "summary": json.loads(open(f"{path}/analysis_summary.json").read()),
            "table": pd.read_csv(f"{path}/summary_table.csv")}


def spearman_reference(x, y):
    """ρ by scipy; p exact by enumerating every pairing for n <= 8 (scipy's t approximation above)."""
    rho, p = stats.spearmanr(x, y)
    if len(x) <= 8:
        hits = [abs(stats.spearmanr(x, y[list(q)])[0]) >= abs(rho) - 1e-12 for q in permutations(range(len(y)))]
        p = float(np.mean(hits))
    return rho, p


@pytest.fixture(scope="module")
def second_run(lw_trained, lw_cli):
    """Another seed of the same study (other posterior samples and bootstrap draws)."""
    assert lw_cli("seed1", "--set", "layerwise.seed=1") == 0
    return lw_trained[0] / "seed1"


def test_one_run_table_statistics_and_plots(lw_full, capsys, tmp_path):
    res, _, out = lw_full
    a = analyze(capsys, str(out), "--out", str(tmp_path / "a1"))
    table, summary = a["table"], a["summary"]
    groups = table[table.kind == "group"]
    # ranked by ΔECE on test, best first; the numbers are the run's
    assert list(groups.delta_ece_test) == sorted(groups.delta_ece_test, reverse=True)
    by_name = {r["name"]: r for r in res["groups"]}
    assert set(groups.group) == set(by_name) and list(table[table.kind == "reference"].group) == ["all", "last_layer"]
    for _, row in groups.iterrows():
        sp = by_name[row.group]["splits"]
        for s in ("test", "test_shift"):
            assert row[f"delta_ece_{s}"] == pytest.approx(sp[s]["delta_ece"], abs=1e-12)
            # one run: no std and no t-interval (empty, never 0); the bootstrap interval is the run's
            assert np.isnan(row[f"delta_ece_{s}_std"]) and np.isnan(row[f"delta_ece_{s}_t_lo"])
            assert [row[f"delta_ece_{s}_boot_lo"], row[f"delta_ece_{s}_boot_hi"]] == pytest.approx(
                [sp[s]["delta_ece_interval"]["lo"], sp[s]["delta_ece_interval"]["hi"]], abs=1e-12)
            g = summary["groups"][row.group]["splits"][s]
            assert g["delta_ece"]["std"] is None and g["delta_ece"]["n"] == 1
    for s in ("test", "test_shift"):
        ps = summary["per_split"][s]
        rho, p = spearman_reference(groups.depth.to_numpy(float), groups[f"delta_ece_{s}"].to_numpy())
        assert ps["spearman_depth"]["rho"] == pytest.approx(rho) and ps["spearman_depth"]["p_value"] == pytest.approx(p)
        assert ps["mean_delta_ece"] == pytest.approx(groups[f"delta_ece_{s}"].mean())
        assert ps["fraction_helping"] == pytest.approx((groups[f"delta_ece_{s}"] > 0).mean())
        assert ps["best_group"]["name"] == groups.loc[groups[f"delta_ece_{s}"].idxmax(), "group"]
        assert ps["worst_group"]["name"] == groups.loc[groups[f"delta_ece_{s}"].idxmin(), "group"]
    assert [c["n_groups"] for c in summary["greedy"]] == [0, 1]
    assert summary["greedy"][1]["ece_test"]["mean"] == pytest.approx(res["greedy"][0]["splits"]["test"]["bayes"]["ece"])
    plots = sorted(p.name for p in (tmp_path / "a1" / "plots").glob("*.png"))
    assert plots == ["delta_ece_ranked.png", "delta_ece_sequential.png", "ece_comparison.png", "greedy_curve.png"]
    assert "Spearman ρ(ΔECE, depth)" in a["printed"] and "% of groups help" in a["printed"]


def test_two_runs_mean_std_and_t_interval_over_runs(lw_full, second_run, capsys, tmp_path):
    res1, _, out1 = lw_full
    res2 = json.loads((second_run / "layer_wise_results.json").read_text())
    a = analyze(capsys, str(out1), str(second_run), "--out", str(tmp_path / "a2"))
    table, summary = a["table"], a["summary"]
    assert summary["n_runs"] == 2
    rows2 = {r["name"]: r for r in res2["groups"]}
    for r1 in res1["groups"]:
        vals = np.array([r1["splits"]["test"]["delta_ece"], rows2[r1["name"]]["splits"]["test"]["delta_ece"]])
        assert vals[0] != vals[1]  # other posterior samples
        row = table[table.group == r1["name"]].iloc[0]
        assert row.delta_ece_test == pytest.approx(vals.mean()) and row.delta_ece_test_std == pytest.approx(vals.std(ddof=1))
        lo, hi = stats.t.interval(0.95, df=1, loc=vals.mean(), scale=vals.std(ddof=1) / np.sqrt(2))
        assert [row.delta_ece_test_t_lo, row.delta_ece_test_t_hi] == pytest.approx([lo, hi])
        boots = summary["groups"][r1["name"]]["splits"]["test"]["bootstrap"]
        assert [b["run"] for b in boots] == [str(out1), str(second_run)] and np.isnan(row.delta_ece_test_boot_lo)
    groups = table[table.kind == "group"]
    assert list(groups.delta_ece_test) == sorted(groups.delta_ece_test, reverse=True)
    rho, p = stats.spearmanr(groups.depth, groups.delta_ece_test)
    assert summary["per_split"]["test"]["spearman_depth"]["rho"] == pytest.approx(rho)
    # the printed table shows the t-interval over runs (the per-run bootstrap columns are empty with 2 runs)
    header = a["printed"].splitlines()[0].split()
    assert {"delta_ece_test_t_lo", "delta_ece_test_t_hi"} <= set(header) and "delta_ece_test_boot_lo" not in header


def test_runs_given_twice_or_of_other_settings_are_refused(lw_full, second_run, capsys, tmp_path):
    _, _, out = lw_full
    err = one_line_error(capsys, ["analyze", str(out), str(out)])
    assert "are the same layer-wise run" in err and "give each run once" in err
    copy = tmp_path / "copy"  # a copied directory is the same run too
    shutil.copytree(out, copy)
    assert "are the same layer-wise run" in one_line_error(capsys, ["analyze", str(out), str(copy)])
    other = tmp_path / "kfac"
    shutil.copytree(second_run, other)
    state = json.loads((other / "layer_wise_results.json").read_text())
    state["fingerprint"]["layerwise"]["structure"] = "kfac"
    (other / "layer_wise_results.json").write_text(json.dumps(state))
    err = one_line_error(capsys, ["analyze", str(out), str(other)])
    assert "different settings (layerwise.structure: 'diag' in" in err and "one setting together" in err


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_directories_without_results_name_what_is_missing(lw_full, second_run, capsys, tmp_path):
    _, _, out = lw_full
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "layer_wise_results.json is missing" in one_line_error(capsys, ["analyze", str(empty)])
    assert "is not a directory" in one_line_error(capsys, ["analyze", str(tmp_path / "nope")])
    no_arrays = tmp_path / "no_arrays"
    no_arrays.mkdir()
    shutil.copy(out / "layer_wise_results.json", no_arrays)
    assert "lacks per_example.safetensors" in one_line_error(capsys, ["analyze", str(out), str(no_arrays)])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out, unfinished)
    state = json.loads((unfinished / "layer_wise_results.json").read_text())
    (unfinished / "layer_wise_results.json").write_text(json.dumps({**state, "status": "interrupted"}))
    assert "not finished (status 'interrupted')" in one_line_error(capsys, ["analyze", str(unfinished)])
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    shutil.copy(second_run / "per_example.safetensors", mixed)  # arrays of another run
    assert "do not belong together" in one_line_error(capsys, ["analyze", str(mixed)])
