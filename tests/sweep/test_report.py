"""``bayespeft report`` on a store with known metrics: numbers checked against numpy/scipy computed here."""

import json

import numpy as np
import pytest
from scipy import stats

from bayespeft.cli import main
from bayespeft.experiments.sweep.literature import check_literature, load_literature
from bayespeft.experiments.sweep.report import ReportOptions, build_report
from bayespeft.experiments.sweep.store import Owner, SweepStore

SEEDS = (1, 2, 3, 4)
ACC = {  # acc@1 per variant and seed (made up, distinct per seed so every test is computable)
    ("lora", 2): [0.80, 0.82, 0.79, 0.85],
    ("lora", 4): [0.83, 0.86, 0.80, 0.88],
    ("full", None): [0.90, 0.87, 0.88, 0.93],
}


def _config(method, r, seed, model="deit_tiny_patch16_224"):
    adapter = {"method": method, **({"r": r, "alpha": 2.0 * r} if r else {})}
    return {"model": {"name": model}, "data": {"name": "cifar10"}, "adapter": adapter, "train": {"seed": seed}}


def make_store(directory):
    store = SweepStore.open(directory)
    runs = []
    for (method, r), accs in ACC.items():
        for seed, acc in zip(SEEDS, accs):
            runs.append((method, r, seed, acc, "deit_tiny_patch16_224"))
    runs.append(("lora", 2, 1, 0.5, "deit_small_patch16_224"))  # a group with one seed
    plan = [{"id": f"run{i:02d}", "position": i, "differs": {}, "config": _config(m, r, s, model), "stages": [],
             "run_dir": None} for i, (m, r, s, _, model) in enumerate(runs)]
    store.sync_plan(plan)
    me = Owner.current()
    for i, (m, r, s, acc, _) in enumerate(runs):
        rec = store.claim(me)
        rows = [{"stage": "train", "posterior": "map", "split": "test", "acc@1": acc, "ece": 1 - acc - 0.05 * s,
                 "acc@5": 1.0, "f1": acc, "nll": 1.0, "brier": 0.1}]
        store.finish(rec.id, me, {"status": "done", "metrics": {"rows": rows, "run": {"tuned_%": 100.0 if m == "full" else r}}})
    store.close()
    return directory


def test_summary_against_numpy_and_scipy(tmp_path):
    doc = build_report(make_store(tmp_path), ReportOptions(plots=False))
    rows = {(r["model"], r["method"], r["rank"], r["metric"]): r for r in doc["summary"]}
    for (method, r), accs in ACC.items():
        row = rows[("deit_tiny_patch16_224", method, r, "acc@1")]
        x = np.array(accs)
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        assert row["n"] == 4 and row["mean"] == pytest.approx(x.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(x.std(ddof=1), abs=1e-12)
        assert (row["lo"], row["hi"]) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-12)
    single = rows[("deit_small_patch16_224", "lora", 2, "acc@1")]
    assert single["n"] == 1 and single["mean"] == 0.5 and single["std"] is None and single["lo"] is None
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| deit_small_patch16_224 | cifar10 | lora | 2 | map | test | acc@1 | 1 | 0.5000 ± n/a | n/a |" in md


def test_paired_comparisons_against_scipy(tmp_path):
    doc = build_report(make_store(tmp_path), ReportOptions(plots=False, compare=["acc@1"]))
    comps = [c for c in doc["comparisons"] if c["model"] == "deit_tiny_patch16_224"]
    pairs = {(c["a"], c["b"]): c for c in comps}
    assert set(pairs) == {("lora-r2", "lora-r4"), ("lora-r2", "full"), ("lora-r4", "full")}
    name = {"lora-r2": ("lora", 2), "lora-r4": ("lora", 4), "full": ("full", None)}
    raw_t, raw_w = {}, {}
    for (a, b), c in pairs.items():
        xa, xb = np.array(ACC[name[a]]), np.array(ACC[name[b]])
        d = xa - xb
        raw_t[(a, b)] = stats.ttest_rel(xa, xb).pvalue
        raw_w[(a, b)] = stats.wilcoxon(xa, xb).pvalue
        assert c["n"] == 4 and c["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
        assert c["t_p"] == pytest.approx(raw_t[(a, b)], rel=1e-9)
        assert c["wilcoxon_p"] == pytest.approx(raw_w[(a, b)], rel=1e-9)
        assert c["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-9)
    # Holm by hand over the family of 3
    order = sorted(raw_t, key=raw_t.get)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (3 - i) * raw_t[k]))
        assert pairs[k]["t_p_holm"] == pytest.approx(running, rel=1e-9)
    assert not [c for c in doc["comparisons"] if c["model"] == "deit_small_patch16_224"]  # one variant: nothing
    # 4 seeds: the Wilcoxon p cannot go below 2/2^4 = 0.125; the report says so next to the table
    assert min(c["wilcoxon_p"] for c in comps) >= 0.125 - 1e-12
    md = (tmp_path / "report" / "report.md").read_text()
    assert "smallest two-sided p is 2/2^n; n = 4: 0.125)" in md and "one context and one metric" in md


def test_cli_writes_files_and_plots(tmp_path, capsys):
    make_store(tmp_path)
    assert main(["report", str(tmp_path), "--metrics", "acc@1,ece,tuned_%"]) == 0
    out = tmp_path / "report"
    doc = json.loads((out / "report.json").read_text())
    assert {f["title"] for f in doc["figures"]} == {"acc@1 vs LoRA rank", "ece vs LoRA rank", "acc@1 vs tuned-parameter %"}
    rank = next(f for f in doc["figures"] if f["title"] == "acc@1 vs LoRA rank")
    assert rank["n_runs"] == 4 + 4 + 1 and rank["n_points"] == 3
    md = (out / "report.md").read_text()
    assert "![acc@1 vs LoRA rank](plots/rank_acc1.png)" in md and "resting on 9 runs" in md
    assert "| published interval: the runs' mean inside it |" in md  # each literature row says its rule
    for f in doc["figures"]:
        assert (out / "plots" / f["path"].split("/")[-1]).stat().st_size > 1000
    printed = capsys.readouterr().out  # one line per reference: its published value (and interval) and the verdict
    assert ("literature vit-b16-cifar100-full-finetuning: published 91.67, measured n/a over 0 run(s): no comparable "
            "run") in printed
    assert "literature lora-roberta-base-mrpc: published 89.7 [89.0, 90.4], measured " in printed
    assert (out / "summary.csv").read_text().count("\n") == 1 + 4 * 3  # header; 4 groups x (acc@1, ece, tuned_%)
    assert main(["report", str(tmp_path), "--by", "model,methd"]) == 2
    assert "did you mean 'method'?" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--by", "modle"]) == 2  # the short name, not a config key (model.path)
    assert "did you mean 'model'?" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--by", "model.nme"]) == 2  # a dotted key: the closest config key
    assert "did you mean 'model.name'?" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2



def test_a_store_without_finished_runs_reports_with_a_warning(tmp_path, capsys):
    store = SweepStore.open(tmp_path)
    store.sync_plan([{"id": "run00", "position": 0, "differs": {}, "config": _config("lora", 2, 1), "stages": [],
                      "run_dir": None}])
    store.close()
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "no finished run" in err and "(1 pending, 0 running, 0 failed)" in err
    assert (tmp_path / "report" / "report.md").is_file()


ENTRY = {"id": "x", "metric": "acc@1", "scale": 100, "value": 85.0, "interval": [84.0, 86.0],
         "source": {"paper": "P", "table": "T1", "setting": "S"},
         "match": {"model.name": "deit_tiny_patch16_224", "adapter.method": "lora"}, "posterior": "map", "split": "test"}


def _records(values, method="lora"):
    return [{"config": _config(method, 4, s), "posterior": "map", "split": "test", "acc@1": v} for s, v in enumerate(values)]


@pytest.mark.parametrize(
    "entry, values, verdict",
    [
        (ENTRY, [0.845, 0.855], "within"),
        (ENTRY, [0.80, 0.82], "below"),
        (ENTRY, [0.87, 0.90], "above"),
        (ENTRY, [0.86], "within"),  # the interval's edge counts as within
        ({**ENTRY, "interval": None}, [0.84, 0.86, 0.85], "within"),  # 85 inside the runs' t-interval
        ({**ENTRY, "interval": None}, [0.70, 0.71, 0.72], "below"),
        ({**ENTRY, "interval": None}, [0.85], "undecided (1 run and no published interval)"),
        ({**ENTRY, "match": {"adapter.method": "full"}}, [0.85, 0.85], "no comparable run"),
        ({**ENTRY, "metric": "error", "scale": 1, "value": 15.0, "interval": [14.5, 15.5]}, [0.85, 0.852], "within"),
        ({**ENTRY, "posterior": "*-ensemble"}, [0.85], "no comparable run"),
    ],
)
def test_literature_verdicts(entry, values, verdict):
    (row,) = check_literature([entry], _records(values))
    assert row["verdict"] == verdict
    if values and verdict != "no comparable run":
        assert row["runs"] == len(values) and row["measured"] is not None
    else:
        assert row["runs"] == 0 and row["measured"] is None


def test_packaged_literature_file_is_valid_and_sourced():
    entries = load_literature()
    lora = next(e for e in entries if e["id"] == "lora-roberta-base-mrpc")
    assert lora["value"] == 89.7 and lora["interval"] == [89.0, 90.4] and "Table 2" in lora["source"]["table"]
    assert any(e["value"] == 5.20 and e["metric"] == "error" for e in entries)


def test_vit_b16_cifar100_references_match_only_their_setting():
    entries = {e["id"]: e for e in load_literature()}
    full, lora = entries["vit-b16-cifar100-full-finetuning"], entries["vit-b16-cifar100-lora-r8"]
    assert full["value"] == 91.67 and "Table 5" in full["source"]["table"] and "384" in full["source"]["setting"]
    assert lora["value"] == 92.43 and "not a table printed" in lora["source"]["paper"]

    def recs(accs, **over):
        cfg = {"model": {"name": "vit_base_patch16_224", "image_size": over.get("size")}, "data": {"name": "cifar100"},
               "adapter": {"method": over["method"], "r": over.get("r", 8)}}
        return [{"config": cfg, "posterior": "map", "split": "test", "acc@1": a} for a in accs]

    (row,) = check_literature([full], recs([0.915, 0.918, 0.920], method="full", size=384))  # t-interval holds 91.67
    assert row["verdict"] == "within" and row["runs"] == 3
    (row,) = check_literature([full], recs([0.90, 0.91], method="full", size=224))  # another resolution
    assert row["verdict"] == "no comparable run"
    (row,) = check_literature([lora], recs([0.880, 0.885, 0.882], method="lora"))  # whole interval below 92.43
    assert row["verdict"] == "below"
    (row,) = check_literature([lora], recs([0.93, 0.94], method="lora", r=16))  # another rank
    assert row["verdict"] == "no comparable run"


def test_a_miss_names_what_the_runs_of_its_setting_have(tmp_path):
    """An entry whose posterior glob or split matches none of the runs of its setting says what those runs have (a
    misspelt glob is visible, not a silent 'no comparable run'); a misspelt split is a file error."""
    (row,) = check_literature([{**ENTRY, "posterior": "laplace-*"}], _records([0.85, 0.86]))
    assert row["verdict"] == "no comparable run"
    assert row["note"] == "runs of its setting have posterior(s) map on test; it asks posterior laplace-* on test"
    (row,) = check_literature([{**ENTRY, "match": {"adapter.method": "full"}}], _records([0.85]))
    assert row["verdict"] == "no comparable run" and row["note"] == ""  # no run of that setting at all
    (row,) = check_literature([ENTRY], _records([0.85]))
    assert row["note"] == ""
    bad = tmp_path / "lit.yaml"
    bad.write_text("- {id: a, metric: acc@1, value: 1, source: {paper: p, table: t, setting: s}, "
                   "match: {adapter.r: 2}, split: tset}\n")
    with pytest.raises(ValueError, match=r"entry 0 \(a\): split must be one of \('test', 'test_shift'\) "
                                         r"\(got 'tset'\)"):
        load_literature(bad)


def test_bad_literature_file(tmp_path):
    bad = tmp_path / "lit.yaml"
    bad.write_text("- {id: a, metric: acc, value: 1, source: {paper: p}, match: {adapter.rank: 2}, interval: [2, 3]}\n")
    with pytest.raises(ValueError) as err:
        load_literature(bad)
    msg = str(err.value)
    assert "metric must be one of" in msg and "table and setting" in msg and "adapter.r" in msg and "interval must be" in msg


def test_each_verdict_states_its_interval_rule():
    (with_iv,) = check_literature([ENTRY], _records([0.845, 0.855]))
    (point,) = check_literature([{**ENTRY, "interval": None}], _records([0.84, 0.86, 0.85]))
    (none,) = check_literature([{**ENTRY, "interval": None, "match": {"adapter.method": "full"}}], _records([0.85]))
    assert with_iv["rule"].startswith("published interval")
    assert point["rule"].startswith("no interval reported") and none["rule"] == point["rule"]


def test_csgmcmc_reference_uses_the_published_spread():
    (entry,) = [e for e in load_literature() if e["id"] == "csgmcmc-cifar10-resnet18-sgld"]
    assert entry["value"] == 5.20 and entry["interval"] == [5.14, 5.26] and "± 0.06" in entry["source"]["table"]
    cfg = {"model": {"name": "resnet18_cifar"}, "data": {"name": "cifar10"}, "sgmcmc": {"sampler": "sgld"}}
    recs = lambda accs: [{"config": cfg, "posterior": "sgld-ensemble", "split": "test", "acc@1": a} for a in accs]  # noqa: E731
    (row,) = check_literature([entry], recs([0.9475, 0.9480]))  # test error 5.25 %, 5.20 %: mean 5.225
    assert row["verdict"] == "within" and row["measured"] == pytest.approx(5.225) and row["rule"].startswith("published")
    (row,) = check_literature([entry], recs([0.9460, 0.9470]))  # 5.40 %, 5.30 %: mean 5.35 > 5.26
    assert row["verdict"] == "above"


def test_own_reference_file(tmp_path, capsys):
    """--literature FILE checks the runs against the user's own references (one entry here, matching the lora r=4
    runs: mean of ACC[("lora", 4)] in percent against a published interval); a bad file is one line, exit 2, and
    no report is written."""
    make_store(tmp_path / "sweep")
    mine = tmp_path / "mine.yaml"
    mine.write_text("- id: my-lab-lora-r4\n  metric: acc@1\n  scale: 100\n  value: 84.0\n  interval: [83.0, 85.0]\n"
                    "  source: {paper: our note, table: T1, setting: DeiT-tiny LoRA r=4}\n"
                    "  match: {adapter.method: lora, adapter.r: 4}\n  posterior: map\n  split: test\n")
    assert main(["report", str(tmp_path / "sweep"), "--no-plots", "--literature", str(mine)]) == 0
    doc = json.loads((tmp_path / "sweep" / "report" / "report.json").read_text())
    (row,) = doc["literature"]
    want = 100 * np.mean(ACC[("lora", 4)])  # 84.25: inside [83, 85]
    assert row["reference"] == "my-lab-lora-r4" and row["runs"] == 4 and row["verdict"] == "within"
    assert row["measured"] == pytest.approx(want)
    assert "literature my-lab-lora-r4: published 84.0 [83.0, 85.0], measured 84.25 over 4 run(s): within" in \
        capsys.readouterr().out
    for text, says in (("- [unclosed\n", "is not valid YAML"), ("{a: 1}\n", "must be a list of entries")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert main(["report", str(tmp_path / "sweep"), "--literature", str(bad), "--out", str(tmp_path / "r2")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: reference file {bad}: ") and says in err and err.count("\n") == 1, err
        assert not (tmp_path / "r2").exists()
    assert main(["report", str(tmp_path / "sweep"), "--literature", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: cannot be read (FileNotFoundError" in capsys.readouterr().err
