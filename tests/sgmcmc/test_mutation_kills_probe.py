"""Mutation kills for ``sgmcmc/probe.py`` (tests/MUTATION.md, fifth pass).

Independent answers: the probe scalars written out by hand (``x Wᵀ + b``, log-softmax, ``⟨d_k, θ⟩ / sqrt(P)`` with
``d_k`` drawn as float32 normals from ``Generator().manual_seed(seed · 1_000_003 + k)``, the module docstring), and a
loader that counts the batches it hands out.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bayespeft.sgmcmc.probe import ProbeDiagnostics, probe_batch

torch.set_num_threads(1)


class Counted:
    """A loader of ``n_batches`` batches of 4 examples that fails if more than ``allowed`` batches are read."""

    def __init__(self, n_batches: int, allowed: int, as_dict: bool) -> None:
        self.n_batches, self.allowed, self.as_dict, self.read = n_batches, allowed, as_dict, 0

    def __iter__(self):
        for i in range(self.n_batches):
            self.read += 1
            assert self.read <= self.allowed, f"batch {self.read} read, only {self.allowed} needed"
            x, y = torch.arange(4) + 4 * i, torch.full((4,), i)
            yield {"x": x, "labels": y} if self.as_dict else (x, y)


@pytest.mark.parametrize("as_dict", [True, False])
@pytest.mark.parametrize(("size", "needed"), [(6, 2), (8, 2), (4, 1), (9, 3)])
def test_probe_batch_reads_only_the_batches_it_needs(as_dict: bool, size: int, needed: int) -> None:
    """``size`` examples from batches of 4 need ``ceil(size / 4)`` batches; the loader has 5 and refuses more."""
    loader = Counted(5, needed, as_dict)
    got = probe_batch(loader, size)
    assert loader.read == needed
    x, y = (got["x"], got["labels"]) if as_dict else got
    assert x.tolist() == list(range(size))
    assert y.tolist() == [i // 4 for i in range(size)]


class Lin(nn.Module):
    def __init__(self, d_in: int = 3, d_out: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _params(d_in: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"lin.weight": torch.randn(4, d_in, generator=g), "lin.bias": torch.randn(4, generator=g)}


def _proj(flat: torch.Tensor, seed: int, k: int) -> float:
    d = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(seed * 1_000_003 + k), dtype=torch.float32)
    return float(d @ flat.float()) / math.sqrt(flat.numel())


def _flat(p: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p["lin.weight"].reshape(-1), p["lin.bias"]])


def test_defaults_are_four_projections_seeded_by_zero() -> None:
    x, y = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0])
    p = _params(3, 2)
    out = ProbeDiagnostics(Lin(), (x, y))(p)
    assert sorted(out) == ["loglik", "param_norm", "proj_0", "proj_1", "proj_2", "proj_3", "true_class_prob"]
    for k in range(4):
        assert out[f"proj_{k}"] == pytest.approx(_proj(_flat(p), 0, k), rel=1e-5)


@pytest.mark.parametrize("n_projections", [0, 1])
def test_zero_and_one_projection(n_projections: int) -> None:
    x, y = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0])
    p = _params(3, 2)
    out = ProbeDiagnostics(Lin(), (x, y), n_projections=n_projections, seed=3)(p)
    assert sorted(k for k in out if k.startswith("proj_")) == [f"proj_{k}" for k in range(n_projections)]
    if n_projections:
        assert out["proj_0"] == pytest.approx(_proj(_flat(p), 3, 0), rel=1e-5)


def test_directions_follow_the_number_of_parameters_between_calls() -> None:
    """One probe called with all parameters (P = 16), then with the weight alone (P = 12; the module's own bias
    fills in), then with all again: each call projects on directions of its own length ``P``."""
    model = Lin()
    x, y = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0])
    probe = ProbeDiagnostics(model, (x, y), n_projections=2, seed=7)
    full = _params(3, 4)
    weight = {"lin.weight": full["lin.weight"]}
    outs = [probe(full), probe(weight), probe(full)]
    flats = [_flat(full), full["lin.weight"].reshape(-1), _flat(full)]
    for out, flat in zip(outs, flats):
        assert out["param_norm"] == pytest.approx(float(flat.norm()), rel=1e-6)
        for k in range(2):
            assert out[f"proj_{k}"] == pytest.approx(_proj(flat, 7, k), rel=1e-5)
    with torch.no_grad():
        logp = F.log_softmax(x @ full["lin.weight"].T + model.lin.bias, -1)[torch.arange(5), y]
    assert outs[1]["loglik"] == pytest.approx(float(logp.mean()), rel=1e-6)


def test_directions_are_float32_draws_whatever_the_default_dtype() -> None:
    """Under ``torch.set_default_dtype(torch.float64)`` the directions are still the float32 draws of the generator
    (float64 draws of the same generator are other numbers), so the projections of a run do not depend on it."""
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    p = {k: v.double() for k, v in _params(3, 2).items()}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = ProbeDiagnostics(Lin().double(), (x, y), n_projections=3, seed=2)(p)
    finally:
        torch.set_default_dtype(old)
    for k in range(3):
        assert out[f"proj_{k}"] == pytest.approx(_proj(_flat(p), 2, k), rel=1e-5)


class CountingNet(nn.Module):
    """Linear(3, 4) with dropout (must be off while probing) that counts its Python-level forward calls; with
    ``item=True`` its forward reads a value (``.item()``), which ``vmap`` cannot run."""

    def __init__(self, item: bool = False) -> None:
        super().__init__()
        self.lin, self.drop, self.item, self.calls = nn.Linear(3, 4), nn.Dropout(0.5), item, 0

    def forward(self, x):
        self.calls += 1
        h = self.lin(x)
        scale = 1.0 + 0.0 * float(h.abs().max().item()) if self.item else 1.0  # h depends on the (batched) params
        return self.drop(h) * scale


def _sets(net: CountingNet, k: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [{n: torch.randn(p.shape, generator=g) for n, p in net.named_parameters()} for _ in range(k)]


def _hand(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Mean log-likelihood of the probe under ``params`` written out (dropout off)."""
    logits = x @ params["lin.weight"].T + params["lin.bias"]
    return F.log_softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1).tolist()


@pytest.mark.parametrize("k", [2, 3])
def test_many_probes_several_sets_in_one_forward_with_each_sets_values(k):
    torch.manual_seed(0)
    net = CountingNet().train()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    probe = ProbeDiagnostics(net, (x, y), n_projections=2, seed=0)
    sets = _sets(net, k)
    out = probe.many(sets)
    assert net.calls == 1 and net.training  # one vmapped forward; the mode is restored
    for res, p in zip(out, sets):
        want = _hand(p, x, y)
        assert res["loglik"] == pytest.approx(sum(want) / len(want), abs=1e-5)
        assert res["true_class_prob"] == pytest.approx([math.exp(v) for v in want], abs=1e-5)


def test_many_of_one_set_is_that_sets_probe():
    net = CountingNet()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    probe = ProbeDiagnostics(net, (x, y), n_projections=1, seed=0)
    (p,) = _sets(net, 1)
    assert probe.many([p]) == [probe(p)] and probe.many([]) == []


def test_many_falls_back_to_one_forward_per_set_when_vmap_cannot_run_the_model():
    net = CountingNet(item=True)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    probe = ProbeDiagnostics(net, (x, y), n_projections=1, seed=0)
    sets = _sets(net, 3)
    out = probe.many(sets)
    assert net.calls == 1 + 3  # the failed vmapped call, then one per set
    for res, p in zip(out, sets):
        want = _hand(p, x, y)
        assert res["loglik"] == pytest.approx(sum(want) / len(want), abs=1e-5)
