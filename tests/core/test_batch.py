"""``last_token_index``: the one "last non-padding position" (used by ChoiceLM and bayesian_lora's jacobian_mean)."""

from __future__ import annotations

import pytest
import torch

from bayespeft.batch import last_token_index
from bayespeft.models.task import ChoiceLM


def brute(mask: torch.Tensor) -> list[int]:
    return [max(t for t in range(len(row)) if row[t]) for row in mask.tolist()]


def test_right_padded() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 0]


def test_left_padded_and_bool_masks() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [4, 4, 4]
    assert last_token_index(mask.bool()).tolist() == [4, 4, 4]


def test_random_masks_against_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(50, 9, generator=gen) < 0.4).long()
    mask[:, 0] = 1  # every row has a token
    assert last_token_index(mask).tolist() == brute(mask)


def test_rows_without_tokens_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="at least one non-pad token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        last_token_index(torch.ones(2, 3, 4))


def test_choice_lm_uses_the_same_function() -> None:
    assert ChoiceLM.last_positions is last_token_index
