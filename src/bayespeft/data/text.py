"""Pre-tokenised text datasets and the tokenisation helper shared by the text dataset modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..progress import progress

#: encodings kept from the tokenizer output (anything else, e.g. offsets, is dropped).
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_CHUNK = 2048


class TokenizedDataset(Dataset):
    """Rows of pre-tokenised examples -> ``{"input_ids": (L_i,), "attention_mask": (L_i,), ["token_type_ids"],
    "labels": long}``; variable lengths, padded per batch by :class:`bayespeft.data.collate.Collator`."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: Sequence[int], indices: Sequence[int] | np.ndarray | None = None) -> None:
        n = len(labels)
        for key, rows in encodings.items():
            if len(rows) != n:
                raise ValueError(f"encoding {key!r} has {len(rows)} rows but there are {n} labels")
        self.encodings, self.labels = encodings, torch.as_tensor(list(labels), dtype=torch.long)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = int(self.indices[i])
        item = {k: torch.tensor(rows[idx], dtype=torch.long) for k, rows in self.encodings.items()}
        item["labels"] = self.labels[idx]
        return item

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this split, (len(self),) long."""
        return self.labels[torch.as_tensor(self.indices)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenizedDataset:
        """A view on rows ``self.indices[indices]`` sharing the encodings."""
        return TokenizedDataset(self.encodings, self.labels.tolist(), self.indices[np.asarray(indices, dtype=np.int64)])


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    max_length: int,
    truncation_side: Literal["right", "left"] = "right",
    desc: str = "tokenize",
) -> tuple[dict[str, list[list[int]]], int]:
    """Tokenise ``texts`` (or sentence pairs) with truncation to ``max_length`` tokens, no padding.

    ``truncation_side="left"`` drops tokens from the start (keeps the end of a prompt such as "...Answer:");
    pairs use the "longest_first" strategy. Returns ``(encodings, n_truncated)`` where encodings maps each of
    :data:`TEXT_KEYS` the tokenizer produces to per-example lists of ids and ``n_truncated`` counts examples
    longer than ``max_length`` before truncation.
    """
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} first sentences but {len(pairs)} second sentences")
    old_side = getattr(tokenizer, "truncation_side", "right")
    out: dict[str, list[list[int]]] = {}
    n_truncated = 0
    starts = range(0, len(texts), _CHUNK)
    try:
        tokenizer.truncation_side = truncation_side
        for s in progress(starts, desc=desc, total=len(starts)):
            a = list(texts[s : s + _CHUNK])
            b = None if pairs is None else list(pairs[s : s + _CHUNK])
            full = tokenizer(a, b, truncation=False, verbose=False)["input_ids"]
            n_truncated += sum(len(ids) > max_length for ids in full)
            enc = tokenizer(a, b, truncation=True, max_length=max_length)
            for key in TEXT_KEYS:
                if key in enc:
                    out.setdefault(key, []).extend(list(map(list, enc[key])))
    finally:
        tokenizer.truncation_side = old_side
    if "attention_mask" not in out and "input_ids" in out:  # every model here reads the mask
        out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
    return out, n_truncated
