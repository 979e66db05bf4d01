"""The batched-chains helpers on their own (tests/MUTATION.md, third pass, ``sgmcmc/vectorized.py``).

``test_vectorized.py`` runs whole chains with equal-shaped batches of a ``ModelLogProb``; the per-chain fallback for
batches of different shapes, a plain ``log_prob`` function, a single chain, a batch with a non-tensor leaf and the
logged reasons were free to change. References: the gradient of ``log p(θ, b) = -Σ b_i θ_i²`` written out
(``-2 b ⊙ θ`` summed over the batch rows).
"""

from __future__ import annotations

import pytest
import torch

from bayespeft.sgmcmc.base import init_state
from bayespeft.sgmcmc.vectorized import StackedGradient, sequential_reason, stack_batches


def test_sequential_reasons():
    assert sequential_reason(False, "sgld", 4, False) == "sgmcmc.vectorize_chains is false"
    assert sequential_reason("false", "sgld", 4, False) == "sgmcmc.vectorize_chains is false"
    assert sequential_reason("auto", "sgld", 1, False) == "a single chain"
    assert sequential_reason(True, "sghmc", 3, True) == "resume continues the chains one at a time"
    assert sequential_reason(True, "sam_sgld", 3, False).startswith("sampler 'sam_sgld' is not elementwise")
    assert sequential_reason("auto", "psgld", 2, False) is None


def test_stack_batches_single_chain_and_non_tensor_leaves():
    one = stack_batches([{"x": torch.ones(2, 3), "y": torch.zeros(2)}])
    assert one["x"].shape == (1, 2, 3) and one["y"].shape == (1, 2)
    assert stack_batches([{"x": torch.ones(2), "n": 3}, {"x": torch.ones(2), "n": 3}]) is None
    assert stack_batches([{"x": torch.ones(2)}, {"x": torch.ones(3)}, {"x": torch.ones(2)}]) is None


def _log_prob(theta, batch):
    return -(batch * theta**2).sum()


def _expected_grad(theta, batch):
    return -2 * batch.sum(0) * theta


@pytest.mark.parametrize("rows", [(2, 2), (1, 3)], ids=["batched", "per-chain-fallback"])
def test_stacked_gradient_of_a_plain_function(rows):
    states = [init_state(torch.tensor([1.0, -2.0]) * (c + 1), 0) for c in range(2)]
    batches = [torch.arange(1.0, 1.0 + 2 * r).reshape(r, 2) for r in rows]
    values, grads = StackedGradient(_log_prob)(states, batches)
    for c in range(2):
        theta = states[c].leaves[0].detach()
        assert values[c].item() == pytest.approx(_log_prob(theta, batches[c]).item())
        torch.testing.assert_close(grads[c][0], _expected_grad(theta, batches[c]))


def test_stacked_gradient_of_one_chain():
    state = init_state(torch.tensor([0.5, 3.0]), 0)
    batch = torch.tensor([[1.0, 2.0]])
    values, grads = StackedGradient(_log_prob)([state], [batch])
    assert values.shape == (1,) and values[0].item() == pytest.approx(-(0.25 + 18.0))
    torch.testing.assert_close(grads[0][0], _expected_grad(state.leaves[0].detach(), batch))


def test_per_chain_fallback_gives_zero_gradients_for_unused_parameters():
    states = [init_state({"a": torch.tensor([1.0, 2.0]), "unused": torch.ones(3)}, 0) for _ in range(2)]
    batches = [torch.ones(1, 2), torch.ones(2, 2)]  # different shapes: per-chain gradients
    _, grads = StackedGradient(lambda p, b: -(b * p["a"] ** 2).sum())(states, batches)
    for c, rows in enumerate((1, 2)):
        torch.testing.assert_close(grads[c][0], -2 * rows * torch.tensor([1.0, 2.0]))
        assert torch.equal(grads[c][1], torch.zeros(3))
