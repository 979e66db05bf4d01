"""kill -9 in the middle of a run, then two processes resuming at once: nothing lost, nothing run twice.

A sweep of three 2-epoch runs is started in a subprocess and killed with SIGKILL once its second run has written
its epoch-1 checkpoint. The same command is then started twice at the same time. Checked against an uninterrupted
sweep of the same file in this process: the same results bit for bit (training resumes exactly), the finished run
not rerun, the interrupted run resumed from its epoch-1 checkpoint by exactly one process, every CSV row once.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bayespeft
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.report import PREDICTIVE_METRICS, ReportOptions, build_report
from bayespeft.experiments.sweep.store import SweepStore

from .conftest import BASE

SWEEP = "base: base.yaml\naxes: {train.seed: [1, 2, 3]}\n"
SRC = str(Path(bayespeft.__file__).resolve().parents[1])


def _env():
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BAYESPEFT_PROGRESS="0",
               HF_HUB_OFFLINE="1")
    return env


def _command(path, out):
    code = "import torch, sys; torch.set_num_threads(1); from bayespeft.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "sweep", str(path), "--out", str(out)]


def _wait_for_epoch(history: Path, epoch: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f"the sweep ended before it could be killed:\n{proc.communicate()}"
        try:
            h = json.loads(history.read_text())
            if h.get("status") == "running" and h.get("epoch") == epoch:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"{history} never reached epoch {epoch}")


def _results(store: SweepStore) -> dict:
    return {r.id: r.metrics["rows"] for r in store.runs()}


def test_sigkill_then_two_resuming_processes(sweep_file, tmp_path):
    base = BASE.replace("epochs: 1", "epochs: 2")
    path = sweep_file(SWEEP, base=base)
    ref = tmp_path / "reference"
    run_sweep(path, SweepOptions(out=str(ref)))
    ref_store = SweepStore.open(ref)
    ids = [r.id for r in ref_store.runs()]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(path, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_epoch(out / "runs" / ids[1] / "train" / "history.json", 1, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    store = SweepStore.open(out)
    assert [r.status for r in store.runs()] == ["done", "running", "pending"]

    procs = [subprocess.Popen(_command(path, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs

    assert store.counts() == {"pending": 0, "running": 0, "done": 3, "failed": 0}
    attempts = {rid: [(a["outcome"], a["pid"]) for a in store.attempts(rid)] for rid in ids}
    assert [o for o, _ in attempts[ids[0]]] == ["done"]  # finished before the kill: not rerun
    assert [o for o, _ in attempts[ids[1]]] == ["interrupted", "done"]  # resumed exactly once
    assert [o for o, _ in attempts[ids[2]]] == ["done"]
    assert attempts[ids[1]][0][1] == proc.pid and attempts[ids[1]][1][1] in {p.pid for p in procs}
    assert store.get(ids[1]).metrics["run"]["resumed_from_epoch"] == 1  # from its last checkpoint
    assert store.get(ids[0]).metrics["run"]["resumed_from_epoch"] is None

    assert _results(store) == _results(ref_store)  # bit-exact: same metrics as the uninterrupted sweep
    rows = store.result_rows()
    assert len(rows) == len(ref_store.result_rows()) == 3
    assert len({(r["run"], r["posterior"], r["split"]) for r in rows}) == 3
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and len(set(csv_lines)) == 4
    # the final report equals the uninterrupted sweep's (timings aside, which are measured, not computed)
    opts = ReportOptions(metrics=[*PREDICTIVE_METRICS, "tuned_%"], plots=False)
    killed, reference = build_report(out, opts), build_report(ref, opts)
    for key in ("summary", "comparisons", "literature", "counts"):
        assert killed[key] == reference[key], key
