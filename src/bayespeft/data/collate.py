"""One collate function for every dataset: stack fixed-shape tensors, right-pad variable-length token sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: keys padded with the tokenizer's pad id; every other variable-length key is padded with 0.
_PAD_WITH_TOKEN = ("input_ids",)


class Collator:
    """Batch a list of item dicts into a dict of tensors.

    Tensors of equal shape are stacked (``pixel_values`` -> (B, C, H, W), ``labels`` -> (B,)). 1-D tensors of
    different lengths (``input_ids``, ``attention_mask``, ``token_type_ids``) are padded on the RIGHT to the
    longest sequence in the batch -> (B, L_max): ``input_ids`` with ``pad_token_id``, the others with 0 (so the
    attention mask is 0 exactly on padding). Right padding is the convention the models rely on (the causal-LM
    multiple-choice head reads the last position with ``attention_mask == 1``).

    A class (not a closure) so that DataLoader worker processes can pickle it.
    """

    def __init__(self, pad_token_id: int | None = None) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        keys = items[0].keys()
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            values = [torch.as_tensor(item[key]) for item in items]
            if all(v.shape == values[0].shape for v in values):
                out[key] = torch.stack(values)
                continue
            if any(v.dim() != 1 for v in values):
                raise ValueError(f"cannot batch {key!r}: shapes differ ({sorted({tuple(v.shape) for v in values})}) and are not 1-D")
            pad = self._pad_value(key)
            out[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=pad, padding_side="right")
        return out

    def _pad_value(self, key: str) -> int:
        if key in _PAD_WITH_TOKEN:
            if self.pad_token_id is None:
                raise ValueError(f"{key!r} needs padding but the collator has no pad_token_id")
            return int(self.pad_token_id)
        return 0

    def __repr__(self) -> str:
        return f"Collator(pad_token_id={self.pad_token_id})"


def ensure_pad_token(tokenizer: Any) -> int:
    """Return ``tokenizer.pad_token_id``, setting ``pad_token = eos_token`` first when the tokenizer has none
    (GPT-2-style tokenizers). Padding positions are masked, so reusing eos as pad changes no model output."""
    if tokenizer is None:
        raise ValueError("text datasets need InputSpec.tokenizer (a Hugging Face tokenizer); the model spec has none")
    if tokenizer.pad_token_id is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad token nor an eos token; "
                "set tokenizer.pad_token before building text data"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return int(tokenizer.pad_token_id)
