"""The structure base class's helpers against hand-written answers (tests/MUTATION.md, ``laplace/base.py``).

The structures only ever called ``unflatten`` on single vectors, ``jacobian`` with the default forward function and
parameters in model order, and ``positive`` on spectra with ``max|λ| = 1``; a slip in any of those other cases passed
the suite. References: offsets summed by hand, ``torch.func.jacrev`` Jacobians (``conftest.brute_jacobian``), the
jitter rule ``1e-6 · max(max|λ|, 1)`` evaluated by hand.
"""

from __future__ import annotations

import inspect
import os
import warnings

import pytest
import torch

import bayespeft.laplace as L
from bayespeft.laplace.base import check_delta, positive

#: structure order != model order != alphabetical order; three parameters of different sizes (offsets from the third)
ORDER = ["head.weight", "body.0.bias", "head.bias"]
SHAPES = {"head.weight": (3, 5), "body.0.bias": (5,), "head.bias": (3,)}


def _structure(ref, dtype=torch.float64):
    torch.manual_seed(0)
    model = ref.MLP().to(dtype)
    named = dict(model.named_parameters())
    return model, L.STRUCTURES.get("diag")(model, [(n, named[n]) for n in ORDER])


def test_unflatten_batched_vectors_uses_running_offsets(ref):
    _, s = _structure(ref)
    d = 15 + 5 + 3
    vec = torch.arange(2 * 4 * d, dtype=torch.float64).reshape(2, 4, d)
    out = s.unflatten(vec)
    assert list(out) == ORDER
    starts = {"head.weight": 0, "body.0.bias": 15, "head.bias": 20}  # by hand
    for n in ORDER:
        k = torch.Size(SHAPES[n]).numel()
        expected = vec[..., starts[n]: starts[n] + k].reshape(2, 4, *SHAPES[n])
        assert out[n].shape == (2, 4, *SHAPES[n])
        assert torch.equal(out[n], expected)
    single = s.unflatten(vec[1, 2])
    assert torch.equal(single["head.bias"], vec[1, 2, 20:23])


def test_flatten_keeps_lead_dims_and_structure_order(ref):
    _, s = _structure(ref)
    g = torch.Generator().manual_seed(3)
    tensors = {n: torch.randn(2, 4, *SHAPES[n], generator=g, dtype=torch.float64) for n in reversed(ORDER)}
    flat = s.flatten(tensors, 2)
    assert flat.shape == (2, 4, 23)
    assert torch.equal(flat[1, 3, :15], tensors["head.weight"][1, 3].reshape(-1))
    assert torch.equal(flat[0, 2, 15:20], tensors["body.0.bias"][0, 2])
    assert torch.equal(flat[1, 0, 20:], tensors["head.bias"][1, 0])


def test_jacobian_in_structure_order_with_a_custom_forward(ref):
    model, s = _structure(ref)
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    f, J = s.jacobian(model, (X, y), lambda m, b: (2.0 * m(b[0]), b[1]))  # f = 2·model(x)  =>  J = 2·J_model
    torch.testing.assert_close(f, 2.0 * model(X).detach())
    torch.testing.assert_close(J, 2.0 * ref.brute_jacobian(model, X, ORDER), rtol=1e-10, atol=1e-12)


def test_jacobian_of_a_half_precision_model_is_float32(ref):
    model, s = _structure(ref, torch.bfloat16)
    X = torch.randn(3, 4, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    _, J = s.jacobian(model, (X, torch.zeros(3, dtype=torch.long)), lambda m, b: (m(b[0]), b[1]))
    assert s.dtype == torch.float32 and J.dtype == torch.float32


def test_positive_values_pass_unchanged_without_warning():
    v = torch.tensor([0.25, 0.5, 1e-12], dtype=torch.float64)  # all in (0, 1]: nothing to do
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = positive(v, "P")
    assert out is v


def _call_positive(values):
    return positive(values, "the test precision")


@pytest.mark.parametrize(("values", "jitter"), [
    ([0.0, 0.5, 0.25], 1e-6),            # a zero eigenvalue is jittered; max|λ| < 1: scale 1
    ([-1e-7, 10.0, 3.0], 1e-5),          # max|λ| = 10: jitter 1e-6·10
    ([-2e-7, 0.5], 1e-6),
])
def test_positive_jitters_by_1e_6_times_the_largest_magnitude(values, jitter):
    v = torch.tensor(values, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"the test precision is not positive definite \(min eigenvalue .*\); "
                                            r"adding jitter"):
        out = _call_positive(v)
    torch.testing.assert_close(out, v + jitter, rtol=0, atol=1e-18)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampoline adds a frame between the caller "
                    "and positive(), so the stack level cannot be checked on its mutants (tests/MUTATION.md)")
def test_positive_warning_points_at_the_caller_of_the_structure_method():
    """stacklevel=3: the warning names the line that called the structure method that called ``positive``."""
    with pytest.warns(RuntimeWarning) as rec:
        line = inspect.currentframe().f_lineno + 1
        _call_positive(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert [(w.filename, w.lineno) for w in rec] == [(__file__, line)]


def test_positive_refuses_what_jitter_cannot_fix_even_at_exactly_zero():
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="the test precision is not positive definite even after jitter"):
        positive(torch.tensor([-1.0, 2.0], dtype=torch.float64), "the test precision")
    # −1e-6 + 1e-6·max(1e-6, 1) is exactly 0: still not positive
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="even after jitter"):
        positive(torch.tensor([-1e-6, 1.0], dtype=torch.float64), "the test precision")


def test_check_delta_shapes_and_message():
    groups = [f"g{i}" for i in range(8)]
    one, per_group = torch.tensor([2.0]), torch.arange(1.0, 9.0)
    assert torch.equal(check_delta(one, 8, groups), torch.full((8,), 2.0))
    assert torch.equal(check_delta(per_group, 8, groups), per_group)
    for bad in (torch.tensor(2.0), torch.ones(2), torch.ones(1, 8), torch.ones(8, 1)):
        with pytest.raises(ValueError, match=r"one value per group \(8: \['g0', .*'g5'\]\.\.\.\), got shape") as e:
            check_delta(bad, 8, groups)
        assert "'g6'" not in str(e.value) and str(tuple(bad.shape)) in str(e.value)


def test_groups_follow_first_appearance_and_count_parameters(ref):
    """Groups = owning modules in first-appearance order: head (15 + 3 entries, not contiguous), body.0 (5)."""
    _, s = _structure(ref)
    assert s.groups == ["head", "body.0"]
    assert s.param_group.tolist() == [0] * 15 + [1] * 5 + [0] * 3
    assert s.group_sizes.dtype == torch.float64 and s.group_sizes.tolist() == [18.0, 5.0]
    assert s.device == torch.device("cpu") and s.d == 23
    torch.testing.assert_close(s.delta_vector(torch.tensor([2.0, 7.0], dtype=torch.float64)),
                               torch.tensor([2.0] * 15 + [7.0] * 5 + [2.0] * 3, dtype=torch.float64))


def test_unknown_options_are_named(ref):
    model = ref.MLP()
    with pytest.raises(TypeError, match=r"^structure 'diag' got unknown options \['bogus', 'zeta'\]$"):
        L.STRUCTURES.get("diag")(model, list(model.named_parameters()), zeta=1, bogus=2)
