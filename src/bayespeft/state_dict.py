"""How a saved set of tensors differs from what a model expects: the one missing/unexpected/shape-mismatch message.

Used by the training checkpoints (:mod:`bayespeft.train.checkpoint`), adapter checkpoints
(:mod:`bayespeft.adapters.checkpoint`) and backbone weight files (:mod:`bayespeft.models.weights`), so the three
report a mismatch in the same words: ``"2 missing keys (e.g. [...]), 1 unexpected keys (e.g. [...]),
1 shape mismatches (k: checkpoint (5, 32) vs model (4, 32))"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["describe_mismatch"]

#: At most this many names are quoted per kind of mismatch.
EXAMPLES = 5


def describe_mismatch(expected: Mapping[str, Sequence[int]], got: Mapping[str, Sequence[int]], *,
                      source: str = "checkpoint") -> str | None:
    """Describe how ``got`` (name -> shape, e.g. a file) differs from ``expected`` (name -> shape, the model).

    Returns ``None`` when the names and shapes agree, otherwise the comma-separated parts that apply:
    ``"N missing keys (e.g. [...])"`` (expected, not in ``got``), ``"N unexpected keys (e.g. [...])"`` (in ``got``
    only) and ``"N shape mismatches (name: <source> (..) vs model (..); ...)"``; names are sorted, at most
    :data:`EXAMPLES` quoted each. ``source`` names the side of ``got`` in the shape comparison (``"checkpoint"``,
    ``"file"``).
    """
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k}: {source} {tuple(got[k])} vs model {tuple(expected[k])}"
              for k in sorted(set(expected) & set(got)) if tuple(got[k]) != tuple(expected[k])]
    parts = []
    for n, what, names in ((len(missing), "missing keys", missing), (len(unexpected), "unexpected keys", unexpected)):
        if n:
            parts.append(f"{n} {what} (e.g. {names[:EXAMPLES]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:EXAMPLES])})")
    return ", ".join(parts) if parts else None
