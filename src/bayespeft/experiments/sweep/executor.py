"""Executing a sweep's pending runs: the local executor (in this process, one run at a time), the heartbeat that
tells other processes a run is alive, the progress display, and the results-CSV export.

Any number of processes may execute the same sweep at once (``bayespeft sweep`` started twice, on one machine or
on several sharing the directory): each claims runs from the store one at a time (:meth:`SweepStore.claim`,
atomic), so no run is executed twice, and first puts back the runs of owners that died
(:meth:`SweepStore.reclaim_stale`). A run interrupted by Ctrl-C is released to pending; one killed with SIGKILL
is reclaimed by the next process, and its training resumes from the last epoch checkpoint in its directory.
"""

from __future__ import annotations

import csv
import fcntl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ... import io
from ..records import RESULT_COLUMNS
from .keys import short_names
from .runner import RunTask, execute_run
from .store import Owner, RunRecord, SweepStore

HEARTBEAT_S = 10.0
#: a running run whose heartbeat is older than this (and whose owner is not a live process on this host) is reclaimed
STALE_AFTER_S = 120.0


@dataclass
class ExecOptions:
    max_experiments: int | None = None
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    #: ``--track``: an object with ``log_run(rec, outcome)`` (:class:`~.track.MlflowTracker`), or None
    tracker: Any = None


class Executor(Protocol):
    def run(self, store: SweepStore, sweep_dir: Path, opts: ExecOptions, progress: SweepProgress) -> int:
        """Execute pending runs until none is left (or ``opts.max_experiments``); returns how many were run."""


def task_of(rec: RunRecord) -> RunTask:
    return RunTask(rec.id, rec.run_dir or "", rec.config, rec.stages, rec.differs)


def record_outcome(store: SweepStore, rec: RunRecord, owner: Owner, outcome: dict[str, Any], sweep_dir: Path,
                   opts: ExecOptions, progress: SweepProgress) -> None:
    """What the driver does with a run's outcome, whichever executor ran it: the store, the results CSV, the
    tracker (``--track``), the progress line."""
    recorded = store.finish(rec.id, owner, outcome)
    if not recorded:
        print(f"warning: run {rec.id} was reclaimed by another process while it ran (heartbeat older "
              f"than {opts.stale_after_s:.0f} s?); its outcome here is not recorded", file=sys.stderr)
    export_results(store, sweep_dir / "results.csv")
    if recorded and opts.tracker is not None:
        opts.tracker.log_run(rec, outcome)
    progress.finished(rec, outcome)


class Heartbeat:
    """A daemon thread refreshing the heartbeat of ``run_ids`` every ``interval`` seconds (own connection)."""

    def __init__(self, store_path: Path, owner: Owner, interval: float) -> None:
        self.store_path, self.owner, self.interval = store_path, owner, interval
        self.run_ids: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, run_id: str) -> None:
        with self._lock:
            self.run_ids.add(run_id)

    def discard(self, run_id: str) -> None:
        with self._lock:
            self.run_ids.discard(run_id)

    def _loop(self) -> None:
        store = SweepStore(self.store_path)
        try:
            while not self._stop.wait(self.interval):
                with self._lock:
                    ids = list(self.run_ids)
                for rid in ids:
                    try:
                        store.heartbeat(rid, self.owner)
                    except Exception as e:  # noqa: BLE001  a busy store must not kill the run
                        print(f"warning: heartbeat of run {rid} failed: {e}", file=sys.__stderr__)
        finally:
            store.close()


class SweepProgress:
    """Progress over runs: a tqdm bar on a terminal, else one line per finished run; done/failed/pending counts."""

    def __init__(self, store: SweepStore, total: int, stream: Any = None, bar: bool | None = None) -> None:
        self.store = store
        self.stream = stream if stream is not None else sys.stdout
        self.bar = None
        use_bar = self.stream.isatty() if bar is None else bar
        counts = store.counts()
        if use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=counts["done"] + counts["failed"], desc="runs", unit="run",
                            file=self.stream, dynamic_ncols=True)
            self.bar.set_postfix_str(self._counts(counts))

    @staticmethod
    def _counts(c: dict[str, int]) -> str:
        return f"done {c['done']}, failed {c['failed']}, running {c['running']}, pending {c['pending']}"

    @staticmethod
    def describe(rec: RunRecord) -> str:
        """The run's settings that differ across the sweep, named as in the dry-run table (``model.name=…``)."""
        names = short_names(list(rec.differs))
        return " ".join(f"{names[k]}={v}" for k, v in rec.differs.items())

    def started(self, rec: RunRecord) -> None:
        """Say which run this process works on now, and where its output goes (a run may take hours, and its
        progress lines go to its own log): the bar's postfix on a terminal, else one line."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"running {rec.id} | {self._counts(self.store.counts())}")
            return
        what = self.describe(rec)
        log = Path(rec.run_dir) / "log.txt" if rec.run_dir else "its run directory"
        print(f"run {rec.id} ({what}) started; progress in {log}", file=self.stream, flush=True)

    def finished(self, rec: RunRecord, outcome: dict[str, Any]) -> None:
        counts = self.store.counts()
        what = self.describe(rec)
        secs = (outcome.get("timings") or {}).get("total", 0.0)
        line = f"run {rec.id} ({what}) {outcome['status']} in {secs:.1f} s"
        if outcome["status"] == "failed":
            line += f": {outcome.get('error')}"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._counts(counts))
            self.bar.write(line, file=self.stream)
        else:
            print(f"{line} | {self._counts(counts)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def export_results(store: SweepStore, path: Path) -> None:
    """Write ``path`` (the sweep's results CSV, :data:`RESULT_COLUMNS`) from the store's rows of done runs.

    Written atomically under a lock, from the store as it is inside the lock, so concurrent exporters always leave
    the latest state; a killed process leaves the previous complete file.
    """
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            rows = store.result_rows()
            with io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
                w.writeheader()
                for r in rows:
                    w.writerow({k: r.get(k, "") for k in RESULT_COLUMNS})
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class LocalExecutor:
    """Runs claimed runs one after another in this process (output of each run captured in its log)."""

    name = "local"

    def run(self, store: SweepStore, sweep_dir: Path, opts: ExecOptions, progress: SweepProgress) -> int:
        owner = Owner.current()
        n = 0
        with Heartbeat(store.path, owner, opts.heartbeat_s) as hb:
            while opts.max_experiments is None or n < opts.max_experiments:
                store.reclaim_stale(opts.stale_after_s)
                rec = store.claim(owner)
                if rec is None:
                    break
                n += 1
                hb.add(rec.id)
                progress.started(rec)
                try:
                    outcome = execute_run(task_of(rec))
                except BaseException:
                    store.release(rec.id, owner, "interrupted (KeyboardInterrupt or exit)")
                    raise
                finally:
                    hb.discard(rec.id)
                record_outcome(store, rec, owner, outcome, sweep_dir, opts, progress)
        return n
