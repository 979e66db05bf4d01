"""``train.auto_batch_size``: out-of-memory errors injected by a model that fails on batches larger than ``k``.

References are independent runs: the same training at the full batch with no error (gradient accumulation must give
the same optimiser steps, up to float rounding), or a run with the micro-batch fixed from the start.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bayespeft.train import TrainConfig, TrainingOutOfMemoryError, fit
from bayespeft.train import loop as loop_module
from bayespeft.train.microbatch import MicroBatcher, chunks, is_out_of_memory

# grad clipping and weight decay on: a gradient of the wrong scale changes the steps even under Adam
CFG = dict(epochs=2, lr=0.02, warmup_ratio=0.2, weight_decay=0.1, grad_clip=0.5, seed=5)


class OOMNet(nn.Module):
    """2 -> 32 -> 2 MLP (optional dropout, no BatchNorm) that raises ``torch.OutOfMemoryError`` in training mode
    on more than ``k`` examples, and on the forward calls listed in ``fail_calls`` (1-based, training only).
    Dropout runs before the check, so a failed attempt has consumed random numbers."""

    def __init__(self, k: int | None = None, dropout: float = 0.0, fail_calls: tuple[int, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.drop = nn.Dropout(dropout)
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
        self.k, self.fail_calls = k, set(fail_calls)
        self.calls = 0
        self.raised: list[int] = []  # the batch sizes that raised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        if self.training:
            self.calls += 1
            if (self.k is not None and x.shape[0] > self.k) or self.calls in self.fail_calls:
                self.raised.append(int(x.shape[0]))
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} MiB")
        return self.net(x)


def data(n_train: int = 250, batch: int = 32):
    """250 examples in batches of 32: the last batch has 26, so micro-batches of 8 cut it into 8, 8, 8, 2."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + 64, 2, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch, shuffle=True,
                       generator=torch.Generator().manual_seed(1))
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=64)
    return train, val


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_halves_to_a_fitting_micro_batch_and_keeps_the_full_batch_steps(tmp_path, caplog):
    ref_model = OOMNet()
    ref = fit(ref_model, *data(), TrainConfig(**CFG), tmp_path / "ref")
    model = OOMNet(k=10)
    with caplog.at_level(logging.WARNING, logger="bayespeft.train.microbatch"):
        res = fit(model, *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "run")
    assert model.raised == [32, 16]  # 32 -> 16 -> 8, then never again (the last batch of 26 runs as 8, 8, 8, 2)
    assert res.micro_batch_size == 8 and ref.micro_batch_size is None
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["status"] == "finished" and history["micro_batch_size"] == 8
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "retrying with micro-batches of 8 (4 accumulation steps per batch of 32)" in warned[1]
    a, b = params(model), params(ref_model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # really accumulated: float summation order differs
    for h, r in zip(res.history, ref.history, strict=True):
        assert h.train_loss == pytest.approx(r.train_loss, rel=1e-6) and h.train_acc == r.train_acc
        assert h.steps == r.steps and h.train_examples == r.train_examples == 250


def test_a_failure_after_some_micro_batches_retries_from_zero_gradients(tmp_path):
    """Calls 1 (32 examples) and 3 (the 2nd micro-batch of 16, after the 1st one's backward) fail: the retry at 8
    must not keep the gradient the 1st micro-batch of 16 had accumulated."""
    ref_model = OOMNet()
    fit(ref_model, *data(), TrainConfig(**CFG), tmp_path / "ref")
    model = OOMNet(fail_calls=(1, 3))
    res = fit(model, *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "run")
    assert model.raised == [32, 16] and res.micro_batch_size == 8
    a, b = params(model), params(ref_model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_the_retry_draws_the_random_numbers_of_the_failed_attempt(tmp_path, monkeypatch):
    """With dropout, a run that fails twice and settles on 8 equals, bit for bit, one that used 8 from its first step."""
    model = OOMNet(k=10, dropout=0.2)
    res = fit(model, *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "run")
    assert model.raised == [32, 16] and res.micro_batch_size == 8

    class From8(MicroBatcher):
        def __init__(self, micro, auto, device):
            super().__init__(8, auto, device)

    monkeypatch.setattr(loop_module, "MicroBatcher", From8)
    ref_model = OOMNet(k=10, dropout=0.2)
    fit(ref_model, *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "ref")
    assert ref_model.raised == []
    a, b = params(model), params(ref_model)
    assert all(torch.equal(a[k], b[k]) for k in a)


class Interrupt(Exception):
    pass


def test_resume_keeps_the_settled_micro_batch_bit_identical(tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 3}, auto_batch_size=True)
    ref_model = OOMNet(k=12, dropout=0.2)
    ref = fit(ref_model, *data(), cfg, tmp_path / "ref")
    assert ref.micro_batch_size == 8

    def stop(rec):
        if rec.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(OOMNet(k=12, dropout=0.2), *data(), cfg, tmp_path / "run", callbacks=[stop])
    model = OOMNet(k=12, dropout=0.2)
    res = fit(model, *data(), cfg, tmp_path / "run")
    assert res.resumed_from_epoch == 1 and res.micro_batch_size == 8
    assert model.raised == []  # the micro-batch came from the checkpoint: no error to find it again
    a, b = params(model), params(ref_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h.train_loss for h in res.history] == [h.train_loss for h in ref.history]


def test_without_auto_batch_size_the_error_ends_the_run(tmp_path):
    model = OOMNet(k=10)
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 32 MiB"):
        fit(model, *data(), TrainConfig(**CFG), tmp_path / "run")
    assert model.raised == [32]


def test_a_micro_batch_of_one_that_does_not_fit_is_a_one_line_error(tmp_path):
    model = OOMNet(k=0)
    with pytest.raises(TrainingOutOfMemoryError, match=r"even with a micro-batch of 1 example \(CUDA out of memory") as e:
        fit(model, *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "run")
    assert "\n" not in str(e.value)
    assert model.raised == [32, 16, 8, 4, 2, 1]


def test_other_errors_are_not_retried(tmp_path):
    class Broken(OOMNet):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fit(Broken(), *data(), TrainConfig(**CFG, auto_batch_size=True), tmp_path / "run")


@pytest.mark.parametrize(("exc", "oom"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    (ValueError("out of memory"), False),
])
def test_is_out_of_memory(exc, oom):
    assert is_out_of_memory(exc) is oom


def test_chunks_cover_the_batch_in_order():
    batch = {"pixel_values": torch.arange(26).reshape(26, 1), "labels": torch.arange(26), "name": "x"}
    parts = chunks(batch, 8)
    assert [len(p["labels"]) for p in parts] == [8, 8, 8, 2] and all(p["name"] == "x" for p in parts)
    assert torch.equal(torch.cat([p["pixel_values"] for p in parts]), batch["pixel_values"])
    pair = (torch.arange(5), torch.arange(5))
    assert [tuple(p[1].tolist()) for p in chunks(pair, 2)] == [(0, 1), (2, 3), (4,)]
    assert chunks(pair, None) == [pair] and chunks(pair, 5) == [pair]


def test_the_key_is_validated():
    with pytest.raises(ValueError, match="auto_batch_size"):
        TrainConfig(auto_batch_size="sometimes")
