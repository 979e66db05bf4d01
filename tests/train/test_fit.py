"""The training loop: fitting, determinism, checkpoints, evaluation helpers, config validation."""

from __future__ import annotations

import json
import math
import resource
import time

import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import DataLoader

from bayespeft.io import load_tensors
from bayespeft.metrics import classification_metrics
from bayespeft.train import TrainConfig, evaluate, fit, predict_probs
from bayespeft.train.checkpoint import weights_epoch


def test_fits_separable_problem_and_records_everything(toy, run_dir):
    train, val = toy.loaders()
    model = toy.MLP(dropout=0.0)
    t0 = time.perf_counter()
    res = fit(model, train, val, TrainConfig(epochs=6, lr=0.02, warmup_steps=4), run_dir)
    wall = time.perf_counter() - t0
    losses = [h.train_loss for h in res.history]
    assert losses[-1] < 0.6 * losses[0]
    assert res.history[-1].train_acc >= 0.9 and res.val_metrics["acc"] >= 0.95
    assert res.epochs_run == 6 and not res.stopped_early and res.total_steps == 6 * 8
    # throughput = examples / seconds of the timed passes; the final eval (128 examples) happened inside fit;
    # peak memory is this process's peak RSS in bytes (a Python process with torch is well over 50 MB)
    assert res.train_throughput == pytest.approx(6 * 256 / sum(h.train_time_s for h in res.history), rel=1e-12)
    assert 128 / res.inference_throughput < wall - sum(h.epoch_time_s for h in res.history)
    assert 50e6 < res.peak_memory_bytes <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert res.peak_memory_kind == "process_max_rss" and res.device == "cpu"
    assert res.n_trainable_params == sum(p.numel() for p in model.body.parameters())
    assert all(h.steps == 8 and h.train_examples == 256 for h in res.history)
    assert all(0 < h.train_time_s and 0 < h.val_time_s and h.train_time_s + h.val_time_s <= h.epoch_time_s for h in res.history)
    assert res.train_time_s == pytest.approx(sum(h.epoch_time_s for h in res.history), rel=1e-12) and res.train_time_s < wall
    # files: best/last weights (trainable + BatchNorm buffers, no frozen layer), state, history
    ck = run_dir / "checkpoints"
    best = load_tensors(ck / "best.safetensors")
    assert "body.1.running_mean" in best and "frozen.weight" not in best and "body.0.weight" in best
    hist = json.loads((run_dir / "history.json").read_text())
    assert hist["status"] == "finished" and len(hist["history"]) == 6 and hist["best_epoch"] == res.best_epoch
    # the final val metrics are those of the model as returned (best weights)
    probs, labels = predict_probs(model, val)
    assert res.val_metrics["acc"] == classification_metrics(probs, labels)["acc"]


def test_lr_schedule_is_linear_warmup_then_cosine(toy, run_dir):
    train, val = toy.loaders()
    res = fit(toy.MLP(), train, val, TrainConfig(epochs=4, lr=0.01, warmup_steps=8), run_dir)
    # history.lr is the lr used by the last step of each epoch: step index s = 8e - 1 of 32 steps
    for h in res.history:
        s = 8 * h.epoch - 1
        expect = 0.01 * (s / 8 if s < 8 else 0.5 * (1 + math.cos(math.pi * (s - 8) / (32 - 8))))
        assert h.lr == pytest.approx(expect, rel=1e-9)


def test_dict_batches_predict_and_evaluate(toy, run_dir):
    x, y = toy.toy_xy(256)
    train = DataLoader(toy.DictDataset(x, y), batch_size=32, shuffle=True)
    val = DataLoader(toy.DictDataset(x[:96], y[:96]), batch_size=40)
    model = toy.DictModel()
    res = fit(model, train, val, TrainConfig(epochs=5, lr=0.03), run_dir)
    assert res.history[-1].train_loss < res.history[0].train_loss
    model.train()
    probs, labels = predict_probs(model, val)
    assert model.training  # mode restored
    assert probs.shape == (96, 2) and probs.dtype == torch.float32 and torch.equal(labels, y[:96])
    assert torch.allclose(probs.sum(1), torch.ones(96))
    logits = model(pixel_values=x[:96])
    assert torch.allclose(probs, logits.softmax(-1), atol=1e-6)
    ev = evaluate(model, val)
    assert ev["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y[:96]).item(), rel=1e-5)
    assert ev["acc"] >= 0.9 and "ece" in ev and "confusion_matrix" in ev
    assert ev["inference_throughput"] == pytest.approx(96 / ev["eval_time_s"], rel=1e-12)


def test_same_seed_same_weights_bit_for_bit(toy, tmp_path):
    runs = []
    for i, seed in enumerate([3, 3, 4]):
        train, val = toy.loaders()
        model = toy.MLP()
        res = fit(model, train, val, TrainConfig(epochs=3, lr=0.01, seed=seed, weight_decay=0.1), tmp_path / str(i))
        runs.append((toy.snapshot(model), [h.train_loss for h in res.history]))
    toy.assert_same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0]["body.0.weight"], runs[2][0]["body.0.weight"])  # the seed matters


def test_max_steps_per_epoch(toy, run_dir):
    train, val = toy.loaders()
    res = fit(toy.MLP(), train, val, TrainConfig(epochs=2, lr=0.01, max_steps_per_epoch=3), run_dir)
    assert [h.steps for h in res.history] == [3, 3] and [h.train_examples for h in res.history] == [96, 96]


def test_no_val_loader_keeps_last_epoch(toy, run_dir):
    train, _ = toy.loaders()
    model = toy.MLP()
    res = fit(model, train, None, TrainConfig(epochs=2, lr=0.01), run_dir)
    assert res.best_epoch == 2 and res.val_metrics is None and res.inference_throughput is None
    toy.assert_same(toy.snapshot(model), load_tensors(run_dir / "checkpoints" / "last.safetensors"))


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan")])
def test_lr_must_be_positive(lr):
    with pytest.raises(ValidationError, match="lr must be > 0"):
        TrainConfig(lr=lr)


def test_config_errors():
    with pytest.raises(ValidationError, match="set either warmup_steps .* or warmup_ratio"):
        TrainConfig(warmup_steps=10, warmup_ratio=0.1)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(learning_rate=1e-3)
    with pytest.raises(ValidationError, match="monitor"):
        TrainConfig(monitor="val_f1")
    for name, f in TrainConfig.model_fields.items():
        assert f.description, f"TrainConfig.{name} has no description"


def test_no_trainable_parameters(toy, run_dir):
    train, val = toy.loaders()
    model = toy.MLP().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model, train, val, TrainConfig(epochs=1), run_dir)


def test_patience_needs_val_loader(toy, run_dir):
    train, _ = toy.loaders()
    with pytest.raises(ValueError, match="early stopping .* needs a val_loader"):
        fit(toy.MLP(), train, None, TrainConfig(epochs=1, patience=2), run_dir)


def test_warmup_longer_than_run(toy, run_dir):
    train, val = toy.loaders()
    with pytest.raises(ValueError, match=r"warmup \(100 steps\) must be shorter than the whole run \(16 steps\)"):
        fit(toy.MLP(), train, val, TrainConfig(epochs=2, warmup_steps=100), run_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU fallback only")
def test_bf16_on_cpu_warns_and_uses_fp32(toy, run_dir):
    train, val = toy.loaders()
    with pytest.warns(UserWarning, match="bf16.*fp32 on CPU"):
        res = fit(toy.MLP(), train, val, TrainConfig(epochs=1, precision="bf16"), run_dir)
    assert res.precision == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(toy, run_dir):
    train, val = toy.loaders()
    with pytest.raises(ValueError, match="CUDA is not available; use device='auto' or 'cpu'"):
        fit(toy.MLP(), train, val, TrainConfig(epochs=1, device="cuda"), run_dir)


def test_best_weights_are_the_best_epochs_after_a_resume_without_per_epoch_checkpoints(toy, run_dir):
    """best.safetensors is copied from last.safetensors only when that file holds the same epoch; after resuming
    with ``checkpoint_every_epoch=False`` the last file is older, so best must be written from the model."""
    train, _ = toy.loaders()

    class Stop(Exception):
        pass

    def stop_after(k):
        def cb(rec):
            if rec.epoch == k:
                raise Stop

        return cb

    model = toy.MLP()
    with pytest.raises(Stop):
        fit(model, train, None, TrainConfig(epochs=4, lr=0.01), run_dir, callbacks=[stop_after(2)])
    model = toy.MLP()
    with pytest.raises(Stop):
        fit(model, train, None, TrainConfig(epochs=4, lr=0.01, checkpoint_every_epoch=False), run_dir,
            callbacks=[stop_after(3)])
    best = run_dir / "checkpoints" / "best.safetensors"
    assert weights_epoch(best) == 3  # no validation set: every epoch is the best so far
    toy.assert_same(toy.snapshot(model), load_tensors(best))
    assert weights_epoch(run_dir / "checkpoints" / "last.safetensors") == 2
