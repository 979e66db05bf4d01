"""Training checkpoints of a model on an accelerator (the ``accelerator`` fixture: a real GPU, else
tests/virtual_device.py), and a training state written on a GPU machine read back on this one."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.serialization
from torch import nn
from torch.utils._pytree import tree_flatten

from bayespeft.train.checkpoint import get_rng_state, load_state, load_weights, save_state, save_weights


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def test_weights_of_an_accelerator_model_round_trip(accelerator, tmp_path):
    """Written from the device (CPU copies in the file), read into a model on the device and into a CPU model."""
    model = net().to(accelerator)
    model(torch.randn(5, 3, dtype=torch.float64, device=accelerator)).sum().backward()  # BatchNorm statistics move
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    save_weights(tmp_path / "w.safetensors", model, epoch=4)
    want = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for target in (net().to(accelerator), net()):
        device = next(target.parameters()).device
        assert load_weights(tmp_path / "w.safetensors", target) == 4
        got = target.state_dict()
        assert {k: v.device for k, v in got.items()} == {k: device for k in want}
        assert all(torch.equal(got[k].cpu(), want[k]) for k in want)


def test_a_training_state_written_on_a_gpu_loads_onto_the_cpu(tmp_path, monkeypatch):
    """``last_state.pt`` of a GPU run (optimiser moments on ``cuda:0``) resumes on a CPU-only machine, and its
    tensors come back on the CPU on any machine (the loop moves the optimiser state to the parameters itself)."""
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 3, dtype=torch.float64)).square().sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": get_rng_state([]), "epoch": 2}
    with monkeypatch.context() as mp:  # the storage location a CUDA tensor records in the file
        mp.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_state(tmp_path / "last_state.pt", state)
    assert b"cuda:0" in Path(tmp_path / "last_state.pt").read_bytes()
    got = load_state(tmp_path / "last_state.pt")
    (got_leaves, got_spec), (want_leaves, want_spec) = tree_flatten(got), tree_flatten(state)
    assert got_spec == want_spec and got["epoch"] == 2
    tensors = [(g, w) for g, w in zip(got_leaves, want_leaves) if torch.is_tensor(w)]
    assert len(tensors) >= 8  # Adam's step, exp_avg, exp_avg_sq per parameter, the RNG states
    assert all(g.device.type == "cpu" and g.dtype == w.dtype and torch.equal(g, w) for g, w in tensors)
