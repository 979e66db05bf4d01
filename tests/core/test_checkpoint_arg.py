"""``--checkpoint`` of evaluate / laplace / layerwise / sample is resolved and checked before the model and data
are built; a run directory without a checkpoint says what it is (failed, unfinished training, a run that used
another checkpoint) and how to go on, a file is named as one; exit status 2, one line, no run directory made."""

from __future__ import annotations

import json

import pytest

import bayespeft.experiments.run as run_mod
from bayespeft.cli import main
from bayespeft.errors import CheckpointError
from bayespeft.experiments.checkpoint_arg import checkpoint_dir


def write_run(d, metrics=None, checkpoints=False):
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("name: x\n")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if checkpoints:
        (d / "checkpoints").mkdir()
    return d


CASES = {
    "failed": (dict(metrics={"status": "failed", "error": "TrainingDivergedError: nan loss"}),
               r"is a run that failed \(TrainingDivergedError: nan loss\), so it has no checkpoint; fix that"),
    "interrupted": (dict(metrics={"status": "interrupted"}, checkpoints=True),
                    r"training run that did not finish \(status 'interrupted'\).*"
                    r"bayespeft train CONFIG --resume .*/interrupted`"),
    "killed": (dict(checkpoints=True),
               r"did not finish \(stopped before metrics.json was written\).*--resume .*/killed`"),
    "sampled": (dict(metrics={"status": "finished", "checkpoint": "runs/map-1"}),
                r"is a run that used the checkpoint runs/map-1 \(it writes no checkpoint of its own\); pass that one"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_run_without_a_checkpoint_says_what_it_is(tmp_path, kind):
    kw, message = CASES[kind]
    run = write_run(tmp_path / kind, **kw)
    with pytest.raises(CheckpointError, match=message):
        checkpoint_dir(run)


def test_files_plain_directories_and_real_checkpoints(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("a\n")
    with pytest.raises(CheckpointError, match=r"--checkpoint .*results.csv is a file, not a directory"):
        checkpoint_dir(f)
    with pytest.raises(CheckpointError, match="is not a bayespeft adapter checkpoint: bayespeft_meta.json is missing"):
        checkpoint_dir(write_run(tmp_path / "plain", metrics={"status": "finished"}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint_dir(tmp_path / "nothing")
    run = write_run(tmp_path / "done", metrics={"status": "finished"})
    (run / "checkpoint").mkdir()
    meta = {"method": "lora", "backbone": "micro_vit", "num_classes": 10, "adapter": {}, "weights": "w.safetensors"}
    (run / "checkpoint" / "bayespeft_meta.json").write_text(json.dumps(meta))
    assert checkpoint_dir(run) == run / "checkpoint" == checkpoint_dir(run / "checkpoint")


@pytest.mark.parametrize("command", ["evaluate", "laplace", "layerwise", "sample"])
def test_commands_refuse_before_building_anything(tmp_path, monkeypatch, capsys, command):
    def no_build(*a, **kw):
        raise AssertionError("the model and data were built before --checkpoint was checked")

    for mod in ("evaluate", "laplace", "layerwise", "sample"):
        monkeypatch.setattr(f"bayespeft.experiments.{mod}.build", no_build)
    monkeypatch.setattr(run_mod, "build", no_build)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndata: {{name: digits}}\nmodel: {{name: micro_vit, pretrained: false}}\n"
                   f"adapter: {{method: lora}}\noutput: {{root: {tmp_path / 'out'}}}\n")
    run = write_run(tmp_path / "failed", **CASES["failed"][0])
    assert main([command, str(cfg), "--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is a run that failed" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_layerwise_refuses_an_unwritable_out_before_building_anything(tmp_path, monkeypatch, capsys):
    def no_build(*a, **kw):
        raise AssertionError("the model and data were built before --out was checked")

    monkeypatch.setattr("bayespeft.experiments.layerwise.build", no_build)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata: {name: digits}\nmodel: {name: micro_vit, pretrained: false}\n"
                   "adapter: {method: lora}\n")
    run = write_run(tmp_path / "done", metrics={"status": "finished"})
    (run / "checkpoint").mkdir()
    meta = {"method": "lora", "backbone": "micro_vit", "num_classes": 10, "adapter": {}, "weights": "w.safetensors"}
    (run / "checkpoint" / "bayespeft_meta.json").write_text(json.dumps(meta))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for extra in (["--out", str(blocker / "lw")], ["--set", f"output.root={blocker}"]):
        assert main(["layerwise", str(cfg), "--checkpoint", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: output directory {blocker}") and err.count("\n") == 1, err
        assert "choose another with --out DIR" in err
