"""Progress bars for every long loop (tqdm; silent when output is not a terminal or when disabled)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool | None = None, leave: bool = False) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar. ``enabled=None`` shows it only on a TTY unless BAYESPEFT_PROGRESS=0/1 says otherwise."""
    if enabled is None:
        env = os.environ.get("BAYESPEFT_PROGRESS")
        enabled = None if env is None else env not in ("0", "false", "no")
    if total is None and hasattr(iterable, "__len__"):
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled is None else not enabled, leave=leave, dynamic_ncols=True)
