"""Run directories as a user meets them through the CLI: resuming, output locations, the results CSV, failed runs,
corrupted checkpoints, error messages and file modes.

Every test drives ``bayespeft.cli.main`` on a tiny micro-ViT/digits config and checks what lands on disk.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from bayespeft.cli import main
from bayespeft.testing import write_tiny_digits_config


def tiny_config(tmp_path: Path, method: str = "normtune", extra: str = "") -> Path:
    return write_tiny_digits_config(tmp_path / f"{method}.yaml", f"tiny-{method}", tmp_path / "runs", method=method,
                                    reliability_plots=False, extra=extra)


def run_dirs(tmp_path: Path) -> list[Path]:
    root = tmp_path / "runs"
    return sorted(p for p in root.iterdir() if (p / "config.yaml").is_file()) if root.is_dir() else []


def interrupt_after_first_epoch(monkeypatch):
    """Make `bayespeft train` stop (as if killed) right after epoch 1's checkpoint; returns the undo function."""
    import bayespeft.experiments.train as pipeline

    real_fit = pipeline.fit

    def interrupted_fit(*args, **kwargs):
        def stop(record):
            raise KeyboardInterrupt

        return real_fit(*args, callbacks=[stop], **kwargs)

    monkeypatch.setattr(pipeline, "fit", interrupted_fit)
    return lambda: monkeypatch.setattr(pipeline, "fit", real_fit)


# ---- item 1: --resume must name an existing run of this config -------------------------------------------------
def test_resume_of_a_missing_directory_is_an_error_and_creates_nothing(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    missing = tmp_path / "no" / "such" / "run"
    assert main(["train", str(cfg), "--resume", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(missing) in err and "does not exist" in err
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "runs" / "results.csv").exists()


def test_resume_of_a_directory_without_a_run_says_what_was_found(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    assert main(["train", str(cfg), "--resume", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.yaml" in err and "cat.jpg" in err
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(cfg), "--resume", str(empty)]) == 2
    assert "empty directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_resume_checks_the_config_and_continues_an_interrupted_run(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path)
    undo = interrupt_after_first_epoch(monkeypatch)
    assert main(["train", str(cfg)]) == 130
    capsys.readouterr()
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "history.json").read_text())["status"] == "running"
    undo()
    # another learning rate is another run: refused, naming the key and both values
    assert main(["train", str(cfg), "--resume", str(run_dir), "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr" in err and "0.005" in err and "0.01" in err
    # settings that do not change the trained weights may differ (documented in train_model)
    assert main(["train", str(cfg), "--resume", str(run_dir), "--set", "name=renamed",
                 "--set", "train.progress=false", "--set", "output.reliability_plots=true"]) == 0
    hist = json.loads((run_dir / "history.json").read_text())
    assert hist["status"] == "finished" and hist["resumed_from_epoch"] == 1 and hist["epochs_run"] == 2
    assert run_dirs(tmp_path) == [run_dir]


def test_resume_of_a_finished_run_is_refused_and_leaves_it_alone(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    (run_dir,) = run_dirs(tmp_path)
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    csv_before = (tmp_path / "runs" / "results.csv").read_bytes()
    assert main(["train", str(cfg), "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finished" in err and str(run_dir) in err
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    assert (tmp_path / "runs" / "results.csv").read_bytes() == csv_before


# ---- item 3: every output location is checked before any work; a run's own files come before the shared CSV ----
def _no_work(monkeypatch):
    """Fail loudly if a command starts building its model/data (the output check must come first)."""
    import importlib

    def boom(cfg):
        raise AssertionError("work started before the output locations were checked")

    # import every command module first, so none binds the patched function at import time
    modules = [importlib.import_module(f"bayespeft.experiments.{m}") for m in ("run", "train", "evaluate", "laplace", "sample")]
    for m in modules:
        monkeypatch.setattr(m, "build", boom)


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--checkpoint", "CKPT"], ["laplace", "--checkpoint", "CKPT"],
                                     ["sample", "--checkpoint", "CKPT"], ["sample"]])
def test_unwritable_output_root_is_reported_before_any_work(tmp_path, capsys, monkeypatch, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = tiny_config(tmp_path, extra="\nsgmcmc: {sampler: sgld, epochs: 2, burn_in_epochs: 1}\n")
    _no_work(monkeypatch)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    argv = [command[0], str(cfg), *[str(ckpt) if a == "CKPT" else a for a in command[1:]],
            "--set", f"output.root={blocker / 'runs'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker / "runs") in err and "output.root" in err
    assert blocker.read_text() == "not a directory"


def test_unwritable_or_foreign_results_csv_is_reported_before_any_work(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path)
    _no_work(monkeypatch)
    as_dir = tmp_path / "csv_is_a_dir"
    as_dir.mkdir()
    assert main(["train", str(cfg), "--set", f"output.results_csv={as_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(as_dir) in err and "output.results_csv" in err
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    assert main(["train", str(cfg), "--set", f"output.results_csv={foreign}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(foreign) in err and "header" in err
    assert foreign.read_text() == "a,b\n1,2\n"
    assert run_dirs(tmp_path) == []


def test_quickstart_checks_its_output_directory_first(tmp_path, capsys, monkeypatch):
    import bayespeft.experiments.quickstart as qs

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setattr(qs, "pretrain_upstream", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work started")))
    assert main(["quickstart", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker / "out") in err


def test_a_results_csv_failure_after_training_keeps_the_runs_own_files(tmp_path, capsys, monkeypatch):
    import bayespeft.experiments.train as pipeline

    cfg = tiny_config(tmp_path)
    csv = tmp_path / "runs" / "results.csv"
    real_fit = pipeline.fit

    def fit_then_break_the_csv(*args, **kwargs):
        out = real_fit(*args, **kwargs)
        csv.mkdir(parents=True)  # the shared CSV location becomes unusable while this run trains
        return out

    monkeypatch.setattr(pipeline, "fit", fit_then_break_the_csv)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(csv) in err and "metrics.json" in err
    (run_dir,) = run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and 0.0 <= metrics["map"]["test"]["acc"] <= 1.0
    rows = pd.read_csv(run_dir / "rows.csv")
    assert rows["posterior"].tolist() == ["map"] and rows["acc@1"].iloc[0] == pytest.approx(metrics["map"]["test"]["acc"], abs=1e-6)


# ---- item 6: one CSV row per distinct result; Laplace settings recorded; failed runs marked, never appended ------
def _trained(tmp_path, capsys) -> tuple[Path, Path]:
    cfg = tiny_config(tmp_path)
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    (run_dir,) = run_dirs(tmp_path)
    return cfg, run_dir


def test_evaluating_a_recorded_checkpoint_again_adds_no_duplicate_rows(tmp_path, capsys):
    cfg, run_dir = _trained(tmp_path, capsys)
    csv = tmp_path / "runs" / "results.csv"
    for _ in range(2):
        assert main(["evaluate", str(cfg), "--checkpoint", str(run_dir)]) == 0
        assert "already" in capsys.readouterr().err
    df = pd.read_csv(csv)
    assert len(df) == 1 and df["posterior"].tolist() == ["map"] and df["run"].tolist() == [run_dir.name]
    # the same checkpoint on other test data is another result
    assert main(["evaluate", str(cfg), "--checkpoint", str(run_dir), "--set", "data.max_test=32"]) == 0
    df = pd.read_csv(csv)
    assert len(df) == 2 and df["result_key"].nunique() == 2
    assert df["checkpoint"].nunique() == 1 and len(df["checkpoint"].iloc[0]) == 64


def test_laplace_rows_record_their_settings_and_are_not_repeated(tmp_path, capsys):
    cfg, run_dir = _trained(tmp_path, capsys)
    csv = tmp_path / "runs" / "results.csv"
    base = ["laplace", str(cfg), "--checkpoint", str(run_dir), "--structure", "diag"]
    assert main([*base, "--prior", "marglik"]) == 0
    assert main([*base, "--prior", "marglik"]) == 0
    assert main([*base, "--prior", "none", "--link", "mc"]) == 0
    capsys.readouterr()
    df = pd.read_csv(csv)
    lap = df[df.posterior != "map"].reset_index(drop=True)
    assert (df.posterior == "map").sum() == 1 and len(lap) == 2
    assert lap["structure"].tolist() == ["diag", "diag"] and lap["subset"].tolist() == ["all", "all"]
    assert lap["prior_method"].tolist() == ["marglik", "none"] and lap["link"].tolist() == ["probit", "mc"]
    assert lap["curvature"].tolist() == ["ggn", "ggn"] and lap["predictive"].tolist() == ["glm", "glm"]
    # the tuned prior precision is recorded: marglik moved it away from the initial 1.0, "none" kept it
    lap_runs = sorted(d for d in run_dirs(tmp_path) if d != run_dir)
    (tuned,) = json.loads((lap_runs[0] / "metrics.json").read_text())["laplace"]["prior_precision"]
    assert lap["prior_precision"].iloc[0] == pytest.approx(tuned, rel=1e-5) and abs(tuned - 1.0) > 1e-3
    assert lap["prior_precision"].iloc[1] == 1.0


def test_a_legacy_results_csv_is_migrated_without_misaligning_columns(tmp_path, capsys):
    from bayespeft.experiments.records import LEGACY_COLUMNS, RESULT_COLUMNS

    csv = tmp_path / "runs" / "results.csv"
    csv.parent.mkdir(parents=True)
    old = dict(zip(LEGACY_COLUMNS, ["2024-01-01T00:00:00+00:00", "old-run", "lora", "map", "digits", "test", "micro_vit",
                                    "123", "4.5", "0.75", "0.8", "0.05", "0.3", "10", "1", "3", "7", "/old/run"]))
    csv.write_text(",".join(LEGACY_COLUMNS) + "\n" + ",".join(old.values()) + "\n")
    cfg, run_dir = _trained(tmp_path, capsys)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(df.columns) == RESULT_COLUMNS and len(df) == 2
    assert {k: df[k].iloc[0] for k in LEGACY_COLUMNS} == old
    assert df["run"].iloc[1] == run_dir.name and df["result_key"].iloc[1]


def test_a_failed_run_is_marked_failed_and_appends_no_rows(tmp_path, capsys, monkeypatch):
    import bayespeft.experiments.laplace as lap

    cfg, run_dir = _trained(tmp_path, capsys)
    csv = tmp_path / "runs" / "results.csv"
    before = csv.read_bytes()

    def broken_fit(*args, **kwargs):
        raise RuntimeError("curvature blew up")

    monkeypatch.setattr(lap, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="curvature blew up"):
        main(["laplace", str(cfg), "--checkpoint", str(run_dir), "--set", "data.max_test=40"])
    (failed,) = [d for d in run_dirs(tmp_path) if d != run_dir]
    status = json.loads((failed / "metrics.json").read_text())
    assert status["status"] == "failed" and "curvature blew up" in status["error"]
    assert csv.read_bytes() == before  # not even the (new) MAP rows of the failed run


def test_an_interrupted_training_run_is_marked_interrupted(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path)
    interrupt_after_first_epoch(monkeypatch)
    assert main(["train", str(cfg)]) == 130
    (run_dir,) = run_dirs(tmp_path)
    status = json.loads((run_dir / "metrics.json").read_text())
    assert status["status"] == "interrupted" and "--resume" in status["error"]
    assert not (tmp_path / "runs" / "results.csv").exists()


# ---- item 10: damaged tensor bytes (header intact) are an error naming the file, not wrong numbers later ------------
def _flip_data_byte(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n + (len(raw) - 8 - n) // 3] ^= 0x04
    file.write_bytes(bytes(raw))


def interrupted_run(cfg, tmp_path, capsys, monkeypatch):
    """``bayespeft train CFG`` stopped (exit 130) after its first epoch's checkpoint; its run directory."""
    undo = interrupt_after_first_epoch(monkeypatch)
    assert main(["train", str(cfg)]) == 130
    undo()
    capsys.readouterr()
    (run_dir,) = run_dirs(tmp_path)
    return run_dir


def test_corrupted_checkpoints_are_named_on_evaluate_and_on_resume(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path, method="lora")
    run_dir = interrupted_run(cfg, tmp_path, capsys, monkeypatch)
    last = run_dir / "checkpoints" / "last.safetensors"
    _flip_data_byte(last)
    assert main(["train", str(cfg), "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{last} is corrupted (SHA-256 mismatch)" in err
    finished = tmp_path / "finished"
    assert main(["train", str(cfg), "--set", f"output.root={finished}"]) == 0
    capsys.readouterr()
    (done,) = finished.glob("tiny-lora-*")
    weights = done / "checkpoint" / "adapter_model.safetensors"
    _flip_data_byte(weights)
    assert main(["evaluate", str(cfg), "--checkpoint", str(done)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: checkpoint file {weights} is corrupted (SHA-256 mismatch); re-run training or restore it\n"


# ---- item 11: each bad value stated once; remedies the CLI offers; file modes from the umask -------------------

@pytest.mark.parametrize("override,value", [("train.lr=-0.1", "-0.1"), ("data.val_fraction=1.5", "1.5"),
                                            ("laplace.structure=kfacc", "'kfacc'"), ("train.epochs=0", "0"),
                                            ("sgmcmc.temperature=-2", "-2")])
def test_config_errors_state_the_bad_value_once(tmp_path, capsys, override, value):
    cfg = tiny_config(tmp_path)
    assert main(["validate", str(cfg), "--set", override]) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.strip().startswith("- " + override.split("=")[0]))
    assert line.count(value) == 1, line
    assert "Traceback" not in err


def test_a_section_level_error_does_not_dump_the_whole_section(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["validate", str(cfg), "--set", "data.shift=rotate", "--set", "data.shift_severity=-0.1"]) == 2
    err = capsys.readouterr().err
    assert "-0.1" in err and "max_train" not in err
    assert main(["validate", str(cfg), "--set", "laplace.structure=diag", "--set", "laplace.n_kfac=3"]) == 2
    err = capsys.readouterr().err
    assert "n_kfac applies to structure" in err and "{'" not in err  # no dump of the section's dict


def test_another_base_suggests_the_cli_flag_that_skips_the_check(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    (run_dir,) = run_dirs(tmp_path)
    other_seed = ["--set", "train.seed=4"]  # a random (unpretrained) base: another seed is another base
    assert main(["evaluate", str(cfg), "--checkpoint", str(run_dir), *other_seed]) == 2
    err = capsys.readouterr().err
    assert "base weights" in err and "--skip-base-check" in err and "check_base=False" not in err.split("CLI")[0]
    for cmd in (["evaluate"], ["laplace", "--structure", "diag", "--prior", "none"]):
        assert main([cmd[0], str(cfg), "--checkpoint", str(run_dir), *other_seed, "--skip-base-check", *cmd[1:]]) == 0


def test_resume_errors_suggest_what_the_cli_can_do(tmp_path, capsys, monkeypatch):
    from bayespeft import io
    from bayespeft.train.checkpoint import FORMAT

    cfg = tiny_config(tmp_path)
    run_dir = interrupted_run(cfg, tmp_path, capsys, monkeypatch)
    last = run_dir / "checkpoints" / "last.safetensors"
    io.save_tensors(last, io.load_tensors(last), metadata={"format": FORMAT, "epoch": "7"})
    assert main(["train", str(cfg), "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "epoch 7" in err and "without --resume" in err and "resume=False" not in err.split("CLI")[0]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, capsys, umask, mode):
    cfg = tiny_config(tmp_path)
    old = os.umask(umask)
    try:
        assert main(["train", str(cfg)]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    names = {p.name for p in files}
    assert {"metrics.json", "config.yaml", "history.json", "rows.csv", "results.csv", "last.safetensors",
            "last_state.pt", "adapter_model.safetensors", "bayespeft_meta.json"} <= names
    bad = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
           if stat.S_IMODE(p.stat().st_mode) != mode}
    assert not bad


def test_an_unknown_config_section_is_a_user_error(capsys):
    assert main(["config", "trian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'trian'" in err and "train" in err


def test_a_loaded_checkpoint_is_placed_on_the_train_device(tmp_path, monkeypatch):
    """evaluate / laplace / sample fit and evaluate where `train.device` says (a GPU run must not fall back to CPU)."""
    import torch

    from bayespeft.config import load_config
    from bayespeft.experiments import run as run_mod

    assert main(["train", str(tiny_config(tmp_path))]) == 0
    (trained,) = run_dirs(tmp_path)
    cfg = load_config(tiny_config(tmp_path), ["train.device=cpu"])
    built = run_mod.build(cfg)
    assert built.device == torch.device("cpu")
    moved = []
    to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: (moved.append((self, a)), to(self, *a, **k))[1])
    run_mod.load_checkpoint_into(built, trained)
    assert (built.model, (torch.device("cpu"),)) in [(m, a) for m, a in moved]
