"""Schedule validation at its boundaries, its messages, and ``build_schedule`` (tests/MUTATION.md, third pass).

``test_determinism_schedules.py`` checks the formulas on valid schedules; the limits of the valid ranges (``γ = 1``,
``exploration_fraction = 0``, ``total_steps = cycles``, a zero / infinite / NaN step size) and the messages that
name the bad option were free to change, and ``build_schedule`` (the config path) was only reached through whole
sampling runs.
"""

from __future__ import annotations

import math
import re

import pytest

from bayespeft.registry import UnknownNameError
from bayespeft.sgmcmc.schedules import SCHEDULES, Constant, Cyclical, Polynomial, build_schedule


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.inf, math.nan, "0.1"])
@pytest.mark.parametrize(("make", "name"), [
    (lambda v: Constant(v), "lr"),
    (lambda v: Cyclical(v, total_steps=4), "lr"),
    (lambda v: Polynomial(a=v), "polynomial a"),
    (lambda v: Polynomial(a=1.0, b=v), "polynomial b"),
])
def test_positive_finite_numbers_named_in_the_message(make, name, bad):
    with pytest.raises(ValueError, match="^" + re.escape(f"{name} must be a finite number > 0, got {bad!r}") + "$"):
        make(bad)


def test_polynomial_gamma_range_is_half_open():
    assert Polynomial(a=1.0, gamma=1).lr(3) == pytest.approx(1 / 4)  # γ = 1 allowed: ε_3 = 1 / (1 + 3)
    for bad in (0, 0.0, 1.5, 2.0, -0.5):
        with pytest.raises(ValueError, match=re.escape(
                f"polynomial gamma must lie in (0, 1] (Welling & Teh use (0.5, 1]), got {bad!r}")):
            Polynomial(a=1.0, gamma=bad)


def test_cyclical_limits():
    one = Cyclical(1.0, total_steps=3, cycles=3)  # total_steps == cycles: one step per cycle
    assert one.period == 1 and [one.lr(t) for t in range(3)] == [1.0, 1.0, 1.0]
    explore_none = Cyclical(1.0, total_steps=4, cycles=1, exploration_fraction=0)
    assert all(explore_none.noise(t) and explore_none.sampling(t) for t in range(4))
    with pytest.raises(ValueError, match=r"^total_steps \(2\) must be >= cycles \(3\)$"):
        Cyclical(1.0, total_steps=2, cycles=3)
    for bad in (1, 1.0, 1.5, 2, -0.1):
        with pytest.raises(ValueError, match=re.escape(f"exploration_fraction must lie in [0, 1), got {bad!r}")):
            Cyclical(1.0, total_steps=4, exploration_fraction=bad)


def test_constant_and_polynomial_always_sample_with_noise():
    for s in (Constant(0.1), Polynomial(a=0.1)):
        assert all(s.noise(t) and s.sampling(t) for t in (0, 1, 7))


def test_build_schedule_by_name():
    assert build_schedule("constant", 0.3, 10) == Constant(0.3)
    assert build_schedule("polynomial", 0.3, 10, b=2.0, gamma=0.75) == Polynomial(a=0.3, b=2.0, gamma=0.75)
    assert build_schedule("cyclical", 0.3, 10, cycles=2, exploration_fraction=0.25) == Cyclical(
        lr0=0.3, total_steps=10, cycles=2, exploration_fraction=0.25)
    with pytest.raises(UnknownNameError, match="unknown schedule 'cyclic'. Did you mean 'cyclical'?"):
        build_schedule("cyclic", 0.3, 10)


def test_build_schedule_of_a_registered_class_passes_lr_and_options(monkeypatch):
    class Halving(Constant):
        def __init__(self, lr0, factor):
            object.__setattr__(self, "lr0", lr0 * factor)

    monkeypatch.setitem(SCHEDULES._items, "halving", Halving)
    s = build_schedule("halving", 0.3, 10, factor=0.5)
    assert type(s) is Halving and s.lr(0) == 0.15
