"""``bayespeft sweep SWEEP.yaml``: validate, plan, and execute a study; every step can stop early.

* ``--validate-only``: expand and validate every run, list each bad run with its errors (exit 2 if any);
* ``--dry-run``: the plan (count, a table of run ids, what differs, status in the store) without executing or
  creating anything; a directory made by a different sweep file is noted with what differs (key by key), and
  invalid runs are listed after the plan (exit 2);
* every mode first rejects a negative ``--max-experiments`` and (but ``--validate-only``) an ``--out`` that is, or
  lies under, a file: one-line errors;
* otherwise: open (or create) the sweep directory's store, refuse a directory made by a different sweep file
  unless ``--force`` (saying what differs), add the new runs, and execute the pending ones (``--max-experiments``,
  ``--retry-failed``, ``--executor local|ray``), each executed run also logged to MLflow with ``--track mlflow``
  (:mod:`.track`).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import io
from ...config import flatten_keys
from ...table import format_table
from .executor import ExecOptions, LocalExecutor, SweepProgress, export_results
from .expand import Plan, expand
from .keys import short_names
from .spec import SweepError, SweepSpec, load_sweep
from .store import STORE_NAME, StoreError, SweepStore, check_store_file

DEFAULT_ROOT = Path("runs") / "sweeps"


@dataclass
class SweepOptions:
    validate_only: bool = False
    dry_run: bool = False
    max_experiments: int | None = None
    executor: str = "local"
    address: str | None = None
    retry_failed: bool = False
    force: bool = False
    out: str | None = None
    overrides: tuple[str, ...] = ()
    heartbeat_s: float | None = None
    stale_after_s: float | None = None
    track: str | None = None
    track_uri: str | None = None


def sweep_dir(spec: SweepSpec, out: str | None) -> Path:
    return Path(out) if out else DEFAULT_ROOT / spec.name


def fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What makes two sweep files "the same sweep": the file as written and the base config it resolves to."""
    return json.loads(json.dumps({"sweep": spec.document, "base": spec.bases}, sort_keys=True, default=str))


def _short(v: Any, n: int = 160) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[: n - 3] + "..."


def _leaf_diffs(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """``[(path, a part, b part)]`` down to the innermost parts that differ (``cases[2].set.train.lr``), so a long
    value shows where it changed instead of two equal truncated prefixes; lists of other lengths are one part."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _leaf_diffs(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _leaf_diffs(x, y, f"{path}[{i}]")]
    return [(path, a, b)]


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per differing key of the sweep file (``axes``, ``cases``, ...) and per differing dotted key of a
    base config (``base config base.yaml: train.lr: 0.01 -> 0.5``); ``<absent>`` where one side lacks it."""
    out = []
    a_doc, b_doc = old.get("sweep") or {}, new.get("sweep") or {}
    for k in sorted(set(a_doc) | set(b_doc)):
        out += [f"{path}: {_short(x)} -> {_short(y)}"
                for path, x, y in _leaf_diffs(a_doc.get(k, "<absent>"), b_doc.get(k, "<absent>"), str(k))]
    a_base, b_base = old.get("base") or {}, new.get("base") or {}
    for label in sorted(set(a_base) | set(b_base)):
        if label not in a_base or label not in b_base:
            out.append(f"base config {label}: {'added' if label in b_base else 'removed'}")
            continue
        fa, fb = flatten_keys(a_base[label]), flatten_keys(b_base[label])
        for k in sorted(set(fa) | set(fb)):
            if fa.get(k, "<absent>") != fb.get(k, "<absent>"):
                out.append(f"base config {label}: {k}: {_short(fa.get(k, '<absent>'))} -> "
                           f"{_short(fb.get(k, '<absent>'))}")
    return out


def difference_message(directory: Path, old_file: str | None, fp_old: dict, plan: Plan,
                       stored: set[str]) -> str:
    """What differs between the sweep file that made ``directory`` and this one, and what running would do."""
    planned = {r.id for r in plan.runs}
    diff = describe_difference(fp_old, fingerprint(plan.spec))
    return (f"{directory} was made by a different sweep file ({old_file}); what differs:\n  " + "\n  ".join(diff)
            + f"\n  plan: {len(planned - stored)} new runs, {len(stored & planned)} kept (same id, results reused), "
            f"{len(stored - planned)} no longer in the plan (kept in the store, left out of reports).")


def check_out_dir(directory: Path) -> None:
    """One-line error if ``directory`` cannot be a sweep directory: it, or a folder above it, is not a folder."""
    for p in [directory, *directory.parents]:
        if p.exists():
            if not p.is_dir():
                what = "is" if p == directory else f"(above {directory}) is"
                raise SweepError(f"--out {directory}: {p} {what} a file, not a directory; choose another --out "
                                 "(or move the file away)")
            return


def plan_rows(plan: Plan, status: dict[str, str]) -> list[dict[str, Any]]:
    keys = plan.varying_keys()
    rows = []
    for r in plan.runs:
        d = plan.differs(r)
        rows.append({"id": r.id, **{k: ("-" if d[k] is None else d[k]) for k in keys},
                     "status": status.get(r.id, "new") if not r.errors else "invalid"})
    return rows


def _read_status(directory: Path) -> tuple[dict[str, str], dict[str, Any] | None, str | None]:
    """Statuses of the runs in an existing store (read-only; nothing is created), its fingerprint and the sweep
    file that made it."""
    path = directory / STORE_NAME
    if not path.exists():
        return {}, None, None
    check_store_file(path)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        status = dict(con.execute("SELECT id, status FROM runs").fetchall())
        meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('fingerprint', 'sweep_file')").fetchall())
    finally:
        con.close()
    fp, old_file = (json.loads(meta[k]) if k in meta else None for k in ("fingerprint", "sweep_file"))
    return status, fp, old_file


def print_plan(plan: Plan, directory: Path, stream: Any = None, force: bool = False) -> None:
    stream = stream or sys.stdout
    status, fp, old_file = _read_status(directory)
    rows = plan_rows(plan, status)
    methods: dict[str, int] = {}
    for r in plan.runs:
        m = (r.config_json().get("adapter") or {}).get("method", "?")
        methods[m] = methods.get(m, 0) + 1
    by_method = ", ".join(f"{n} {m}" for m, n in methods.items())
    print(f"sweep {plan.spec.name}: {len(plan.runs)} runs ({by_method}) from {plan.n_combinations} axis "
          f"combinations ({plan.n_excluded} excluded, {plan.n_combinations - plan.n_excluded - len(plan.runs)} "
          f"identical to another run); stages: {', '.join(s.label for s in plan.spec.stages)}", file=stream)
    print(f"directory: {directory}", file=stream)
    if fp is not None and fp != fingerprint(plan.spec):
        print("note: " + difference_message(directory, old_file, fp, plan, set(status)), file=stream)
        print("  --force given: running continues in this directory" if force else "  running needs --force, or another --out", file=stream)
    cols = ["id", *plan.varying_keys(), "status"]
    print(format_table(rows, cols, headers=short_names(cols)), file=stream)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("status: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=stream)


def invalid_report(plan: Plan) -> str:
    lines = [f"{len(plan.invalid)} of {len(plan.runs)} runs of {plan.spec.path} are invalid:"]
    for r in plan.invalid:
        what = ", ".join(f"{k}={v}" for k, v in r.axes.items()) or "the base config"
        lines.append(f"run {r.id} ({what}):")
        lines.extend(f"    {ln}" for e in r.errors for ln in e.splitlines())
    return "\n".join(lines)


def open_store(plan: Plan, directory: Path, force: bool) -> SweepStore:
    """Open the store, refusing a directory made by a different sweep file unless ``force``; sync the plan."""
    store = SweepStore.open(directory)
    fp_new = fingerprint(plan.spec)
    fp_old = store.get_meta("fingerprint")
    if fp_old is not None and fp_old != fp_new and not force:
        ids = {r.id for r in store.runs(in_plan=False)}
        old_file = store.get_meta("sweep_file")
        store.close()
        raise StoreError(difference_message(directory, old_file, fp_old, plan, ids)
                         + "\nPass --force to continue in this directory with this sweep file, or choose another --out.")
    store.set_meta(fingerprint=fp_new, sweep_file=str(plan.spec.path))
    store.sync_plan([{"id": r.id, "position": r.position, "differs": plan.differs(r), "config": r.config_json(),
                      "stages": [s.to_dict() for s in r.stages], "run_dir": str(directory / "runs" / r.id)}
                     for r in plan.runs])
    io.write_text(directory / "sweep.yaml", plan.spec.path.read_text())
    return store


def make_executor(opts: SweepOptions, plan: Plan):
    if opts.executor == "local":
        if opts.address:
            raise SweepError("--address is for --executor ray (the address of a Ray cluster)")
        return LocalExecutor()
    if opts.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(plan.spec.resources, address=opts.address)
    raise SweepError(f"unknown executor {opts.executor!r}; use local or ray")


def run_sweep(path: str | Path, opts: SweepOptions | None = None, stream: Any = None) -> dict[str, Any]:
    """The whole command; returns ``{"dir", "counts", "executed", "plan"}`` (``executed`` None for dry runs)."""
    opts = opts or SweepOptions()
    stream = stream or sys.stdout
    if opts.max_experiments is not None and opts.max_experiments < 0:
        raise SweepError(f"--max-experiments must be >= 0 (the number of pending runs to execute), "
                         f"got {opts.max_experiments}")
    plan = expand(load_sweep(path, opts.overrides))
    directory = sweep_dir(plan.spec, opts.out)
    if not opts.validate_only:
        check_out_dir(directory)
    if opts.validate_only:
        if plan.invalid:
            raise SweepError(invalid_report(plan))
        print(f"all {len(plan.runs)} runs of {plan.spec.path} are valid", file=stream)
        return {"dir": str(directory), "counts": None, "executed": None, "plan": plan}
    if opts.dry_run:
        print_plan(plan, directory, stream, force=opts.force)
        if plan.invalid:  # the plan is printed, the bad runs are the error (exit 2)
            raise SweepError(invalid_report(plan) + "\nfix the sweep file (see --validate-only)")
        return {"dir": str(directory), "counts": None, "executed": None, "plan": plan}
    if plan.invalid:
        raise SweepError(invalid_report(plan) + "\nnothing was run; fix the sweep file (see --validate-only)")
    executor = make_executor(opts, plan)
    from .track import make_tracker

    tracker = make_tracker(opts.track, opts.track_uri, directory, plan.spec.name)
    store = open_store(plan, directory, opts.force)
    try:
        if opts.retry_failed:
            n = store.retry_failed()
            print(f"retrying {n} failed run(s)", file=stream)
        exec_opts = ExecOptions(max_experiments=opts.max_experiments, tracker=tracker)
        if opts.heartbeat_s is not None:
            exec_opts.heartbeat_s = opts.heartbeat_s
        if opts.stale_after_s is not None:
            exec_opts.stale_after_s = opts.stale_after_s
        progress = SweepProgress(store, total=len(plan.runs), stream=stream)
        try:
            executed = executor.run(store, directory, exec_opts, progress)
        finally:
            progress.close()
        export_results(store, directory / "results.csv")
        counts = store.counts()
        failed = store.runs(status="failed")
    finally:
        store.close()
    print(f"sweep {plan.spec.name}: executed {executed} run(s); done {counts['done']}, failed {counts['failed']}, "
          f"running elsewhere {counts['running']}, pending {counts['pending']}", file=stream)
    for r in failed:
        print(f"  failed {r.id}: {r.error} (log: {Path(r.run_dir or '') / 'log.txt'})", file=stream)
    if failed:
        print("rerun only the failed runs with --retry-failed", file=stream)
    print(f"results: {directory / 'results.csv'}; report: bayespeft report {directory}", file=stream)
    return {"dir": str(directory), "counts": counts, "executed": executed, "plan": plan}
