"""The SQLite sweep store: atomic claims under concurrent processes, reclaiming dead owners, refusing foreign files."""

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from bayespeft.experiments.sweep.store import Owner, StoreError, SweepStore


def plan(n):
    return [{"id": f"r{i:03d}", "position": i, "differs": {"i": i}, "config": {}, "stages": [], "run_dir": None}
            for i in range(n)]


def _claimer(directory, out_path, barrier):
    store = SweepStore.open(directory)
    owner = Owner.current()
    barrier.wait()
    got = []
    while (rec := store.claim(owner)) is not None:
        got.append(rec.id)
        time.sleep(0.01)  # the "run"
        assert store.finish(rec.id, owner, {"status": "done", "rows": [{"run": rec.id}]})
    with open(out_path, "w") as f:
        json.dump(got, f)


def test_concurrent_processes_claim_each_run_once(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(60))
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_claimer, args=(tmp_path, tmp_path / f"got{i}.json", barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = [json.loads((tmp_path / f"got{i}.json").read_text()) for i in range(4)]
    claimed = [i for g in got for i in g]
    assert sorted(claimed) == [f"r{i:03d}" for i in range(60)]  # every run exactly once
    assert sum(1 for g in got if g) >= 2  # the processes really competed
    assert store.counts() == {"pending": 0, "running": 0, "done": 60, "failed": 0}
    assert len(store.attempts()) == 60 and len(store.result_rows()) == 60
    assert store.con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_dead_owner_on_this_host_is_reclaimed(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(2))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = Owner("dead", Owner.current().host, child.pid, time.time() - 5)
    rec = store.claim(dead)
    live = Owner.current()
    rec2 = store.claim(live)
    assert store.reclaim_stale(stale_after=3600) == [rec.id]  # the dead pid, however fresh its heartbeat
    assert store.get(rec.id).status == "pending" and store.get(rec2.id).status == "running"
    assert store.attempts(rec.id)[0]["outcome"] == "interrupted"
    assert not store.finish(rec.id, dead, {"status": "done"})  # the old owner can no longer finish it
    again = store.claim(live)
    assert again.id == rec.id and again.attempts == 2


def test_reused_pid_counts_as_dead(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(1))
    me = Owner.current()
    impostor = Owner("old", me.host, os.getpid(), me.pid_started - 1000)  # same pid, other start time
    store.claim(impostor)
    assert store.reclaim_stale(stale_after=3600) == ["r000"]


def test_other_host_is_reclaimed_only_when_its_heartbeat_is_stale(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(1))
    remote = Owner("remote", "another-host", 1, None)
    store.claim(remote)
    assert store.reclaim_stale(stale_after=60) == []
    assert store.heartbeat("r000", remote)
    store.con.execute("UPDATE runs SET heartbeat = heartbeat - 61")
    assert store.reclaim_stale(stale_after=60) == ["r000"]
    assert not store.heartbeat("r000", remote)


def test_live_local_owner_is_never_reclaimed(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(1))
    me = Owner.current()
    store.claim(me)
    store.con.execute("UPDATE runs SET heartbeat = heartbeat - 10000")
    assert store.reclaim_stale(stale_after=60) == []


def test_finish_records_rows_once_and_retry_failed(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(3))
    me = Owner.current()
    for outcome in ({"status": "done", "rows": [{"a": 1}, {"a": 2}], "metrics": {"m": 1.5}},
                    {"status": "failed", "error": "RuntimeError: boom", "traceback": "Traceback ..."},
                    {"status": "done", "rows": [{"a": 3}]}):
        rec = store.claim(me)
        assert store.finish(rec.id, me, outcome)
    assert [r["a"] for r in store.result_rows()] == [1, 2, 3]
    failed = store.get("r001")
    assert failed.status == "failed" and failed.error == "RuntimeError: boom" and failed.traceback == "Traceback ..."
    assert store.get("r000").metrics == {"m": 1.5}
    assert store.retry_failed() == 1
    assert store.claim(me).id == "r001" and store.claim(me) is None


def test_sync_plan_keeps_results_and_marks_left_out_runs(tmp_path):
    store = SweepStore.open(tmp_path)
    store.sync_plan(plan(3))
    me = Owner.current()
    rec = store.claim(me)
    store.finish(rec.id, me, {"status": "done"})
    counts = store.sync_plan(plan(3)[1:] + [{**plan(4)[3]}])
    assert counts == {"new": 1, "kept": 2, "left_out": 1}
    assert [r.id for r in store.runs()] == ["r001", "r002", "r003"]
    assert store.get("r000").status == "done" and not store.get("r000").in_plan


def _snapshot(directory):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}


@pytest.mark.parametrize("kind", ["garbage", "empty", "foreign_sqlite", "other_format"])
def test_a_file_that_is_not_a_sweep_store_is_refused_untouched(tmp_path, kind):
    path = tmp_path / "sweep.sqlite"
    if kind == "garbage":
        path.write_bytes(b"not a database at all\x00" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        con = sqlite3.connect(path)
        if kind == "foreign_sqlite":
            con.execute("CREATE TABLE results (x)")
        else:
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT INTO meta VALUES ('format', 'someone.else/3')")
        con.commit()
        con.close()
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError, match="not a bayespeft sweep store|empty file"):
        SweepStore.open(tmp_path)
    after = {k: v for k, v in _snapshot(tmp_path).items() if k != ".sweep.lock"}
    assert after == before
