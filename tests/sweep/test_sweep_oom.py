"""Out of memory in a sweep run: ``train.auto_batch_size`` settles on a micro-batch recorded in the store; without
it the run is recorded as failed. The error is injected into the (real) tiny model by a forward pre-hook."""

import pytest
import torch

from bayespeft.experiments import run as run_module
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.store import SweepStore

SWEEP = """\
base: base.yaml
axes:
  train.auto_batch_size: [true, false]
"""


@pytest.fixture
def oom_above_4(monkeypatch):
    """Every model built for a run raises ``torch.OutOfMemoryError`` on training batches of more than 4 examples."""
    real = run_module.apply_adapter

    def hook(module, args, kwargs):
        x = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
        if module.training and x.shape[0] > 4:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} MiB")

    def apply_and_hook(model, cfg):
        model = real(model, cfg)
        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    monkeypatch.setattr(run_module, "apply_adapter", apply_and_hook)


def test_the_settled_micro_batch_is_recorded_and_without_auto_the_run_fails(sweep_file, tmp_path, oom_above_4):
    out = tmp_path / "out"
    run_sweep(sweep_file(SWEEP), SweepOptions(out=str(out)))
    store = SweepStore.open(out)
    by_auto = {r.config["train"]["auto_batch_size"]: r for r in store.runs()}
    auto, plain = by_auto[True], by_auto[False]
    assert auto.status == "done" and auto.resources["micro_batch_size"] == 4  # batch_size 8 -> 4
    assert auto.metrics["run"]["micro_batch_size"] == 4
    log = (out / "runs" / auto.id / "log.txt").read_text()
    assert "retrying with micro-batches of 4 (2 accumulation steps per batch of 8)" in log
    assert plain.status == "failed" and plain.error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 8 MiB"
    store.close()
