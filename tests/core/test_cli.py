"""The `bayespeft` command end to end on tiny configs (micro ViT on digits)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bayespeft.cli import COMMANDS, main
from bayespeft.testing import write_tiny_digits_config


def tiny_config(tmp_path, method="lora", extra=""):
    return write_tiny_digits_config(tmp_path / f"{method}.yaml", f"tiny-{method}", tmp_path / "runs", method=method,
                                    sizes=(96, 48, 64), shift="noise", extra=extra)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name, (hlp, _) in COMMANDS.items():
        assert name in out and hlp[:30] in out
    assert {"train", "evaluate", "laplace", "sample", "quickstart"} <= set(COMMANDS)


def test_validate_reports_bad_config_cleanly(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["validate", str(cfg), "--set", "adapter.r=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid") and "adapter.r" in err and "Traceback" not in err
    assert main(["validate", str(cfg), "--set", "train.lrr=1"]) == 2
    assert "did you mean 'train.lr'" in capsys.readouterr().err
    assert main(["validate", str(cfg), "--set", "model.name=vit_tinny"]) == 2  # unknown names fail at config time
    assert "unknown model 'vit_tinny'. Did you mean 'vit_tiny_patch16_224'?" in capsys.readouterr().err


def test_unknown_model_lists_known_names(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["train", str(cfg), "--set", "model.name=resnet19"]) == 2
    err = capsys.readouterr().err
    assert "resnet18_cifar" in err and "micro_vit" in err


def test_missing_cifar_directory_says_how_to_fix(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    code = main(["train", str(cfg), "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'nodata'}",
                 "--set", "model.name=resnet18_cifar", "--set", "adapter.method=full", "--set", "adapter.r=null"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nodata") in err and "download" in err


def test_train_evaluate_round_trip(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["train", str(cfg)]) == 0
    out = capsys.readouterr().out
    run_dir = out.strip().splitlines()[-1].split(": ", 1)[1]
    metrics = json.loads((tmp_path / "runs" / run_dir.split("/")[-1] / "metrics.json").read_text())
    assert set(metrics["map"]) == {"test", "test_shift"}
    for f in ["config.yaml", "checkpoint/adapter_model.safetensors", "checkpoint/adapter_config.json",
              "plots/reliability_map_test.png", "history.json"]:
        assert (tmp_path / "runs" / run_dir.split("/")[-1] / f).exists(), f
    # evaluating the saved checkpoint reproduces the test metrics of the training run
    assert main(["evaluate", str(cfg), "--checkpoint", run_dir]) == 0
    eval_dir = capsys.readouterr().out.strip().splitlines()[-1].split(": ", 1)[1]
    again = json.loads((tmp_path / "runs" / eval_dir.split("/")[-1] / "metrics.json").read_text())
    assert again["map"]["test"]["acc"] == pytest.approx(metrics["map"]["test"]["acc"], abs=1e-12)
    assert again["map"]["test"]["nll"] == pytest.approx(metrics["map"]["test"]["nll"], rel=1e-6)
    df = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert {"ts", "method", "dataset", "backbone", "tuned_params_%", "acc@1", "ece", "train_time_s", "epochs"} <= set(df.columns)
    test_rows = df[(df.split == "test") & (df.posterior == "map")]
    assert len(test_rows) == 1  # the same result is recorded once (by the training run)
    assert test_rows["nll"].iloc[0] == pytest.approx(metrics["map"]["test"]["nll"], rel=1e-5)


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    bad = tmp_path / "bad_ckpt"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{}")
    (bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    assert main(["evaluate", str(cfg), "--checkpoint", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before


def test_resume_continues_an_interrupted_run(tmp_path, capsys, monkeypatch):
    import bayespeft.experiments.train as pipeline

    cfg = tiny_config(tmp_path, method="normtune")
    run_dir = tmp_path / "resumable"
    real_fit = pipeline.fit

    def interrupted_fit(*args, **kwargs):
        def stop(record):
            raise KeyboardInterrupt  # as if the process were killed after epoch 1's checkpoint

        return real_fit(*args, callbacks=[stop], **kwargs)

    monkeypatch.setattr(pipeline, "fit", interrupted_fit)
    assert main(["train", str(cfg), "--set", f"output.root={run_dir.parent / 'resumable_root'}"]) == 130
    err = capsys.readouterr().err
    (run_dir,) = (run_dir.parent / "resumable_root").glob("tiny-normtune-*")
    assert f"interrupted; resume it with `bayespeft train CONFIG --resume {run_dir}` (run directory: {run_dir})" in err
    assert json.loads((run_dir / "history.json").read_text())["status"] == "running"
    monkeypatch.setattr(pipeline, "fit", real_fit)
    assert main(["train", str(cfg), "--resume", str(run_dir)]) == 0
    hist = json.loads((run_dir / "history.json").read_text())
    assert hist["status"] == "finished" and hist["epochs_run"] == 2 and hist["resumed_from_epoch"] == 1


def test_list_and_config_commands(capsys):
    assert main(["list", "methods"]) == 0
    assert capsys.readouterr().out.split() == ["full", "hybrid", "linear", "lora", "normtune"]
    assert main(["config", "train"]) == 0
    assert "train.lr" in capsys.readouterr().out


#: members each listing must contain (written out here, not read from the registries)
KNOWN = {"models": {"micro_vit", "resnet18_cifar", "wrn28_10", "roberta-base"}, "datasets": {"digits", "cifar10", "mrpc"},
         "methods": {"lora", "normtune", "hybrid", "full", "linear"}, "structures": {"diag", "kfac", "lowrank_kfac", "full"},
         "samplers": {"sgld", "psgld", "asgld", "sghmc", "sam_sgld", "sam_sgld_r1"}, "schedules": {"constant", "cyclical"}}


@pytest.mark.parametrize("what", sorted(KNOWN))
def test_list_reads_each_registry(what, capsys):
    from bayespeft.cli import REGISTRIES

    assert set(REGISTRIES) == set(KNOWN)
    assert main(["list", what]) == 0
    names = capsys.readouterr().out.split()
    assert names == sorted(names) and KNOWN[what] <= set(names)
    others = set().union(*(v for k, v in KNOWN.items() if k != what)) - KNOWN[what]
    assert not others & set(names), f"`bayespeft list {what}` shows names of another registry"


def test_out_of_memory_outside_a_training_step_is_one_line(tmp_path, capsys, monkeypatch):
    import bayespeft.experiments.train as pipeline
    from bayespeft.cli import out_of_memory

    cfg = tiny_config(tmp_path, method="normtune")

    def oom(*args, **kwargs):  # what torch raises when an evaluation batch does not fit on the GPU
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total)\nmore")

    monkeypatch.setattr(pipeline, "fit", oom)
    assert main(["train", str(cfg), "--set", f"output.root={tmp_path / 'runs'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory in `bayespeft train` (CUDA out of memory. "
                                                   "Tried to allocate 2.00 GiB (GPU 0; 15.77 GiB total)). Lower")
    assert "data.eval_batch_size" in err and "Traceback" not in err
    assert out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not out_of_memory(RuntimeError("expected scalar type Float")) and not out_of_memory(ValueError("x"))

    def other(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(pipeline, "fit", other)  # any other error keeps its traceback
    with pytest.raises(RuntimeError, match="a bug, not memory"):
        main(["train", str(cfg), "--set", f"output.root={tmp_path / 'runs'}"])


def test_checkpoint_of_another_config_names_the_runs_own_config(lw_trained, tmp_path, capsys):
    """A LoRA run's checkpoint evaluated under a normtune (or another rank's) config: refused, and the fix names the
    run's own config.yaml."""
    root, cfg, run = lw_trained
    for overrides in (["adapter.method=normtune", "adapter.r=null"], ["adapter.r=4"]):
        sets = [a for o in [*overrides, f"output.root={tmp_path}"] for a in ("--set", o)]
        assert main(["evaluate", str(cfg), "--checkpoint", str(run), *sets]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the model was adapted with" in err
        assert err.rstrip().endswith(f"Fix: use the run's own config: {run / 'config.yaml'}")
