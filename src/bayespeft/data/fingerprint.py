"""A content fingerprint of an evaluation split: which examples, exactly, a result was measured on.

For a map-style dataset of ``N`` items (dicts of tensors, e.g. ``{"input_ids": (L_i,), "attention_mask": (L_i,),
"labels": ()}`` or ``{"pixel_values": (C, H, W), "labels": ()}``) the fingerprint is

.. math::  \\mathrm{SHA256}\\big(N \\,\\Vert\\, e(x_0) \\,\\Vert\\, \\dots \\,\\Vert\\, e(x_{N-1})\\big)[:16]

where ``e`` encodes an item with its keys in sorted order, each tensor as ``key, dtype, shape, raw bytes``. It
depends on what the model sees (inputs after tokenisation / the image pipeline, labels) and their order, never on
where the files lie or on the batch size: a copy of the same data in another directory, or the same split read
from the hub, has the same fingerprint; one edited question or label gives another. Computed once per split (one
pass over the items, no model). Image datasets hash their stored images, labels and pipeline settings instead
(``fingerprint_parts``, :func:`dataset_fingerprint`): the same guarantees, without resizing every image.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

#: hex characters kept (64 bits: collisions between two splits are not a practical concern).
LENGTH = 16


def _update(h: "hashlib._Hash", name: str, v: Any) -> None:
    """Feed one value of an item (tensor, number/string, or a nested dict/list of them) into ``h``."""
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(v, dict):
        for k in sorted(v):
            _update(h, f"{name}.{k}", v[k])
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _update(h, f"{name}[{i}]", x)
    else:
        h.update(f"{name}|{type(v).__name__}|{v!r}|".encode())


def dataset_fingerprint(dataset: Any) -> str:
    """The content fingerprint (:data:`LENGTH` hex characters) of a map-style ``dataset`` (module docstring).

    A dataset with a ``fingerprint_parts()`` method (e.g. :class:`bayespeft.data.images.ImageDataset`: stored images,
    labels, pipeline settings) is hashed from what it returns instead of item by item."""
    h = hashlib.sha256()
    n = len(dataset)
    h.update(f"n={n}|".encode())
    parts = getattr(dataset, "fingerprint_parts", None)
    if callable(parts):
        _update(h, "parts", parts())
    else:
        for i in range(n):
            _update(h, "", dataset[i])
    return h.hexdigest()[:LENGTH]
