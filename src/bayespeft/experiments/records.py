"""Run directories, run status, and the shared results CSV.

Every run gets its own directory ``<root>/<name>-<UTC timestamp>-<n>`` holding the resolved config, ``metrics.json``
(with ``"status"``: ``finished``, ``failed`` or ``interrupted``, and the ``error`` when not finished), its own rows
(``rows.csv``) and checkpoints. One row per evaluated predictive (MAP, Laplace, SG-MCMC ensemble, ...) goes to a
shared CSV with a fixed header (:data:`RESULT_COLUMNS`), and only once the run has finished and written its own
files.

One row per distinct result: each row carries a ``result_key`` (SHA-256 of what determines the numbers: the
checkpoint's weights, the model/adapter/data settings, the evaluated split's content fingerprint (where the files
lie is no part of it), the posterior and its settings, the split; see
:func:`bayespeft.experiments.run.result_key`). A row whose key the CSV already holds is not appended again (the
first recorded result is kept; a finished result is never overwritten). The check and the append happen under an
exclusive lock (``<csv>.lock``), so parallel runs can share one CSV.

A CSV written by an earlier version (header :data:`LEGACY_COLUMNS`, before the result key, or :data:`KEYED_COLUMNS`,
before the data fingerprint) is migrated on the next append: it is rewritten atomically with the new header, every
old value staying in its column and the new columns empty. An empty ``data_fingerprint`` means "unknown": the keys
of such rows were computed without one, so no new result is ever taken for one of them. A CSV with any other header
is refused (use another ``output.results_csv``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RunError

#: The evaluation splits a run reports (the ``split`` of its result rows), in order.
SPLITS = ("test", "test_shift")

#: The header of results CSVs written before the result key and the posterior settings were recorded.
LEGACY_COLUMNS = [
    "ts", "run", "method", "posterior", "dataset", "split", "backbone", "tuned_params", "tuned_params_%", "acc@1",
    "nll", "ece", "brier", "train_time_s", "eval_time_s", "epochs", "seed", "run_dir",
]

#: The header of results CSVs written before the data fingerprint and the SG-MCMC completeness were recorded.
KEYED_COLUMNS = [
    *LEGACY_COLUMNS, "structure", "subset", "curvature", "prior_method", "prior_precision", "predictive", "link",
    "n_samples", "checkpoint", "result_key",
]

#: The results CSV header: the legacy columns (same order), then the posterior's settings (Laplace: structure,
#: subset, curvature, prior method, the tuned prior precision, predictive, link; SG-MCMC: number of samples), the
#: SHA-256 of the checkpoint's weights file, the result key, the content fingerprint of the evaluated split
#: (:func:`bayespeft.data.fingerprint.dataset_fingerprint`), and for SG-MCMC rows: the draws the sample store's
#: plan asks for (``samples_planned``, chains x draws per chain; ensemble rows), whether the store held all of them
#: when evaluated (``complete``: ``True``/``False``, empty for a store without a plan), the sampler's step size and
#: temperature.
RESULT_COLUMNS = [*KEYED_COLUMNS, "data_fingerprint", "samples_planned", "complete", "sampler_lr", "temperature"]

#: Earlier headers, rewritten with :data:`RESULT_COLUMNS` on the next append.
OLD_HEADERS = (LEGACY_COLUMNS, KEYED_COLUMNS)


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


# ---- checking output locations before any work ----------------------------------------------------------------
def _writable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be (created and) written as a directory, or None. Probes by creating a temp file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".bayespeft-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def check_output_dir(path: str | os.PathLike, what: str, fix: str) -> None:
    """Raise :class:`RunError` unless ``path`` is (or can be made) a writable directory."""
    why = _writable_dir(Path(path))
    if why:
        raise RunError(f"{what} {path} is not a writable directory ({why}); {fix}")


def check_results_csv(csv_path: str | os.PathLike) -> None:
    """Raise :class:`RunError` unless rows can be appended to ``csv_path`` (writable, and absent, empty or with a
    known header)."""
    path = Path(csv_path)
    fix = "set another with --set output.results_csv=PATH (or fix its permissions)"
    if path.exists() and not path.is_file():
        raise RunError(f"results CSV {path} is not a file (a directory?); {fix}")
    why = _writable_dir(path.parent)
    if why is None and path.exists():
        try:
            with open(path, "a"):
                pass
            if _header(path) is not None:
                _recorded(path)  # the whole file parses (it is read again under the lock when rows are appended)
        except OSError as e:
            why = f"{type(e).__name__}: {e.strerror or e}"
    if why:
        raise RunError(f"results CSV {path} is not writable ({why}); {fix}")


def _header(path: Path) -> list[str] | None:
    """The CSV's header (None when the file is absent or empty); :class:`RunError` for an unknown header."""
    if not path.is_file():
        return None
    with _readable(path), open(path, newline="") as f:
        first = f.readline().strip()
    if not first:
        return None
    cols = next(csv.reader([first]))
    if cols != RESULT_COLUMNS and cols not in OLD_HEADERS:
        raise RunError(f"results CSV {path} has another header ({first[:80]!r}...), not a bayespeft results file; "
                       "set another with --set output.results_csv=PATH")
    return cols


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn a results CSV that is not UTF-8 text or not CSV (a binary file, a broken quote) into a :class:`RunError`
    naming the file and the fix."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as e:
        why = f"not UTF-8 at byte {e.start}" if isinstance(e, UnicodeDecodeError) else f"CSV error: {e}"
        raise RunError(f"results CSV {path} is not a readable UTF-8 CSV file ({why}); move it away (or repair it) or "
                       "set another with --set output.results_csv=PATH") from None


def _recorded(path: Path) -> dict[str, dict]:
    """The rows of the CSV with a ``result_key``, by that key."""
    with _readable(path), open(path, newline="") as f:
        return {r["result_key"]: r for r in csv.DictReader(f, strict=True) if r.get("result_key")}


# ---- appending rows -----------------------------------------------------------------------------------------------
@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)  # read access suffices to lock: colleagues can share it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _migrate(path: Path) -> None:
    """Rewrite a CSV with an earlier header (:data:`OLD_HEADERS`) with :data:`RESULT_COLUMNS` (atomically; old
    values keep their columns, the new ones are empty)."""
    from .. import io

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    with io.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in RESULT_COLUMNS})


def append_results(csv_path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Append the rows whose ``result_key`` the CSV does not hold yet; returns ``(appended, skipped)``, where
    ``skipped`` holds the rows already in the file (as read from it) that made a new row redundant.

    Missing columns are left empty; unknown keys are an error, so typos cannot vanish silently. A row without a
    ``result_key`` is always appended. Legacy CSVs are migrated first (module docstring); another header is a
    :class:`~bayespeft.errors.RunError`.
    """
    rows = list(rows)
    for row in rows:
        unknown = set(row) - set(RESULT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}; valid: {RESULT_COLUMNS}")
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    appended: list[dict] = []
    skipped: list[dict] = []
    with _locked(path):
        header = _header(path)
        if header in OLD_HEADERS:
            _migrate(path)
        existing: dict[str, dict] = {}
        if header is not None:
            existing = _recorded(path)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for row in rows:
            key = row.get("result_key")
            if key and key in existing:
                skipped.append(existing[key])
                continue
            appended.append({"ts": now, **row})
            if key:
                existing[key] = appended[-1]
        if appended:
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
                if header is None:
                    w.writeheader()
                for row in appended:
                    w.writerow({k: _fmt(row.get(k)) for k in RESULT_COLUMNS})
    return appended, skipped


def append_result(csv_path: str | os.PathLike, row: dict[str, Any]) -> bool:
    """Append one row (see :func:`append_results`); returns False when its ``result_key`` was already recorded."""
    appended, _ = append_results(csv_path, [row])
    return bool(appended)


def read_rows(csv_path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a results CSV as strings (empty list when the file does not exist)."""
    path = Path(csv_path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_results(csv_path: str | os.PathLike):
    """The results CSV as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(csv_path)
