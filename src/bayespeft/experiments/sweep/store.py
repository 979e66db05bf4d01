"""The sweep store: one SQLite file per sweep directory (standard library ``sqlite3``).

Tables: ``meta`` (format tag, the sweep's fingerprint, creation time), ``runs`` (one row per planned run: status,
owner, times, metrics, resource figures, error, versions), ``attempts`` (one row per claim of a run: who ran it and
how it ended) and ``rows`` (the run's results-CSV rows, written in the same transaction that marks it done).

Concurrency: WAL journal (readers never block the writer), ``synchronous=FULL``, a busy timeout, and every
multi-statement change in a ``BEGIN IMMEDIATE`` transaction. A claim takes the first pending run with
``UPDATE runs SET status='running', owner=... WHERE id=? AND status='pending'`` inside such a transaction, so two
processes can never claim the same run. A running run whose owner is gone is put back to pending by
:meth:`SweepStore.reclaim_stale`: on the same host when its pid is dead (or now belongs to another process,
compared by the process start time), on any host when its heartbeat is older than ``stale_after`` seconds.
Finishing a run (``done`` or ``failed``) only succeeds for its current owner.

States: ``pending`` -> ``running`` -> ``done`` | ``failed``; ``running`` -> ``pending`` when reclaimed or
interrupted; ``failed`` -> ``pending`` with ``--retry-failed``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "bayespeft.sweep/1"
STATUSES = ("pending", "running", "done", "failed")
BUSY_TIMEOUT_S = 60.0
STORE_NAME = "sweep.sqlite"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    in_plan INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    differs TEXT NOT NULL,
    config TEXT NOT NULL,
    stages TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT, host TEXT, pid INTEGER, pid_started REAL, heartbeat REAL,
    started REAL, ended REAL,
    metrics TEXT, timings TEXT, resources TEXT,
    error TEXT, traceback TEXT,
    versions TEXT, git_commit TEXT, run_dir TEXT
);
CREATE TABLE attempts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started REAL NOT NULL, ended REAL, outcome TEXT, error TEXT,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE rows (
    run_id TEXT NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    row TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX runs_status ON runs(status, in_plan, position);
"""


class StoreError(ValueError):
    """A store that cannot be used (not a sweep store, made by another sweep file, ...)."""


def process_start_time(pid: int) -> float | None:
    """Start time of process ``pid`` (seconds since the epoch), or None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def pid_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is alive and (when ``started`` is known) is still the process that started then."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        t = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return started is None or abs(t - started) < 1.0


@dataclass(frozen=True)
class Owner:
    """Who claims runs: a random token, the host name, the pid and the process start time."""

    token: str
    host: str
    pid: int
    pid_started: float | None

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname(), pid, process_start_time(pid))


@dataclass
class RunRecord:
    """A row of ``runs`` with the JSON columns decoded."""

    id: str
    position: int
    in_plan: bool
    status: str
    differs: dict[str, Any]
    config: dict[str, Any]
    stages: list[dict[str, Any]]
    attempts: int
    owner: str | None
    host: str | None
    pid: int | None
    heartbeat: float | None
    started: float | None
    ended: float | None
    metrics: Any
    timings: Any
    resources: Any
    error: str | None
    traceback: str | None
    versions: Any
    git_commit: str | None
    run_dir: str | None


_JSON_COLUMNS = ("differs", "config", "stages", "metrics", "timings", "resources", "versions")


def _dumps(v: Any) -> str | None:
    return None if v is None else json.dumps(v, default=str)


def check_store_file(path: Path) -> None:
    """Raise :class:`StoreError` if ``path`` exists but is not a sweep store; opens it read-only (never writes)."""
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a file; choose another --out directory")
    if path.stat().st_size == 0:
        raise StoreError(f"{path} is an empty file, not a bayespeft sweep store; remove it or choose another --out")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a bayespeft sweep store ({e}); it was left untouched. Choose another --out "
                         "directory") from None
    if row is None or row[0] != FORMAT:
        found = row[0] if row else "no format tag"
        raise StoreError(f"{path} is not a bayespeft sweep store of format {FORMAT} ({found}); it was left "
                         "untouched. Choose another --out directory")


class SweepStore:
    """The SQLite store of one sweep directory. Open with :meth:`open`; every method is one transaction."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.con = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self.con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = FULL")
        self.con.execute("PRAGMA foreign_keys = ON")

    # ---- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, sweep_dir: str | Path, create: bool = True) -> SweepStore:
        """Open (or create) ``<sweep_dir>/sweep.sqlite``; refuses a file that is not a sweep store.

        Checking and creating happen under an exclusive lock on ``<sweep_dir>/.sweep.lock`` so that processes
        starting together neither create the schema twice nor see a half-created file.
        """
        sweep_dir = Path(sweep_dir)
        path = sweep_dir / STORE_NAME
        if not path.exists() and not create:
            raise StoreError(f"no sweep store in {sweep_dir} (expected {path}); run `bayespeft sweep` first")
        if not sweep_dir.is_dir():
            if sweep_dir.exists():
                raise StoreError(f"{sweep_dir} is not a directory; choose another --out")
            try:
                sweep_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the sweep directory {sweep_dir} ({e.strerror or e}); choose another "
                                 "--out") from None
        with open(sweep_dir / ".sweep.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                check_store_file(path)
                fresh = not path.exists()
                store = cls(path)
                if fresh:
                    with store.tx() as con:
                        for stmt in [s for s in SCHEMA.split(";") if s.strip()]:
                            con.execute(stmt)
                        con.execute("INSERT INTO meta VALUES ('format', ?), ('created', ?)", (FORMAT, str(time.time())))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return store

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # ---- meta ------------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0]) if key not in ("format", "created") else row[0]

    def set_meta(self, **items: Any) -> None:
        with self.tx() as con:
            for k, v in items.items():
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v, sort_keys=True, default=str)))

    # ---- the plan --------------------------------------------------------------------------------------------
    def sync_plan(self, runs: list[dict[str, Any]]) -> dict[str, int]:
        """Insert the planned runs that are new (pending), mark the others ``in_plan`` or not.

        ``runs``: ``[{id, position, differs, config, stages, run_dir}]``. Runs already in the store keep their
        status and results. Returns counts ``{"new", "kept", "left_out"}``.
        """
        ids = [r["id"] for r in runs]
        with self.tx() as con:
            known = {row[0] for row in con.execute("SELECT id FROM runs")}
            con.execute("UPDATE runs SET in_plan = 0")
            new = 0
            for r in runs:
                if r["id"] in known:
                    con.execute("UPDATE runs SET in_plan = 1, position = ?, differs = ? WHERE id = ?",
                                (r["position"], _dumps(r["differs"]), r["id"]))
                else:
                    new += 1
                    con.execute(
                        "INSERT INTO runs (id, position, status, differs, config, stages, run_dir) "
                        "VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                        (r["id"], r["position"], _dumps(r["differs"]), _dumps(r["config"]), _dumps(r["stages"]),
                         r["run_dir"]),
                    )
        return {"new": new, "kept": len(set(ids) & known), "left_out": len(known - set(ids))}

    def retry_failed(self) -> int:
        """Failed runs of the plan back to pending; returns how many."""
        with self.tx() as con:
            return con.execute("UPDATE runs SET status='pending', owner=NULL WHERE status='failed' AND in_plan=1").rowcount

    # ---- claims ----------------------------------------------------------------------------------------------
    def claim(self, owner: Owner) -> RunRecord | None:
        """Atomically take the first pending run of the plan (None when there is none)."""
        now = time.time()
        with self.tx() as con:
            row = con.execute(
                "SELECT id FROM runs WHERE status='pending' AND in_plan=1 ORDER BY position LIMIT 1").fetchone()
            if row is None:
                return None
            cur = con.execute(
                "UPDATE runs SET status='running', owner=?, host=?, pid=?, pid_started=?, heartbeat=?, started=?, "
                "ended=NULL, attempts=attempts+1 WHERE id=? AND status='pending'",
                (owner.token, owner.host, owner.pid, owner.pid_started, now, now, row[0]),
            )
            if cur.rowcount != 1:  # cannot happen inside BEGIN IMMEDIATE; kept as a guard
                return None
            attempt = con.execute("SELECT attempts FROM runs WHERE id=?", (row[0],)).fetchone()[0]
            con.execute("INSERT INTO attempts (run_id, attempt, owner, host, pid, started) VALUES (?, ?, ?, ?, ?, ?)",
                        (row[0], attempt, owner.token, owner.host, owner.pid, now))
        return self.get(row[0])

    def heartbeat(self, run_id: str, owner: Owner) -> bool:
        """Refresh the heartbeat of a run we own; False if we no longer own it."""
        with self.tx() as con:
            return con.execute("UPDATE runs SET heartbeat=? WHERE id=? AND owner=? AND status='running'",
                               (time.time(), run_id, owner.token)).rowcount == 1

    def reclaim_stale(self, stale_after: float, host: str | None = None) -> list[str]:
        """Put running runs whose owner is gone back to pending (see the module docstring); returns their ids."""
        host = host or socket.gethostname()
        now = time.time()
        out = []
        with self.tx() as con:
            rows = con.execute("SELECT id, host, pid, pid_started, heartbeat, owner, attempts FROM runs "
                               "WHERE status='running'").fetchall()
            for rid, rhost, pid, pstart, hb, owner, attempt in rows:
                dead = rhost == host and pid is not None and not pid_alive(pid, pstart)
                stale = hb is None or now - hb > stale_after
                if rhost == host and not dead:
                    continue  # a live process on this host: never taken from it
                if dead or stale:
                    why = "owner process died" if dead else f"no heartbeat for {now - (hb or 0):.0f} s"
                    con.execute("UPDATE runs SET status='pending', owner=NULL WHERE id=? AND owner=?", (rid, owner))
                    con.execute("UPDATE attempts SET ended=?, outcome='interrupted', error=? WHERE run_id=? AND attempt=?",
                                (now, why, rid, attempt))
                    out.append(rid)
        return out

    def release(self, run_id: str, owner: Owner, why: str = "interrupted") -> None:
        """Give a run we own back to pending (e.g. on Ctrl-C); its checkpoints stay for resuming."""
        now = time.time()
        with self.tx() as con:
            cur = con.execute("UPDATE runs SET status='pending', owner=NULL WHERE id=? AND owner=? AND status='running'",
                              (run_id, owner.token))
            if cur.rowcount:
                con.execute("UPDATE attempts SET ended=?, outcome='interrupted', error=? WHERE run_id=? AND owner=? "
                            "AND ended IS NULL", (now, why, run_id, owner.token))

    def finish(self, run_id: str, owner: Owner, outcome: dict[str, Any]) -> bool:
        """Record a run's end (``outcome["status"]`` done or failed) and its CSV rows, in one transaction.

        Returns False (and writes nothing) if ``owner`` no longer owns the run.
        """
        status = outcome["status"]
        if status not in ("done", "failed"):
            raise ValueError(f"finish: status must be done or failed, got {status!r}")
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "UPDATE runs SET status=?, ended=?, metrics=?, timings=?, resources=?, error=?, traceback=?, "
                "versions=?, git_commit=?, heartbeat=? WHERE id=? AND owner=? AND status='running'",
                (status, now, _dumps(outcome.get("metrics")), _dumps(outcome.get("timings")),
                 _dumps(outcome.get("resources")), outcome.get("error"), outcome.get("traceback"),
                 _dumps(outcome.get("versions")), outcome.get("git_commit"), now, run_id, owner.token),
            )
            if cur.rowcount != 1:
                return False
            con.execute("UPDATE attempts SET ended=?, outcome=?, error=? WHERE run_id=? AND owner=? AND ended IS NULL",
                        (now, status, outcome.get("error"), run_id, owner.token))
            con.execute("DELETE FROM rows WHERE run_id=?", (run_id,))
            for seq, row in enumerate(outcome.get("rows") or []):
                con.execute("INSERT INTO rows VALUES (?, ?, ?)", (run_id, seq, _dumps(row)))
        return True

    # ---- reading ---------------------------------------------------------------------------------------------
    def _record(self, row: sqlite3.Row | tuple, cols: list[str]) -> RunRecord:
        d = dict(zip(cols, row))
        for c in _JSON_COLUMNS:
            d[c] = None if d[c] is None else json.loads(d[c])
        d["in_plan"] = bool(d["in_plan"])
        d.pop("pid_started", None)
        return RunRecord(**d)

    def runs(self, status: str | None = None, in_plan: bool = True) -> list[RunRecord]:
        q = "SELECT * FROM runs WHERE (? IS NULL OR status=?)" + (" AND in_plan=1" if in_plan else "") + " ORDER BY position"
        cur = self.con.execute(q, (status, status))
        cols = [c[0] for c in cur.description]
        return [self._record(r, cols) for r in cur.fetchall()]

    def get(self, run_id: str) -> RunRecord:
        cur = self.con.execute("SELECT * FROM runs WHERE id=?", (run_id,))
        cols = [c[0] for c in cur.description]
        row = cur.fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return self._record(row, cols)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.con.execute("SELECT status, COUNT(*) FROM runs WHERE in_plan=1 GROUP BY status"):
            out[status] = n
        return out

    def attempts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        cur = self.con.execute("SELECT * FROM attempts WHERE (? IS NULL OR run_id=?) ORDER BY started, run_id",
                               (run_id, run_id))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def result_rows(self) -> list[dict[str, Any]]:
        """The CSV rows of the done runs of the plan, in plan order."""
        cur = self.con.execute("SELECT r.row FROM rows r JOIN runs u ON u.id = r.run_id WHERE u.status='done' "
                               "AND u.in_plan=1 ORDER BY u.position, r.seq")
        return [json.loads(r[0]) for r in cur.fetchall()]
