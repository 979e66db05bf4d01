"""What a backbone expects as input (:class:`InputSpec`): produced by ``bayespeft.models`` (``model.input_spec``) and
consumed by ``bayespeft.data`` (which shapes, normalises and tokenises its datasets to match). It lives outside both
packages so that neither has to import the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class InputSpec:
    """Input contract of a backbone.

    kind: "image" -> datasets yield ``pixel_values`` float tensors of shape (C, H, W) with H = W = image_size,
          normalised with ``mean``/``std`` (one value per channel, len == in_chans).
          "text" -> datasets yield ``input_ids`` (+ ``attention_mask``, maybe ``token_type_ids``) produced by
          ``tokenizer`` (a Hugging Face tokenizer, with a pad token set), truncated to ``max_length``; the
          collate function pads on the right with ``tokenizer.pad_token_id``.
    """

    kind: Literal["image", "text"]
    image_size: int | None = None
    in_chans: int | None = None
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)
    tokenizer: Any = None
    max_length: int = 128
