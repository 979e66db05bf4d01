"""Plain-text tables for the terminal."""

from __future__ import annotations

from typing import Any


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)


def format_table(rows: list[dict[str, Any]], cols: list[str], headers: dict[str, str] | None = None) -> str:
    """Fixed-width table with one header line; missing cells are blank."""
    headers = headers or {}
    head = [headers.get(c, c) for c in cols]
    body = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(["-" * w for w in widths])]
    out.extend(line(b) for b in body)
    return "\n".join(out)
