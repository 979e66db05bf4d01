"""``--executor ray`` on a local Ray with 2 CPUs: the same results and store semantics as the local executor."""

import json
import os

import pytest

from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
from bayespeft.experiments.sweep.store import SweepStore

ray = pytest.importorskip("ray")
try:
    import mlflow.tracking  # noqa: F401

    HAVE_MLFLOW = True
except ImportError:
    HAVE_MLFLOW = False


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module (starting Ray takes seconds)."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # workers single-threaded, as this process (bit-identical results)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old

SWEEP = """\
base: base.yaml
axes:
  train.seed: [1, 2, 3]
cases:
  - when: {train.seed: 3}
    set: {train.lr: 1.0e+30}          # diverges in the worker: recorded failed, the others go on
resources: {cpus: 1, memory: 500MB}
"""


def test_ray_executor_matches_local(sweep_file, tmp_path, local_ray):
    path = sweep_file(SWEEP)
    local = run_sweep(path, SweepOptions(out=str(tmp_path / "local")))
    track = {"track": "mlflow", "track_uri": str(tmp_path / "mlruns")} if HAVE_MLFLOW else {}
    res = run_sweep(path, SweepOptions(out=str(tmp_path / "ray"), executor="ray", **track))
    assert res["counts"] == local["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    a, b = SweepStore.open(tmp_path / "local"), SweepStore.open(tmp_path / "ray")
    assert [(r.id, r.status, r.metrics["rows"]) for r in a.runs()] == [(r.id, r.status, r.metrics["rows"]) for r in b.runs()]
    failed = b.get([r.id for r in b.runs() if r.status == "failed"][0])
    assert failed.error.startswith("TrainingDivergedError") and "Traceback" in failed.traceback
    assert all(len(b.attempts(r.id)) == 1 for r in b.runs())
    assert {r.pid for r in b.runs()} == {os.getpid()}  # the driver owns the store ...
    pids = {json.loads((tmp_path / "ray" / "runs" / r.id / "result.json").read_text())["pid"] for r in b.runs()}
    assert os.getpid() not in pids  # ... the runs ran in Ray workers
    assert len(b.result_rows()) == len(a.result_rows()) == 2
    if HAVE_MLFLOW:  # --track: the driver logs the runs the workers ran
        from mlflow.tracking import MlflowClient

        client = MlflowClient(str(tmp_path / "mlruns"))
        logged = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
        assert sorted((r.info.run_name, r.info.status) for r in logged) == sorted(
            (r.id, "FINISHED" if r.status == "done" else "FAILED") for r in b.runs())


def test_ray_resources_that_do_not_fit_are_an_error(sweep_file, tmp_path, local_ray):
    path = sweep_file(SWEEP.replace("cpus: 1", "cpus: 4"))
    with pytest.raises(ValueError, match="cannot fit one run's resources"):
        run_sweep(path, SweepOptions(out=str(tmp_path / "ray"), executor="ray"))
    assert SweepStore.open(tmp_path / "ray").counts()["pending"] == 3  # nothing claimed
