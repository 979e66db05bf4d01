"""``bayespeft sweep`` in this process: runs, failures isolated and retried, plans, refusals; all on tiny runs."""

import json

import pytest

from bayespeft.cli import main
from bayespeft.experiments.sweep import runner
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.store import SweepStore

FAILING = """\
base: base.yaml
axes:
  train.seed: [1, 2, 3]
cases:
  - when: {train.seed: 2}
    set: {train.lr: 1.0e+30}          # diverges: NaN loss
"""


def test_failures_are_isolated_recorded_and_retried(sweep_file, tmp_path, monkeypatch, capsys):
    path = sweep_file(FAILING)
    out = tmp_path / "out"
    real_train = runner.STAGES["train"]

    def train_or_oom(cfg, stage_dir, checkpoint):
        if cfg.train.seed == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(cfg, stage_dir, checkpoint)

    monkeypatch.setitem(runner.STAGES, "train", train_or_oom)
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(path), "--out", str(out)])
    assert exit_.value.code == 1
    printed = capsys.readouterr().out
    store = SweepStore.open(out)
    by_seed = {r.config["train"]["seed"]: r for r in store.runs()}
    assert by_seed[1].status == "done"
    assert by_seed[2].status == "failed" and by_seed[2].error.startswith("TrainingDivergedError: training diverged")
    assert "Traceback" in by_seed[2].traceback and "_train_epoch" in by_seed[2].traceback
    assert by_seed[3].status == "failed" and by_seed[3].error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "train_or_oom" in by_seed[3].traceback
    assert "--retry-failed" in printed and f"failed {by_seed[2].id}" in printed
    # off a terminal each run is announced when it starts, with the log its progress goes to, before its end line
    for r in by_seed.values():
        what = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r.differs.items())  # seed=2 lr=1e+30
        start = f"run {r.id} ({what}) started; progress in {out / 'runs' / r.id / 'log.txt'}"
        assert start in printed and printed.index(start) < printed.index(f"run {r.id} ({what}) {r.status} in")
    log = (out / "runs" / by_seed[3].id / "log.txt").read_text()
    assert "CUDA out of memory" in log
    # the done run has its files and its rows
    run1 = out / "runs" / by_seed[1].id
    for name in ("config.yaml", "run.json", "log.txt", "result.json", "train/checkpoint", "train/checkpoints/last.safetensors"):
        assert (run1 / name).exists(), name
    assert json.loads((run1 / "result.json").read_text())["status"] == "done"
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and f"{by_seed[1].id}/train" in rows[1]
    assert by_seed[1].versions["torch"] and by_seed[1].host and by_seed[1].metrics["run"]["tuned_%"] > 0

    # a rerun without --retry-failed executes nothing; with it, only the failed runs run again
    monkeypatch.setitem(runner.STAGES, "train", real_train)
    with pytest.raises(SystemExit):
        main(["sweep", str(path), "--out", str(out)])
    assert all(len(store.attempts(r.id)) == 1 for r in store.runs())
    with pytest.raises(SystemExit):  # seed 2 still diverges
        main(["sweep", str(path), "--out", str(out), "--retry-failed"])
    attempts = {r.config["train"]["seed"]: [a["outcome"] for a in store.attempts(r.id)] for r in store.runs()}
    assert attempts == {1: ["done"], 2: ["failed", "failed"], 3: ["failed", "done"]}
    assert len((out / "results.csv").read_text().splitlines()) == 3


def test_validate_only_lists_each_bad_run(sweep_file, tmp_path, capsys):
    path = sweep_file("base: base.yaml\naxes: {adapter.r: [0, 2], train.lr: [0.1, -1.0]}\n")
    assert main(["sweep", str(path), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 of 4 runs of") and err.count("\nrun ") == 3
    assert "adapter.r=0, train.lr=0.1" in err and "LoRA ranks must be >= 1" in err and "lr must be > 0" in err
    assert main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2  # invalid runs: nothing runs
    assert "nothing was run" in capsys.readouterr().err and not (tmp_path / "o").exists()
    good = sweep_file("base: base.yaml\naxes: {adapter.r: [1, 2]}\n", name="good.yaml")
    assert main(["sweep", str(good), "--validate-only"]) == 0
    assert "all 2 runs" in capsys.readouterr().out


def test_dry_run_plans_without_executing(sweep_file, tmp_path, capsys):
    path = sweep_file("base: base.yaml\naxes: {adapter.method: [lora, full], adapter.r: [2, 4]}\n")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 runs (2 lora, 1 full) from 4 axis combinations (0 excluded, 1 identical to another run)" in text
    assert sum(line.endswith("    new") for line in text.splitlines()) == 3 and not out.exists()
    run_sweep(path, SweepOptions(out=str(out), max_experiments=1))
    capsys.readouterr()
    main(["sweep", str(path), "--dry-run", "--out", str(out)])
    text = capsys.readouterr().out
    assert "status: 1 done, 2 pending" in text


def test_a_directory_of_another_sweep_file_is_refused_unless_forced(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    first = sweep_file("base: base.yaml\naxes: {train.seed: [1]}\n")
    run_sweep(first, SweepOptions(out=str(out)))
    store = SweepStore.open(out)
    done_id = store.runs()[0].id
    second = sweep_file("base: base.yaml\naxes: {train.seed: [1, 2]}\n", name="other.yaml")
    assert main(["sweep", str(second), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was made by a different sweep file" in err and "axes" in err and "[1]" in err and "[1, 2]" in err
    assert "1 new runs, 1 kept" in err and "--force" in err
    assert len(store.runs()) == 1  # untouched
    run_sweep(second, SweepOptions(out=str(out), force=True))
    assert [r.status for r in store.runs()] == ["done", "done"]
    assert len(store.attempts(done_id)) == 1  # the unchanged run was not rerun



def test_a_changed_value_deep_in_a_long_list_is_named_where_it_changed(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    cases = "".join(f"  - when: {{train.seed: {i}}}\n    set: {{train.weight_decay: 0.0{i}}}\n" for i in (1, 2, 3))
    first = sweep_file(f"base: base.yaml\naxes: {{train.seed: [1, 2, 3]}}\ncases:\n{cases}")
    run_sweep(first, SweepOptions(out=str(out), max_experiments=0))
    second = sweep_file(f"base: base.yaml\naxes: {{train.seed: [1, 2, 3]}}\ncases:\n{cases.replace('0.03', '0.3')}",
                        name="other.yaml")
    capsys.readouterr()
    assert main(["sweep", str(second), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "  cases[2].set.train.weight_decay: 0.03 -> 0.3\n" in err and "cases[0]" not in err


def test_max_experiments(sweep_file, tmp_path):
    path = sweep_file("base: base.yaml\naxes: {train.seed: [1, 2, 3]}\n")
    res = run_sweep(path, SweepOptions(out=str(tmp_path / "o"), max_experiments=0))
    assert res["executed"] == 0 and res["counts"]["pending"] == 3


def test_dry_run_lists_invalid_runs_and_exits_2(sweep_file, tmp_path, capsys):
    path = sweep_file("base: base.yaml\naxes: {adapter.r: [0, 2], train.lr: [0.1, -1.0]}\n")
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--dry-run", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert "status: 3 invalid, 1 new" in cap.out  # the plan is still printed
    assert cap.err.startswith("error: 3 of 4 runs of") and cap.err.count("\nrun ") == 3
    assert "LoRA ranks must be >= 1" in cap.err and not out.exists()


def test_dry_run_says_what_differs_from_the_sweep_that_made_the_directory(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    first = sweep_file("base: base.yaml\naxes: {train.seed: [1, 2]}\n")
    run_sweep(first, SweepOptions(out=str(out), max_experiments=0))
    capsys.readouterr()
    assert main(["sweep", str(first), "--dry-run", "--out", str(out), "--set", "train.lr=0.5"]) == 0
    text = capsys.readouterr().out
    assert "was made by a different sweep file" in text and "base config base: train.lr: 0.01 -> 0.5" in text
    assert "2 new runs, 0 kept" in text and "running needs --force" in text
    assert main(["sweep", str(first), "--dry-run", "--out", str(out)]) == 0
    assert "different sweep file" not in capsys.readouterr().out
    # a real run refuses with the same account of the difference
    assert main(["sweep", str(first), "--out", str(out), "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "base config base: train.lr: 0.01 -> 0.5" in err and "--force" in err


@pytest.mark.parametrize("mode", [[], ["--dry-run"]])
def test_out_under_a_file_is_one_line(sweep_file, tmp_path, capsys, mode):
    path = sweep_file("base: base.yaml\naxes: {train.seed: [1]}\n")
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "sub", tmp_path / "afile"):
        assert main(["sweep", str(path), "--out", str(out), *mode]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Errno" not in err
        assert f"{tmp_path / 'afile'} " in err and "is a file, not a directory; choose another --out" in err
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--validate-only"]])
def test_negative_max_experiments_is_refused_in_every_mode(sweep_file, tmp_path, capsys, mode):
    path = sweep_file("base: base.yaml\naxes: {train.seed: [1]}\n")
    out = tmp_path / "o"
    assert main(["sweep", str(path), "--out", str(out), "--max-experiments", "-1", *mode]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-experiments must be >= 0" in err and "got -1" in err
    assert not out.exists()


@pytest.mark.parametrize("mode", [[], ["--dry-run"]])
def test_a_store_file_that_is_not_a_sweep_store_is_left_untouched(sweep_file, tmp_path, capsys, mode):
    path = sweep_file("base: base.yaml\naxes: {train.seed: [1]}\n")
    out = tmp_path / "o"
    out.mkdir()
    store = out / "sweep.sqlite"
    store.write_bytes(b"my thesis draft\n" * 10)
    before = (store.stat().st_mtime_ns, store.read_bytes())
    assert main(["sweep", str(path), "--out", str(out), *mode]) == 2
    assert "is not a bayespeft sweep store" in capsys.readouterr().err
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) in (["sweep.sqlite"], [".sweep.lock", "sweep.sqlite"])
