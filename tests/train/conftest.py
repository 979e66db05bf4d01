"""Tiny models and data for the trainer tests (CPU, a fraction of a second per fit)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayespeft.train import trainable_state

torch.set_num_threads(1)


def toy_xy(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable 2-D, 2-class problem: y = [x0 + x1 > 0]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


class MLP(nn.Module):
    """2 -> 16 -> 2 with BatchNorm (buffers), dropout (RNG) and a frozen input layer (not checkpointed)."""

    def __init__(self, seed: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.body = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))
        self.poison: str | None = None  # "train" / "eval": return NaN logits in that mode (divergence tests)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.frozen(x) + x)
        if self.poison == ("train" if self.training else "eval"):
            out = out * float("nan")
        return out


class DictDataset(Dataset):
    """Items are dicts of tensors with ``labels``, like every bayespeft dataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


class DictModel(nn.Module):
    """Called as model(**inputs) with ``pixel_values``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


def loaders(batch_size: int = 32, generator_seed: int | None = None, flip_val: bool = False):
    """Shuffled train loader (own generator if ``generator_seed``) and a val loader (labels flipped if asked)."""
    x, y = toy_xy(256, seed=0)
    xv, yv = toy_xy(128, seed=1)
    if flip_val:
        yv = 1 - yv
    gen = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=gen)
    val = DataLoader(TensorDataset(xv, yv), batch_size=64)
    return train, val


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainable_state(model).items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max |diff| {(a[k] - b[k]).abs().max().item():.3g})"


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


@pytest.fixture
def toy():
    """This module (models, loaders, snapshot helpers) for the tests: ``toy.MLP()``, ``toy.loaders()``, ..."""
    return sys.modules[__name__]
