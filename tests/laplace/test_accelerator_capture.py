"""Curvature capture on an accelerator (a GPU, or tests/virtual_device.py) gives the CPU's numbers, on the device.

Each test runs the same computation on the CPU and on the ``accelerator`` fixture and compares the values (bit-equal
on the virtual device; a real GPU rounds float64 differently, hence the small tolerances). Covered: ``fit`` with GGN
and Fisher, classification and regression, for parameters captured by ``torch.func`` (Conv2d, LayerNorm:
:func:`~bayespeft.laplace.capture.func_jacobians`) and by hooks (Linear: :class:`LinearTaps`, including a tapped
Linear whose output the logits ignore, whose gradients :func:`batched_grads` fills with zeros); the KFAC collector
(dense, low-rank, bias-only factors); the GLM predictive (Jacobian cotangents, probit and MC links) and the
predictive helpers ``mc_link_probs`` / ``as_batch``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bayespeft.laplace as L
from bayespeft.laplace.predictive import as_batch, mc_link_probs

TOL = dict(rtol=1e-9, atol=1e-11)


class Mixed(nn.Module):
    """Conv2d -> LayerNorm (torch.func path) -> Linear ``head`` (hooks); ``side`` is a Linear the logits ignore."""

    def __init__(self, d_out: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, d_out)
        self.side = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x).flatten(1))
        self.side(h)  # tapped, but no path to the logits: zero output gradients
        return self.head(h)


class TwoLinear(nn.Module):
    """Linear(4, 6) -> tanh -> Linear(6, 3), plus an ignored Linear ``side`` (KFAC structures)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)
        self.side = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.body(x))
        self.side(h)
        return self.head(h)


def _data(likelihood: str, shape: tuple[int, ...]):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(10, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g) if likelihood == "classification" else torch.randn(10, 3, generator=g, dtype=torch.float64)
    return X, y


def _loader(X, y):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)


def _both(make, X, y, device, **fit_kwargs):
    """The same ``fit`` with the model on the CPU and on ``device`` (the loader's batches stay on the CPU)."""
    torch.manual_seed(0)
    net = make().double()
    cpu = L.fit(copy.deepcopy(net), _loader(X, y), progress=False, **fit_kwargs)
    acc = L.fit(copy.deepcopy(net).to(device), _loader(X, y), progress=False, **fit_kwargs)
    return cpu, acc


def _same_posterior(cpu, acc, device):
    assert acc.structure.device == device and acc.mean.device == device
    P = acc.precision()
    assert P.device == device
    torch.testing.assert_close(P.cpu(), cpu.precision(), **TOL)
    assert acc.loss == pytest.approx(cpu.loss, rel=1e-12) and acc.n_data == cpu.n_data
    torch.testing.assert_close(acc.log_marginal_likelihood().cpu(), cpu.log_marginal_likelihood(), **TOL)


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
@pytest.mark.parametrize("structure", ["diag", "full"])
def test_fit_of_func_and_hook_parameters_equals_the_cpu(accelerator, structure, curvature, likelihood):
    X, y = _data(likelihood, (1, 4, 4))
    cpu, acc = _both(Mixed, X, y, accelerator, structure=structure, curvature=curvature, likelihood=likelihood)
    _same_posterior(cpu, acc, accelerator)
    want = cpu.predict(X[:5], method="glm")
    got = acc.predict(X[:5].to(accelerator), method="glm")  # cotangents(..., "jacobian") on the device
    for g, w in zip(got if likelihood == "regression" else [got], want if likelihood == "regression" else [want]):
        assert g.device == accelerator
        torch.testing.assert_close(g.cpu(), w, **TOL)


@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
@pytest.mark.parametrize(
    "structure, subset, options",
    [
        ("kfac", "all", {}),
        ("kfac", ["body.bias", "head.weight", "head.bias"], {}),  # body: a bias-only (1 x 1) A factor
        ("lowrank_kfac", "all", {"n_kfac": 2, "lr_threshold": 3}),
    ],
)
def test_kfac_collector_on_the_device_equals_the_cpu(accelerator, structure, subset, options, curvature):
    X, y = _data("classification", (4,))
    cpu, acc = _both(TwoLinear, X, y, accelerator, structure=structure, subset=subset, curvature=curvature, **options)
    _same_posterior(cpu, acc, accelerator)
    factors = {k: t for k, t in acc.structure.state_tensors().items() if k.endswith((".A", ".G"))}  # not the counts
    assert len(factors) == 2 * len(acc.structure.factors) and {t.device for t in factors.values()} == {accelerator}


@pytest.mark.parametrize("link", ["probit", "mc"])
def test_glm_predictive_links_on_the_device_equal_the_cpu(accelerator, link):
    X, y = _data("classification", (4,))
    cpu, acc = _both(TwoLinear, X, y, accelerator, structure="kfac")
    want = cpu.predict(X, method="glm", link=link, n_samples=50, generator=torch.Generator().manual_seed(4))
    got = acc.predict(X.to(accelerator), method="glm", link=link, n_samples=50, generator=torch.Generator().manual_seed(4))
    assert got.device == accelerator
    torch.testing.assert_close(got.cpu(), want, **TOL)


def test_mc_link_draws_on_the_cpu_generator_even_under_a_device_default(accelerator):
    """The noise comes from a CPU generator whatever the default device (``with torch.device(...)``), then moves."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 3, dtype=torch.float64, generator=g)
    A = torch.randn(4, 3, 3, dtype=torch.float64, generator=g)
    cov = A @ A.mT + 0.1 * torch.eye(3, dtype=torch.float64)
    want = mc_link_probs(f, cov, 64, torch.Generator().manual_seed(5))
    with torch.device(accelerator):
        got = mc_link_probs(f.to(accelerator), cov.to(accelerator), 64, torch.Generator().manual_seed(5))
    assert got.device == accelerator
    torch.testing.assert_close(got.cpu(), want, **TOL)


def test_as_batch_puts_the_dummy_labels_next_to_the_inputs(accelerator):
    x = torch.randn(5, 4, device=accelerator)
    for batch, labels in [(as_batch(x), lambda b: b[1]), (as_batch({"pixel_values": x}), lambda b: b["labels"])]:
        y = labels(batch)
        assert y.device == accelerator and y.dtype == torch.long and y.shape == (5,)
        assert y.cpu().tolist() == [0] * 5
