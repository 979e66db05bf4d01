"""The deep float64 MLP and seeded data shared by the layer-wise Laplace tests (``tests/`` is on ``sys.path``:
``tests/conftest.py``)."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Module:
    """Linear(4, 5) -> tanh -> Linear(5, 5) -> tanh -> Linear(5, 4) -> tanh -> Linear(4, 3), float64, seed 0."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(),
                         nn.Linear(4, 3)).double()


def loader(n: int = 12, seed: int = 0, batch_size: int = 6):
    """``n`` float64 inputs ``(n, 4)`` with labels in {0, 1, 2}, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size)
