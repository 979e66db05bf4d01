"""Seeded determinism for every sampler; schedule formulas (step formulas: ``test_step_formulas.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from bayespeft.sgmcmc import SAMPLERS, build
from bayespeft.sgmcmc.schedules import Cyclical, Polynomial

torch.set_num_threads(1)


def lp(theta, batch):
    return -0.5 * (theta["a"] ** 2).sum() - 0.5 * ((theta["b"] - 1.0) ** 2).sum()


def chain(name, seed, steps=20):
    s = build(name, lp, lr=0.05, temperature=1.0, seed=seed)
    theta0 = {"a": torch.zeros(3), "b": torch.ones(2, 2)}
    state = s.init(theta0)
    out = []
    for _ in range(steps):
        state = s.step(state, None)
        out.append(torch.cat([state.params["a"].detach().flatten(), state.params["b"].detach().flatten()]))
    assert torch.equal(theta0["a"], torch.zeros(3))  # init clones: caller's tensors untouched
    return torch.stack(out)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_same_seed_same_chain_different_seed_different(name):
    assert torch.equal(chain(name, 7), chain(name, 7))
    assert not torch.allclose(chain(name, 7), chain(name, 8))


def test_exploration_step_has_no_noise():
    sched = Cyclical(lr0=0.1, total_steps=10, cycles=1, exploration_fraction=0.5)
    s = build("sgld", lambda th, b: -0.5 * (th**2).sum(), lr=sched, seed=0)
    state = s.step(s.init(torch.tensor([2.0])), None)  # t = 0: exploration, lr = 0.1
    torch.testing.assert_close(state.params.detach(), torch.tensor([2.0 - 0.1 * 2.0]))


def test_schedule_formulas():
    p = Polynomial(a=0.5, b=10.0, gamma=0.55)
    assert p.lr(5) == pytest.approx(0.5 * 15**-0.55)
    c = Cyclical(lr0=1.0, total_steps=100, cycles=4, exploration_fraction=0.25)
    assert c.period == 25 and c.lr(0) == 1.0 and c.lr(25) == 1.0
    assert c.lr(12) == pytest.approx(0.5 * (math.cos(math.pi * 12 / 25) + 1))
    assert not c.noise(6) and c.noise(7) and c.sampling(24) and not c.sampling(25)
    with pytest.raises(ValueError, match="cycles must be an integer >= 1"):
        Cyclical(lr0=1.0, total_steps=10, cycles=0)


@pytest.mark.parametrize("kw,match", [({"temperature": 0.0}, "temperature must be"), ({"lr": -1.0}, "lr must be"),
                                      ({"rho": -0.1}, "rho must be")])
def test_build_rejects_bad_values(kw, match):
    args = {"lr": 0.1, **kw}
    with pytest.raises(ValueError, match=match):
        build("sam_sgld", lp, **args)
