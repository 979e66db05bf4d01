"""``eval_mode`` / ``model_mode``: the one eval-and-restore context manager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayespeft.evalmode import eval_mode, model_mode


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3))


@pytest.mark.parametrize("start", [True, False])
def test_eval_mode_sets_eval_inside_and_restores_the_previous_mode(start: bool) -> None:
    model = net().train(start)
    with eval_mode(model) as m:
        assert m is model
        assert [mod.training for mod in model.modules()] == [False] * 4
        x = torch.randn(4, 3)
        torch.testing.assert_close(model(x), model(x))  # dropout off, running BN statistics: deterministic
    assert [mod.training for mod in model.modules()] == [start] * 4


def test_mode_is_restored_when_the_block_raises() -> None:
    model = net().train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training and model[1].training
    model.eval()
    with pytest.raises(KeyError), model_mode(model, training=True):
        assert model.training
        raise KeyError("x")
    assert not model.training and not model[1].training


def test_restore_goes_through_the_models_train_override() -> None:
    class KeepsNormFrozen(nn.Sequential):
        def train(self, mode: bool = True):
            super().train(mode)
            self[2].eval()  # e.g. frozen BatchNorm of an adapted model
            return self

    model = KeepsNormFrozen(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3)).train()
    with eval_mode(model):
        pass
    assert model.training and model[1].training and not model[2].training
