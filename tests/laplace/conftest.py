"""Tiny models, data and brute-force (torch.func) references for the Laplace tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

torch.set_num_threads(1)


class MLP(nn.Module):
    def __init__(self, d_in=4, hidden=5, d_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.head(self.body(x))


class BodyHead(nn.Module):
    """Linear(4, 5) ``body`` -> tanh -> Linear(5, 3) ``head`` (parameters ``body.*``, ``head.*``)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


class SeqNet(nn.Module):
    """(B, T, 6) tokens -> Linear(6, 2) -> tanh -> Linear(2, 8) -> mean over T -> Linear(8, 3)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 2)
        self.b = nn.Linear(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.b(torch.tanh(self.a(x))).mean(1))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.norm(self.conv(x).flatten(1)))


def loader(X, y, batch_size=7):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size)


@pytest.fixture
def mlp_data():
    torch.manual_seed(0)
    model = MLP().double()
    X = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, X, y


def brute_jacobian(model, X, names):
    """Per-example Jacobians (N, C, d) of the outputs w.r.t. the named parameters (θ order = names)."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    def f(p):
        return functional_call(model, p, (X,))

    J = jacrev(f)(params)
    N, C = f(params).shape
    return torch.cat([J[n].reshape(N, C, -1) for n in names], dim=-1)


def brute_ggn(model, X, names, likelihood="classification", sigma=1.0):
    """Σ_n J_nᵀ Λ_n J_n with Λ = diag(p) − p pᵀ (classification) or I/σ² (regression)."""
    J = brute_jacobian(model, X, names)
    with torch.no_grad():
        f = model(X)
    if likelihood == "classification":
        p = torch.softmax(f, -1)
        Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        Lam = torch.eye(f.shape[1], dtype=f.dtype).expand(f.shape[0], -1, -1) / sigma**2
    return torch.einsum("ncd,nce,nef->df", J, Lam, J)


def trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.fixture(scope="session")
def ref():
    """The helpers above as a namespace (tests run with --import-mode=importlib, so conftest is not importable)."""
    import types

    return types.SimpleNamespace(
        MLP=MLP, BodyHead=BodyHead, SeqNet=SeqNet, ConvNet=ConvNet, loader=loader, brute_jacobian=brute_jacobian,
        brute_ggn=brute_ggn, trainable_names=trainable_names,
    )
