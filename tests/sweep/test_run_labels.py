"""The line a sweep prints per finished run names each varying key by its last part unless two would read the same
(``model.name`` and ``data.name`` were both printed as ``name=``), as the dry-run table's headers do."""

from __future__ import annotations

import io
from types import SimpleNamespace

from bayespeft.experiments.sweep.executor import SweepProgress
from bayespeft.experiments.sweep.keys import short_names


class Counts:
    def counts(self):
        return {"done": 1, "failed": 0, "running": 0, "pending": 2}


def test_short_names_keep_colliding_keys_whole():
    keys = ["model.name", "data.name", "adapter.r", "train.seed", "model.overrides.depth"]
    assert short_names(keys) == {"model.name": "model.name", "data.name": "data.name", "adapter.r": "r",
                                 "train.seed": "seed", "model.overrides.depth": "depth"}


def test_finished_run_line_names_keys_unambiguously():
    out = io.StringIO()
    prog = SweepProgress(Counts(), total=3, stream=out, bar=False)
    rec = SimpleNamespace(id="abc123", differs={"model.name": "deit_tiny", "data.name": "cifar10", "adapter.r": 2})
    prog.finished(rec, {"status": "done", "timings": {"total": 1.25}})
    assert out.getvalue().splitlines()[0] == ("run abc123 (model.name=deit_tiny data.name=cifar10 r=2) done in 1.2 s"
                                              " | done 1, failed 0, running 0, pending 2")


def test_started_line_names_keys_like_the_finished_line(tmp_path):
    out = io.StringIO()
    prog = SweepProgress(Counts(), total=3, stream=out, bar=False)
    rec = SimpleNamespace(id="abc123", differs={"model.name": "deit_tiny", "data.name": "cifar10", "adapter.r": 2},
                          run_dir=str(tmp_path / "abc123"))
    prog.started(rec)
    assert out.getvalue().splitlines()[0] == (f"run abc123 (model.name=deit_tiny data.name=cifar10 r=2) started; "
                                              f"progress in {tmp_path / 'abc123' / 'log.txt'}")
