"""Run directories as a user meets them through the CLI: resuming, output locations, the results CSV, failed runs.

Every test drives ``bayespeft.cli.main`` on a tiny micro-ViT/digits config and checks what lands on disk.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bayespeft.cli import main


def tiny_config(tmp_path: Path, method: str = "normtune", extra: str = "") -> Path:
    p = tmp_path / f"{method}.yaml"
    p.write_text(
        textwrap.dedent(
            f"""
            name: tiny-{method}
            data: {{name: digits, max_train: 64, max_val: 32, max_test: 48, batch_size: 32, shift: none}}
            model: {{name: micro_vit, pretrained: false}}
            adapter: {{method: {method}{", r: 2" if method in ("lora", "hybrid") else ""}}}
            train: {{epochs: 2, lr: 0.005, seed: 3, progress: false}}
            output: {{root: {tmp_path / 'runs'}, reliability_plots: false}}
            """
        )
        + extra
    )
    return p


def run_dirs(tmp_path: Path) -> list[Path]:
    root = tmp_path / "runs"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


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
