"""Run directories and the append-only results CSV.

Every run gets its own directory ``<root>/<name>-<UTC timestamp>-<n>`` holding the resolved config, metrics JSON
and checkpoints. One row per evaluated predictive (MAP, Laplace, SG-MCMC ensemble, ...) is appended to a CSV with
a fixed header (:data:`RESULT_COLUMNS`); rows are only ever appended, never rewritten.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import os
from pathlib import Path
from typing import Any

RESULT_COLUMNS = [
    "ts",
    "run",
    "method",
    "posterior",
    "dataset",
    "split",
    "backbone",
    "tuned_params",
    "tuned_params_%",
    "acc@1",
    "nll",
    "ece",
    "brier",
    "train_time_s",
    "eval_time_s",
    "epochs",
    "seed",
    "run_dir",
]


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Create and return a fresh run directory (never reuses an existing one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    for i in range(1000):
        path = root / f"{name}-{stamp}-{i}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def append_result(csv_path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row (missing columns left empty). Unknown keys are an error, so typos cannot vanish silently.

    The file is locked while appending so parallel runs can share one CSV. If the file exists with a different
    header, a ``ValueError`` says so instead of mixing layouts.
    """
    unknown = set(row) - set(RESULT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown result columns {sorted(unknown)}; valid: {RESULT_COLUMNS}")
    row = {"ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **row}
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            first = f.readline().strip()
            if first and first.split(",") != RESULT_COLUMNS:
                raise ValueError(f"{path} has a different header ({first!r}); use another results_csv")
            f.seek(0, os.SEEK_END)
            w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            if not first:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in RESULT_COLUMNS})
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_results(csv_path: str | os.PathLike):
    """The results CSV as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(csv_path)
