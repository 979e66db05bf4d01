"""``bayespeft sweep --track mlflow``: runs read back with MLflow's own client from a local directory (offline)."""

import sys

import pytest

from bayespeft.cli import main
from bayespeft.experiments.sweep.store import SweepStore

from .conftest import BASE

mlflow_tracking = pytest.importorskip("mlflow.tracking")

SWEEP = """\
base: base.yaml
axes:
  train.seed: [1, 2]
cases:
  - when: {train.seed: 2}
    set: {train.lr: 1.0e+30}          # diverges: a failed run
"""
PLOTS_BASE = (BASE.replace("epochs: 1", "epochs: 2").replace("reliability_plots: false", "reliability_plots: true")
              .replace("name: digits,", "name: digits, shift: noise,"))  # two splits: test, test_shift


def leaves(d, prefix=""):
    """Dotted keys of the non-mapping (or empty-mapping) values of a nested dict."""
    out = {}
    for k, v in d.items():
        out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def all_artifacts(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(all_artifacts(client, run_id, f.path) if f.is_dir else [f.path])
    return out


def test_runs_params_metrics_curves_and_plots_read_back(sweep_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    path, out, uri = sweep_file(SWEEP, base=PLOTS_BASE), tmp_path / "out", tmp_path / "mlruns"
    with pytest.raises(SystemExit):
        main(["sweep", str(path), "--out", str(out), "--track", "mlflow", "--track-uri", str(uri)])
    store = SweepStore.open(out)
    recs = {r.id: r for r in store.runs()}
    client = mlflow_tracking.MlflowClient(str(uri))
    exp = client.get_experiment_by_name("sweep")  # the sweep's name (here: its file name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == sorted(recs)
    done = next(r for r in recs.values() if r.status == "done")
    failed = next(r for r in recs.values() if r.status == "failed")
    assert runs[failed.id].info.status == "FAILED" and runs[failed.id].data.tags["bayespeft.error"] == failed.error
    run = runs[done.id]
    assert run.info.status == "FINISHED" and run.data.tags["bayespeft.run_id"] == done.id

    params = run.data.params
    flat = leaves(done.config)
    assert set(params) == set(flat)
    assert (params["train.seed"], params["train.lr"], params["adapter.method"]) == ("1", "0.01", "lora")
    assert params["data.max_train"] == "32" and params["train.auto_batch_size"] == "false"

    metrics = run.data.metrics
    rows = done.metrics["rows"]
    assert {row["split"] for row in rows} == {"test", "test_shift"} and all(metrics[f"map/{row['split']}/{name}"] == row[key]
                        for row in rows for name, key in (("acc_at_1", "acc@1"), ("nll", "nll"), ("ece", "ece")))
    assert metrics["run/tuned_pct"] == done.metrics["run"]["tuned_%"]
    assert metrics["run/peak_memory_mb"] == done.resources["peak_memory_mb"]
    assert metrics["time/total"] == done.timings["total"]
    import json

    history = json.loads((out / "runs" / done.id / "train" / "metrics.json").read_text())["train"]["history"]
    curve = client.get_metric_history(run.info.run_id, "train/val_loss")
    assert [(m.step, m.value) for m in curve] == [(h["epoch"], h["val_loss"]) for h in history] and len(curve) == 2

    arts = all_artifacts(client, run.info.run_id)
    assert {"config.yaml", "result.json", "log.txt"} <= set(arts)
    assert "train/plots/reliability_map_test.png" in arts

    # a second invocation executes nothing and logs nothing new
    with pytest.raises(SystemExit):
        main(["sweep", str(path), "--out", str(out), "--track", "mlflow", "--track-uri", str(uri)])
    assert len(client.search_runs([exp.experiment_id])) == 2


def test_without_mlflow_it_is_a_one_line_error_naming_the_extra(sweep_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file(SWEEP)), "--out", str(out), "--track", "mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --track mlflow needs MLflow: pip install 'bayespeft[track]' (or mlflow-skinny)"
    assert not out.exists()  # refused before the store was made or a run executed


def test_a_track_uri_needs_track(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file(SWEEP)), "--out", str(tmp_path / "o"), "--track-uri", str(tmp_path)]) == 2
    assert "add --track mlflow" in capsys.readouterr().err


def test_train_track_logs_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(PLOTS_BASE)
    root = tmp_path / "runs"
    assert main(["train", str(cfg), "--set", f"output.root={root}", "--track", "mlflow"]) in (0, None)
    import json

    (run_dir,) = [p for p in root.iterdir() if p.name != "mlruns" and p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    client = mlflow_tracking.MlflowClient(str(root / "mlruns"))  # the default location: <output.root>/mlruns
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.shift"] == "noise"
    for split in ("test", "test_shift"):
        assert run.data.metrics[f"map/{split}/acc_at_1"] == metrics["map"][split]["acc"]
        assert run.data.metrics[f"map/{split}/ece"] == metrics["map"][split]["ece"]
    curve = client.get_metric_history(run.info.run_id, "train/train_loss")
    assert [(m.step, m.value) for m in curve] == [(h["epoch"], h["train_loss"]) for h in metrics["train"]["history"]]
    assert {"config.yaml", "metrics.json", "plots/reliability_map_test.png"} <= set(all_artifacts(client, run.info.run_id))


def test_an_unusable_tracking_location_is_a_one_line_error_before_any_run(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file(SWEEP)), "--out", str(out), "--track", "mlflow", "--track-uri", "bogus://x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --track mlflow: cannot use the tracking location bogus://x (") and "\n" not in err
    assert not out.exists()
