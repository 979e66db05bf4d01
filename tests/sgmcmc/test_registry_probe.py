"""Sampler registry and ``build`` binding (``functools.partial``), and the network probe diagnostics (``sgmcmc/probe.py``)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bayespeft.sgmcmc import SAMPLERS, build, sampler_options
from bayespeft.sgmcmc.probe import ProbeDiagnostics, probe_batch
from bayespeft.sgmcmc.schedules import Constant

torch.set_num_threads(1)

OPTIONS = {  # non-default values of every option, so a binding that drops one is seen
    "sgld": {}, "psgld": {"alpha": 0.5, "eps": 1e-3}, "asgld": {"a": 0.7, "beta1": 0.5, "beta2": 0.8, "eps": 1e-2},
    "sghmc": {"friction": 0.4, "noise_estimate": 0.1}, "sam_sgld": {"rho": 0.3},
    "sam_sgld_r1": {"rho": 0.3, "rank1_scale": 0.6},
}


def log_prob(theta, batch):
    return -0.5 * (theta * theta).sum() - (theta**4).sum()


def test_every_registered_sampler_is_its_modules_build() -> None:
    assert SAMPLERS.names() == sorted(OPTIONS)
    for name in OPTIONS:
        module = importlib.import_module(f"bayespeft.sgmcmc.{name}")
        assert SAMPLERS.get(name) is module.build
        assert set(sampler_options(name)) == set(OPTIONS[name])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_built_step_and_init_bind_every_option_and_the_seed(name: str) -> None:
    """The built sampler equals the module's ``init``/``step`` called with every option spelled out."""
    module = importlib.import_module(f"bayespeft.sgmcmc.{name}")
    opts = OPTIONS[name]
    s = build(name, log_prob, lr=0.01, temperature=0.5, seed=11, **opts)
    assert s.hyperparameters == {"temperature": 0.5, **opts}
    theta0 = torch.tensor([0.3, -1.2, 0.8])
    direct = module.init(theta0, seed=11)
    built = s.init(theta0)  # the build seed
    other = s.init(theta0, seed=12)
    for _ in range(3):
        direct = module.step(direct, None, log_prob=log_prob, schedule=Constant(0.01), temperature=0.5, **opts)
        built = s.step(built, None)
        other = s.step(other, None)
    assert torch.equal(built.params, direct.params)
    assert not torch.equal(other.params, direct.params)  # seed=12 overrides the build seed


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"sampler 'psgld' has no option\(s\) \['rho'\]; allowed options: \['alpha', 'eps'\]"):
        build("psgld", log_prob, lr=0.1, rho=0.1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(x))


def test_probe_scalars_by_hand_with_substituted_parameters_in_eval_mode() -> None:
    model = Net().train()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    params = {"lin.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(2)),
              "lin.bias": torch.randn(4, generator=torch.Generator().manual_seed(3))}
    probe = ProbeDiagnostics(model, (x, y), n_projections=2, seed=5)
    out = probe(params)
    assert model.training  # mode restored
    logp = F.log_softmax(x @ params["lin.weight"].T + params["lin.bias"], -1)[torch.arange(6), y]  # no dropout
    flat = torch.cat([params["lin.weight"].reshape(-1), params["lin.bias"]])
    assert out["loglik"] == pytest.approx(float(logp.mean()), rel=1e-6)
    assert out["param_norm"] == pytest.approx(float(flat.norm()), rel=1e-6)
    for k in range(2):
        d = torch.randn(16, generator=torch.Generator().manual_seed(5 * 1_000_003 + k))
        assert out[f"proj_{k}"] == pytest.approx(float(d @ flat) / math.sqrt(16), rel=1e-5)
    assert out["true_class_prob"] == pytest.approx(logp.exp().tolist(), rel=1e-6)


def test_probe_batch_takes_the_first_examples_across_batches() -> None:
    batches = [{"x": torch.arange(4) + 4 * i, "labels": torch.zeros(4)} for i in range(3)]
    got = probe_batch(batches, 6)
    assert got["x"].tolist() == [0, 1, 2, 3, 4, 5]
    pairs = [(torch.arange(4) + 4 * i, torch.zeros(4)) for i in range(3)]
    assert probe_batch(pairs, 5)[0].tolist() == [0, 1, 2, 3, 4]
