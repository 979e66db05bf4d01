"""Exact resumption, early stopping, best-checkpoint selection and divergence handling."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bayespeft.errors import CheckpointError
from bayespeft.io import load_tensors
from bayespeft.train import TrainConfig, TrainingDivergedError, fit
from bayespeft.train.checkpoint import weights_epoch

CFG = dict(epochs=4, lr=0.01, warmup_ratio=0.2, weight_decay=0.1, grad_clip=0.5, seed=7)


class Interrupt(Exception):
    pass


def interrupt_after(epoch: int):
    def cb(rec):
        if rec.epoch == epoch:
            raise Interrupt(f"stop after epoch {epoch}")

    return cb


@pytest.mark.parametrize("generator_seed", [None, 11], ids=["global-rng", "loader-generator"])
def test_resume_after_interruption_is_bit_identical(toy, tmp_path, generator_seed):
    # uninterrupted reference (dropout + BatchNorm + shuffling: every RNG and buffer matters)
    train, val = toy.loaders(generator_seed=generator_seed)
    ref_model = toy.MLP()
    ref = fit(ref_model, train, val, TrainConfig(**CFG), tmp_path / "ref")

    run = tmp_path / "run"
    train, val = toy.loaders(generator_seed=generator_seed)
    with pytest.raises(Interrupt):
        fit(toy.MLP(), train, val, TrainConfig(**CFG), run, callbacks=[interrupt_after(2)])
    assert weights_epoch(run / "checkpoints" / "last.safetensors") == 2
    # a fresh process would rebuild everything: new loaders, a model with *different* trainable init
    train, val = toy.loaders(generator_seed=generator_seed)
    model = toy.MLP()
    with torch.no_grad():
        model.body[0].weight.add_(1.0)
    res = fit(model, train, val, TrainConfig(**CFG, progress=False), run)
    assert res.resumed_from_epoch == 2 and res.epochs_run == 4
    toy.assert_same(toy.snapshot(model), toy.snapshot(ref_model))
    for name in ("best", "last"):
        toy.assert_same(load_tensors(run / "checkpoints" / f"{name}.safetensors"),
                        load_tensors(tmp_path / "ref" / "checkpoints" / f"{name}.safetensors"))
    keys = ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "improved")
    assert [[getattr(h, k) for k in keys] for h in res.history] == [[getattr(h, k) for k in keys] for h in ref.history]

    # resuming a finished run does not train again
    model2 = toy.MLP()
    again = fit(model2, *toy.loaders(generator_seed=generator_seed), TrainConfig(**CFG), run)
    assert again.resumed_from_epoch == 4 and again.epochs_run == 4
    toy.assert_same(toy.snapshot(model2), toy.snapshot(ref_model))


def test_resume_with_patience_stops_at_the_same_epoch_bit_identical(toy, tmp_path):
    """Early stopping triggered after the resume: the counter of epochs without improvement and the best metric are
    part of the resumed state. Flipped validation labels make epoch 1 the best, so patience 2 stops after epoch 3;
    interrupted after epoch 2 (best epoch 1, one bad epoch), the resumed run must stop there too."""
    cfg = TrainConfig(epochs=10, lr=0.02, patience=2, seed=7, weight_decay=0.1)
    ref_model = toy.MLP()
    ref = fit(ref_model, *toy.loaders(flip_val=True, generator_seed=3), cfg, tmp_path / "ref")
    assert ref.stopped_early and ref.epochs_run == 3 and ref.best_epoch == 1

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(toy.MLP(), *toy.loaders(flip_val=True, generator_seed=3), cfg, run, callbacks=[interrupt_after(2)])
    model = toy.MLP()  # a fresh process; its trainable weights are restored from the checkpoint
    with torch.no_grad():
        model.body[4].weight.mul_(-3.0)
    res = fit(model, *toy.loaders(flip_val=True, generator_seed=3), cfg, run)
    assert res.resumed_from_epoch == 2
    assert (res.stopped_early, res.epochs_run, res.best_epoch, res.total_steps) == (True, 3, 1, ref.total_steps)
    assert res.best_metric == ref.best_metric
    keys = ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "improved")
    assert [[getattr(h, k) for k in keys] for h in res.history] == [[getattr(h, k) for k in keys] for h in ref.history]
    toy.assert_same(toy.snapshot(model), toy.snapshot(ref_model))
    for name in ("best", "last"):
        toy.assert_same(load_tensors(run / "checkpoints" / f"{name}.safetensors"),
                        load_tensors(tmp_path / "ref" / "checkpoints" / f"{name}.safetensors"))
    assert weights_epoch(run / "checkpoints" / "last.safetensors") == 3


def test_resume_repairs_crash_before_best_was_written(toy, tmp_path):
    # interrupted after the last epoch's last_state.pt, before its best.safetensors: resuming has nothing left to
    # train, so only the repair can produce best.safetensors
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    ref_model = toy.MLP()
    ref = fit(ref_model, *toy.loaders(), cfg, tmp_path / "ref")
    assert ref.history[1].improved
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(toy.MLP(), *toy.loaders(), cfg, run, callbacks=[interrupt_after(2)])
    (run / "checkpoints" / "best.safetensors").unlink()  # as if the process died between the two writes
    model = toy.MLP()
    assert fit(model, *toy.loaders(), cfg, run).resumed_from_epoch == 2
    toy.assert_same(toy.snapshot(model), toy.snapshot(ref_model))
    toy.assert_same(load_tensors(run / "checkpoints" / "best.safetensors"),
                    load_tensors(tmp_path / "ref" / "checkpoints" / "best.safetensors"))


def test_resume_with_other_config_is_refused(toy, run_dir):
    train, val = toy.loaders()
    with pytest.raises(Interrupt):
        fit(toy.MLP(), train, val, TrainConfig(**CFG), run_dir, callbacks=[interrupt_after(1)])
    with pytest.raises(CheckpointError, match=r"different train config \(lr: 0.01 -> 0.02\)"):
        fit(toy.MLP(), train, val, TrainConfig(**{**CFG, "lr": 0.02}), run_dir)
    # resume=False starts over instead
    res = fit(toy.MLP(), train, val, TrainConfig(**{**CFG, "lr": 0.02}), run_dir, resume=False)
    assert res.resumed_from_epoch is None and res.epochs_run == 4


def test_early_stopping_restores_best_weights(toy, run_dir):
    # validation labels are the flipped training labels: the better the fit, the worse the val loss, so epoch 1
    # is the best and patience 2 stops after epoch 3
    train, val = toy.loaders(flip_val=True)
    seen = {}
    model = toy.MLP()
    res = fit(model, train, val, TrainConfig(epochs=10, lr=0.02, patience=2), run_dir,
              callbacks=[lambda rec: seen.__setitem__(rec.epoch, toy.snapshot(model))])
    val_losses = [h.val_loss for h in res.history]
    assert val_losses[1] > val_losses[0] and val_losses[2] > val_losses[0]
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1
    assert res.best_metric == pytest.approx(val_losses[0])
    assert [h.improved for h in res.history] == [True, False, False]
    toy.assert_same(toy.snapshot(model), seen[1])
    toy.assert_same(load_tensors(run_dir / "checkpoints" / "best.safetensors"), seen[1])
    toy.assert_same(load_tensors(run_dir / "checkpoints" / "last.safetensors"), seen[3])


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_best_checkpoint_is_best_epoch(toy, run_dir, monitor):
    train, val = toy.loaders()
    seen = {}
    model = toy.MLP()
    res = fit(model, train, val, TrainConfig(epochs=5, lr=0.05, monitor=monitor), run_dir,
              callbacks=[lambda rec: seen.__setitem__(rec.epoch, toy.snapshot(model))])
    vals = [h.val_loss if monitor == "val_loss" else -h.val_acc for h in res.history]
    expect = 1 + vals.index(min(vals))  # first epoch that reaches the best value
    assert res.best_epoch == expect
    toy.assert_same(toy.snapshot(model), seen[expect])
    assert weights_epoch(run_dir / "checkpoints" / "best.safetensors") == expect


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy, run_dir):
    train, val = toy.loaders()
    model = toy.MLP()
    seen = {}

    def poison_after_epoch_1(rec):
        seen[rec.epoch] = toy.snapshot(model)
        if rec.epoch == 1:
            model.poison = "train"

    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1 .*training loss is nan.*epoch 1.*lower learning rate") as e:
        fit(model, train, val, TrainConfig(epochs=3, lr=0.01), run_dir, callbacks=[poison_after_epoch_1])
    assert e.value.epoch == 2 and e.value.step == 1 and math.isnan(e.value.loss)
    for name in ("last", "best"):
        path = run_dir / "checkpoints" / f"{name}.safetensors"
        assert weights_epoch(path) == 1
        toy.assert_same(load_tensors(path), seen[1])
    hist = json.loads((run_dir / "history.json").read_text())
    assert hist["status"] == "diverged" and "epoch 2" in hist["error"] and len(hist["history"]) == 1


def test_nan_validation_loss_stops_before_checkpoint(toy, run_dir):
    train, val = toy.loaders()
    model = toy.MLP()

    def poison_eval(rec):
        model.poison = "eval"

    with pytest.raises(TrainingDivergedError, match="epoch 2.*validation loss is nan"):
        fit(model, train, val, TrainConfig(epochs=3, lr=0.01), run_dir, callbacks=[poison_eval])
    assert weights_epoch(run_dir / "checkpoints" / "last.safetensors") == 1


def test_huge_lr_diverges_with_hint(toy, run_dir):
    train, val = toy.loaders()
    with pytest.raises(TrainingDivergedError, match=r"Try a lower learning rate \(lr=1e\+30\) or gradient clipping"):
        fit(toy.MLP(), train, val, TrainConfig(epochs=3, lr=1e30, grad_clip=None), run_dir)
    assert not (run_dir / "checkpoints" / "last.safetensors").exists()
