"""The samplers' shared checks and state set-up at their boundaries (tests/MUTATION.md, third pass).

The sampler tests pass valid options; the edges of the option ranges (``a = 0`` allowed, ``friction = 1`` allowed,
``beta1 = 1`` refused, an infinite value refused), the bracket in each message, and ``init_state``'s refusals
(empty, integer or mixed-dtype ``theta0``, a ``log_prob`` that is not 0-dim) were free to change.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from bayespeft.sgmcmc.asgld import ASGLDState
from bayespeft.sgmcmc import build
from bayespeft.sgmcmc.base import check_positive, check_unit_interval, init_state, sam_point, value_and_grad
from bayespeft.sgmcmc.schedules import Constant, Cyclical


def _refused(message, fn, *args, **kw):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        fn(*args, **kw)


def test_check_positive_bounds_and_messages():
    assert check_positive("a", 0, allow_zero=True) == 0.0 and check_positive("lr", 2) == 2.0
    _refused("lr must be a finite number > 0, got 0", check_positive, "lr", 0)
    _refused("a must be a finite number >= 0, got -1.0", check_positive, "a", -1.0, allow_zero=True)
    _refused("a must be a finite number >= 0, got inf", check_positive, "a", math.inf, allow_zero=True)
    _refused("a must be a finite number >= 0, got nan", check_positive, "a", math.nan, allow_zero=True)


def test_check_unit_interval_bounds_and_messages():
    assert check_unit_interval("beta1", 0) == 0.0  # default [0, 1)
    assert check_unit_interval("friction", 1, closed_low=False, closed_high=True) == 1.0
    for bad in (1, 1.5, -0.5):
        _refused(f"beta1 must lie in [0, 1), got {bad!r}", check_unit_interval, "beta1", bad)
    for bad in (0, 1.5, -0.5):
        _refused(f"friction must lie in (0, 1], got {bad!r}", check_unit_interval, "friction", bad,
                 closed_low=False, closed_high=True)
    _refused("x must lie in (0, 1), got 1", check_unit_interval, "x", 1, closed_low=False)
    _refused("x must lie in [0, 1], got 2", check_unit_interval, "x", 2, closed_high=True)


@pytest.mark.parametrize(("theta0", "message"), [
    ({}, "theta0 must be a tensor or a pytree (dict/list/tuple) of tensors"),
    ([torch.zeros(2), 1.0], "theta0 must be a tensor or a pytree (dict/list/tuple) of tensors"),
    (torch.zeros(2, dtype=torch.int64), "all parameters must share one floating dtype and one device, "
     "got dtypes {torch.int64}, devices {device(type='cpu')}"),
])
def test_init_state_refuses(theta0, message):
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        init_state(theta0, 0)


def test_init_state_refuses_mixed_dtypes():
    with pytest.raises(TypeError, match=r"^all parameters must share one floating dtype and one device, got dtypes"):
        init_state([torch.zeros(2), torch.zeros(2, dtype=torch.float64)], 0)


def test_init_state_zero_buffers_and_other_values():
    theta = {"w": torch.ones(2, 3), "b": torch.ones(3)}
    s = init_state(theta, 4, ASGLDState, exp_avg="zeros", exp_avg_sq=[torch.full((1,), 7.0)])
    assert [tuple(t.shape) for t in s.exp_avg] == [(2, 3), (3,)]  # shaped like the leaves, in tree order
    assert all(not t.requires_grad and not t.any() for t in s.exp_avg)
    assert s.exp_avg_sq[0].item() == 7.0  # a value other than "zeros" is kept as given
    assert s.step == 0 and s.log_prob.shape == () and math.isnan(s.log_prob.item())
    assert all(t.requires_grad for t in s.leaves)


def test_value_and_grad_needs_a_0_dim_log_prob():
    theta = torch.ones(2, requires_grad=True)
    _refused("log_prob must return a 0-dim tensor, got float ", value_and_grad, lambda p, b: 1.0, theta, [theta], None)
    _refused("log_prob must return a 0-dim tensor, got Tensor torch.Size([2])", value_and_grad,
             lambda p, b: 2 * p, theta, [theta], None)
    value, grads = value_and_grad(lambda p, b: (p * p).sum() * b, theta, [theta], 3.0)
    assert value.item() == 6.0 and grads[0].tolist() == [6.0, 6.0]


def test_value_and_grad_gives_zeros_for_leaves_log_prob_does_not_use():
    a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    _, grads = value_and_grad(lambda p, batch: (p[0] ** 2).sum(), [a, b], [a, b], None)
    assert grads[0].tolist() == [2.0, 2.0] and grads[1].tolist() == [0.0, 0.0, 0.0]


def test_sam_point_of_a_zero_gradient_is_the_point_itself():
    """``inv = -1 / (‖∇log_prob‖ + 1e-12)``: ``-1e12`` for a zero gradient, and ``θ̃ = θ``."""
    s = init_state(torch.tensor([0.5, -2.0], dtype=torch.float64), 0)
    pert, inv = sam_point(s, [torch.zeros(2, dtype=torch.float64)], rho=0.3)
    assert inv.item() == pytest.approx(-1e12, rel=1e-12)
    assert pert[0].tolist() == [0.5, -2.0] and pert[0].requires_grad


def test_built_sampler_records_its_name_and_schedule():
    s = build("psgld", lambda p, b: -(p * p).sum(), lr=0.2, alpha=0.5)
    assert s.name == "psgld" and s.schedule == Constant(0.2)
    c = Cyclical(0.2, total_steps=8)
    assert build("sgld", lambda p, b: -(p * p).sum(), lr=c).schedule is c
