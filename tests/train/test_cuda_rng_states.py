"""The CUDA RNG branch of the trainer checkpoint and the SG-MCMC resume snapshot, on a CPU-only machine.

``torch.cuda``'s RNG calls are replaced at their boundary by a fake machine with ``n`` devices (each device's state a
distinct byte tensor), so the branch that saves and restores those states runs here; a GPU run exercises the real
calls. Expected: the states round-trip in device order; saved on a machine with another device count (or restored
without CUDA) they are not put back and a warning says so; no CUDA states (a CPU run) means no call and no warning.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from bayespeft.sgmcmc.resume import capture_rng, restore_rng
from bayespeft.train.checkpoint import get_rng_state, set_rng_state


class FakeCuda:
    """``n`` fake CUDA devices: ``get_rng_state_all`` returns their states, ``set_rng_state_all`` records its argument."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int, offset: int = 0) -> None:
        self.states = [torch.arange(16, dtype=torch.uint8) + 16 * i + offset for i in range(n)]
        self.set_calls: list[list[torch.Tensor]] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: self.set_calls.append(list(states)))


def _message(n_saved: int, n_here: int) -> str:
    return (f"the saved RNG state covers {n_saved} CUDA device(s) but this machine has {n_here}; CUDA random draws "
            "will not repeat the interrupted run (resume on the same devices for bit-exact results)")


def _warnings(w) -> list[str]:
    return [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _checkpoint_save_restore(n_saved, monkeypatch):
    FakeCuda(monkeypatch, n_saved)
    state = get_rng_state([])
    return state["cuda"], lambda: set_rng_state(state, [])


def _resume_save_restore(n_saved, monkeypatch):
    loader = DataLoader(list(range(8)), batch_size=2)
    FakeCuda(monkeypatch, n_saved)
    snap = capture_rng(loader)
    saved = {int(k[4:]): v for k, v in snap["tensors"].items() if k.startswith("cuda")}
    assert sorted(saved) == list(range(len(saved)))  # cuda0 .. cuda{n-1}, nothing else
    return [saved[i] for i in range(len(saved))], lambda: restore_rng(snap, loader)


SAVE_RESTORE = {"checkpoint": _checkpoint_save_restore, "resume": _resume_save_restore}


def _roundtrip(kind: str, n_saved: int, n_restore: int, monkeypatch):
    """Save on a fake machine with ``n_saved`` devices, restore on one with ``n_restore``: the saved CUDA states, the
    restoring machine, the RuntimeWarnings' texts."""
    saved, restore = SAVE_RESTORE[kind](n_saved, monkeypatch)
    target = FakeCuda(monkeypatch, n_restore, offset=100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        restore()
    return saved, target, _warnings(w)


@pytest.mark.parametrize("kind", SAVE_RESTORE)
def test_every_device_state_is_saved_and_restored_in_order(monkeypatch, kind):
    saved, target, warned = _roundtrip(kind, 12, 12, monkeypatch)  # 12 devices: cuda10 sorts before cuda2 as text
    expected = [torch.arange(16, dtype=torch.uint8) + 16 * i for i in range(12)]
    assert _same(saved, expected)
    assert len(target.set_calls) == 1 and _same(target.set_calls[0], expected)
    assert warned == []


@pytest.mark.parametrize("kind", SAVE_RESTORE)
@pytest.mark.parametrize("n_restore", [0, 1, 3])
def test_states_from_another_device_count_warn_and_are_not_restored(monkeypatch, kind, n_restore):
    _, target, warned = _roundtrip(kind, 2, n_restore, monkeypatch)
    assert target.set_calls == []
    assert warned == [_message(2, n_restore)]


@pytest.mark.parametrize("kind", SAVE_RESTORE)
def test_a_cpu_run_saves_and_restores_no_cuda_state(monkeypatch, kind):
    saved, target, warned = _roundtrip(kind, 0, 2, monkeypatch)
    assert saved == [] and target.set_calls == [] and warned == []
