"""Every sampler under a varying schedule and a batch-dependent target (tests/MUTATION.md, ``sgmcmc/*.py``).

``test_step_formulas.py`` checks each update with a constant step size and a target that ignores the batch, so a
sampler that read the schedule at the wrong step, or dropped the batch, still passed it. Here the schedule is a
one-cycle cSG-MCMC cosine with lr_t written out by hand (``lr0·(cos(π t/4) + 1)/2``, noise only in the second half),
and the batch is a weight ``w_t`` on the log-density (``∇ log p_t = w_t · ∇ log p``). The references are the
docstring formulas of ``test_step_formulas.py``, with ``lr_t``, ``w_t`` and noise drawn only on noisy steps.
"""

from __future__ import annotations

import importlib
import math
import typing

import pytest
import torch

from bayespeft.sgmcmc import SAMPLERS, build
from bayespeft.sgmcmc.schedules import Cyclical

torch.set_num_threads(1)

A = torch.tensor([[1.5, 0.4, 0.0, 0.2, 0.0], [0.4, 1.0, 0.3, 0.0, 0.0], [0.0, 0.3, 2.0, 0.1, 0.5],
                  [0.2, 0.0, 0.1, 0.8, 0.0], [0.0, 0.0, 0.5, 0.0, 1.2]], dtype=torch.float64)
B = torch.tensor([0.5, -1.0, 0.3, 0.0, 2.0], dtype=torch.float64)
X0 = torch.tensor([1.0, -0.5, 0.8, 1.5, -1.2], dtype=torch.float64)
LR0, T, SEED = 0.05, 0.7, 5
LRS = [LR0 * (math.cos(math.pi * t / 4) + 1) / 2 for t in range(4)]  # phase t/4 of a 4-step cycle
NOISY = [False, False, True, True]  # exploration_fraction 0.5
W = [1.0, 0.5, 2.0, 1.5]  # the batches


def log_prob_vec(x):
    return -0.5 * x @ A @ x - 0.25 * (x**4).sum() + B @ x


def grad(x):
    return -A @ x - x**3 + B


def log_prob_tree(theta, w):
    return w * log_prob_vec(torch.cat([theta["w"].reshape(-1), theta["v"]]))


def as_tree(x):
    return {"w": x[:4].reshape(2, 2).clone(), "v": x[4:].clone()}


def ref(name, x, draws, **o):
    m = V = v = None
    for t, (lr, w) in enumerate(zip(LRS, W)):
        g = w * grad(x)
        xi = draws[t]
        if name == "sgld":
            x = x + lr * g + (math.sqrt(2 * lr * T) * xi if xi is not None else 0)
        elif name == "psgld":
            V = g * g if V is None else o["alpha"] * V + (1 - o["alpha"]) * g * g
            G = 1.0 / (o["eps"] + V.sqrt())
            x = x + lr * G * g + ((2 * lr * T * G).sqrt() * xi if xi is not None else 0)
        elif name == "asgld":
            m = (1 - o["beta1"]) * g if m is None else o["beta1"] * m + (1 - o["beta1"]) * g
            V = (1 - o["beta2"]) * g * g if V is None else o["beta2"] * V + (1 - o["beta2"]) * g * g
            x = x + lr * (g + o["a"] * m / (V + o["eps"]).sqrt()) + (math.sqrt(2 * lr * T) * xi if xi is not None else 0)
        elif name == "sghmc":
            v = torch.zeros_like(x) if v is None else v
            noise = math.sqrt(2 * (o["friction"] - o["noise_estimate"]) * lr * T) * xi if xi is not None else 0
            v = (1 - o["friction"]) * v + lr * g + noise
            x = x + v
        else:  # sam_sgld, sam_sgld_r1: gradient at θ + ρ ∇U/‖∇U‖ of the same batch
            u = -g / g.norm()
            g_sam = w * grad(x + o["rho"] * u)
            x = x + lr * g_sam
            if xi is not None:
                c = math.sqrt(2 * lr * T)
                x = x + c * (xi[:-1] + o["rank1_scale"] * xi[-1] * u if name == "sam_sgld_r1" else xi)
    return x


OPTIONS = {
    "sgld": {}, "psgld": {"alpha": 0.5, "eps": 0.1},
    "asgld": {"a": 1.0, "beta1": 0.6, "beta2": 0.8, "eps": 0.05},  # a = 1 exactly: the drift must still be on
    "sghmc": {"friction": 0.3, "noise_estimate": 0.1},
    "sam_sgld": {"rho": 0.4}, "sam_sgld_r1": {"rho": 0.4, "rank1_scale": 1.3},
}


def test_options_cover_every_sampler():
    assert set(OPTIONS) == set(SAMPLERS.names())


CASES = [(n, OPTIONS[n], OPTIONS[n]) for n in sorted(OPTIONS)] + [
    ("sam_sgld_r1", {"rho": 0.4}, {"rho": 0.4, "rank1_scale": 1.0}),  # the default rank-1 scale is 1 (and is used)
    ("sam_sgld_r1", {"rho": 0.4, "rank1_scale": 0.0}, {"rho": 0.4, "rank1_scale": 0.0}),
]


@pytest.mark.parametrize(("name", "opts", "ref_opts"), CASES)
def test_schedule_step_and_batch_reach_the_update(name, opts, ref_opts):
    schedule = Cyclical(LR0, total_steps=4, cycles=1, exploration_fraction=0.5)
    assert [schedule.lr(t) for t in range(4)] == pytest.approx(LRS, rel=1e-15)
    assert [schedule.noise(t) for t in range(4)] == NOISY
    s = build(name, log_prob_tree, lr=schedule, temperature=T, seed=SEED, **opts)
    state = s.init(as_tree(X0))
    for w in W:
        state = s.step(state, w)
    g = torch.Generator().manual_seed(SEED)
    size = X0.numel() + (name == "sam_sgld_r1")
    draws = [torch.empty(size, dtype=torch.float64).normal_(generator=g) if n else None for n in NOISY]
    got = torch.cat([state.params["w"].detach().reshape(-1), state.params["v"].detach()])
    torch.testing.assert_close(got, ref(name, X0.clone(), draws, **ref_opts), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_module_init_defaults_to_seed_0_and_its_state_class(name):
    """The module-level ``init(theta0, seed=0)`` (``Sampler.init`` always passes the build seed)."""
    mod = importlib.import_module(f"bayespeft.sgmcmc.{name}")
    state = mod.init(as_tree(X0))
    assert state.rng.initial_seed() == 0
    assert type(state) is typing.get_type_hints(mod.init)["return"]
    assert type(state).__name__.endswith("State") and type(state).__module__ == mod.__name__
