"""Resume-path checks added for mutants of ``train/loop.py``'s ``_resume`` that survived the suite (tests/MUTATION.md).

Each test finishes a 2-epoch run, edits its checkpoint directory the way a stale, mixed or hand-copied checkpoint
would look, and resumes through the public ``fit``.
"""

from __future__ import annotations

import re
import shutil

import pytest

from bayespeft.errors import CheckpointError
from bayespeft.train import TrainConfig, fit
from bayespeft.train.checkpoint import load_state, save_state, save_weights

CFG = TrainConfig(epochs=2, lr=0.01, grad_clip=0.5, seed=7)


_FINISHED = {}


@pytest.fixture
def finished(toy, run_dir, tmp_path_factory):
    """A copy of one completed 2-epoch run (8 steps per epoch: 256 examples, batch size 32) in ``run_dir``; returns
    its checkpoint dir. The run is trained once per session and copied for each test."""
    if "dir" not in _FINISHED:
        _FINISHED["dir"] = tmp_path_factory.mktemp("finished") / "run"
        fit(toy.MLP(), *toy.loaders(), CFG, _FINISHED["dir"])
    shutil.copytree(_FINISHED["dir"], run_dir)
    return run_dir / "checkpoints"


def _edit_state(ckpt, **changes):
    st = load_state(ckpt / "last_state.pt")
    st.update(changes)
    save_state(ckpt / "last_state.pt", st)


def test_config_keys_missing_from_the_checkpoint_count_as_changes(toy, run_dir, finished):
    # a checkpoint written by a version without some keys: old value None, and every difference is listed
    st = load_state(finished / "last_state.pt")
    config = {k: v for k, v in st["config"].items() if k not in ("grad_clip", "lr")}
    _edit_state(finished, config=config)
    with pytest.raises(CheckpointError, match=re.escape(
        "different train config (grad_clip: None -> 0.5, lr: None -> 0.01); resuming would not reproduce the run. "
        "Use the original values, or start a new run (CLI: without --resume; Python: a new run_dir or resume=False)."
    )):
        fit(toy.MLP(), *toy.loaders(), CFG, run_dir)


def test_other_steps_per_epoch_is_refused(toy, run_dir, finished):
    with pytest.raises(CheckpointError, match=re.escape(
        "was written with 8 steps per epoch, the train loader now gives 4; resume with the same data and batch size"
    )):
        fit(toy.MLP(), *toy.loaders(batch_size=64), CFG, run_dir)


def test_last_weights_from_another_epoch_are_refused(toy, run_dir, finished):
    save_weights(finished / "last.safetensors", toy.MLP(), 1)
    with pytest.raises(CheckpointError, match=re.escape(
        "last.safetensors is from epoch 1 but last_state.pt from epoch 2 (interrupted while writing?); "
        "start a new run (CLI: without --resume; Python: a new run_dir or resume=False)"
    )):
        fit(toy.MLP(), *toy.loaders(), CFG, run_dir)


def test_best_epoch_older_than_last_resumes(toy, run_dir, finished):
    # best.safetensors from epoch 1 and the state agrees: a consistent checkpoint, nothing to repair or refuse
    save_weights(finished / "best.safetensors", toy.MLP(), 1)
    _edit_state(finished, best_epoch=1)
    assert fit(toy.MLP(), *toy.loaders(), CFG, run_dir).resumed_from_epoch == 2


def test_missing_best_from_an_older_epoch_is_refused(toy, run_dir, finished):
    # unlike a missing best of the *last* epoch (repaired from last.safetensors), an older best cannot be rebuilt
    (finished / "best.safetensors").unlink()
    _edit_state(finished, best_epoch=1)
    with pytest.raises(CheckpointError, match=re.escape(
        "best.safetensors is missing or not from the best epoch 1; start a new run "
        "(CLI: without --resume; Python: a new run_dir or resume=False)"
    )):
        fit(toy.MLP(), *toy.loaders(), CFG, run_dir)
