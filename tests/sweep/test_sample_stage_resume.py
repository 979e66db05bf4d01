"""A sweep stopped inside its sample stage continues the stage's sample store when restarted with the same command
(``bayespeft sample --resume``), instead of sampling again from the start: the samples, metrics and CSV rows equal
those of an uninterrupted sweep, and only the missing samples are drawn."""

import json

import pytest
import torch

from bayespeft.experiments.sweep import runner
from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.store import SweepStore
from bayespeft.sgmcmc import SampleStore

SWEEP = """\
base: base.yaml
axes: {train.seed: [1]}
stages: [train, {sample: {lr: 1.0e-3, epochs: 3, burn_in_epochs: 1, n_chains: 2, probe_size: 8, n_projections: 2}}]
"""
N_SAMPLES = 2 * 8  # 2 chains x (3 - 1 epochs) x 4 steps of 8 of the 32 training examples


def count_adds(monkeypatch, stop_at: int | None = None) -> list[int]:
    """Count SampleStore.add calls; with ``stop_at``, Ctrl-C right after that many samples are written."""
    real, seen = SampleStore.add, [0]

    def add(self, *a, **kw):
        out = real(self, *a, **kw)
        seen[0] += 1
        if seen[0] == stop_at:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(SampleStore, "add", add)
    return seen


def outcome(out):
    store = SweepStore.open(out)
    (run,) = store.runs()
    store.close()
    stage = out / "runs" / run.id / "sample"
    samples = SampleStore(stage / "samples")
    tensors = [samples.load(i) for i in range(len(samples))]
    rows = [{k: v for k, v in r.items() if k != "reliability"} for r in run.metrics["rows"]]
    csv_rows = [ln.split(",")[:8] for ln in (out / "results.csv").read_text().splitlines()]
    return run, samples.entries, tensors, rows, len(csv_rows), stage


def assert_same(a, b):
    assert a[0].status == b[0].status == "done"
    assert a[1] == b[1] and len(a[1]) == N_SAMPLES
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a[2], b[2]) for k in x)
    assert a[3] == b[3] and a[4] == b[4]
    assert json.loads((a[5] / "diagnostics.json").read_text())["summary"] == \
        json.loads((b[5] / "diagnostics.json").read_text())["summary"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from .conftest import write_sweep

    d = tmp_path_factory.mktemp("ref")
    path = write_sweep(d, SWEEP)
    run_sweep(path, SweepOptions(out=str(d / "out")))
    return outcome(d / "out")


def test_interrupted_sample_stage_resumes_its_store(sweep_file, tmp_path, monkeypatch, reference):
    path, out = sweep_file(SWEEP), tmp_path / "out"
    count_adds(monkeypatch, stop_at=5)  # chain 0 stopped after its 5th kept sample
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, SweepOptions(out=str(out)))
    monkeypatch.undo()
    store = SweepStore.open(out)
    assert [r.status for r in store.runs()] == ["pending"]  # released on Ctrl-C
    store.close()
    seen = count_adds(monkeypatch)
    run_sweep(path, SweepOptions(out=str(out)))
    # only the missing samples were drawn: the 5th was written before chain 0's resume state was, so the chain
    # continues from its 4th sample and draws the 5th again (the store keeps one copy: entries equal the reference)
    assert seen[0] == N_SAMPLES - 4
    got = outcome(out)
    assert_same(got, reference)
    log = (out / "runs" / got[0].id / "log.txt").read_text()
    assert "resuming the interrupted sample stage" in log and "--- stage train: already finished" in log


def test_sample_stage_stopped_after_its_work_but_before_its_marker(sweep_file, tmp_path, monkeypatch, reference):
    path, out = sweep_file(SWEEP), tmp_path / "out"
    real = runner.io.write_json

    def write_json(p, *a, **kw):
        if p.name == runner.STAGE_FILE and p.parent.name == "sample":
            raise KeyboardInterrupt
        return real(p, *a, **kw)

    monkeypatch.setattr(runner.io, "write_json", write_json)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(path, SweepOptions(out=str(out)))
    monkeypatch.undo()
    seen = count_adds(monkeypatch)
    run_sweep(path, SweepOptions(out=str(out)))
    assert seen[0] == 0  # every chain had finished: nothing is sampled again
    assert_same(outcome(out), reference)
