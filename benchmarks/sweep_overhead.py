"""What the sweep machinery costs per run, and what the Ray executor gains, measured in one process run.

1. **Overhead per run** (target, issue 10: at most 1 s, median over 20 tiny runs): the same tiny training run
   (micro ViT on digits, one epoch) ``--runs`` times with different seeds,

   * *direct*: :func:`bayespeft.experiments.train.train_run` into a fresh directory, timed per run;
   * *sweep*: ``bayespeft sweep`` over the same seeds (local executor), each run timed from its claim to the
     commit of its outcome plus the CSV export (the store's attempt times) — everything the machinery adds:
     claim, run files, output capture, stage marker, metrics summary, versions, store transaction, CSV export.

   Printed: median direct, median sweep, their difference (the overhead), and the whole sweep's wall time minus
   the direct total (start-up: expansion, validation, store creation).
2. **Ray vs local** (``--ray``; target: wall <= 0.6x the local executor on 2 CPUs with 8 single-threaded runs of
   >= 20 s each, Ray start-up included): the same sweep of ``--ray-runs`` longer runs (``--ray-epochs``) with the
   local executor (in this process, one thread) and with a local Ray on ``--ray-cpus`` CPUs (one CPU per run,
   ``OMP_NUM_THREADS=1`` in the workers' environment; ``ray.init`` to ``ray.shutdown`` timed), the wall time of
   each, their ratio, the median run time under each executor (to check the >= 20 s) and whether both stores hold
   the same results.

Usage: ``python benchmarks/sweep_overhead.py [--runs 20] [--ray --ray-runs 8 --ray-epochs 600 --ray-cpus 2]``
(``--ray-only`` skips part 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE = """\
name: bench
data: {{name: digits, max_train: 64, max_val: 16, max_test: 32, batch_size: 16, eval_batch_size: 64}}
model: {{name: micro_vit, pretrained: false, overrides: {{embed_dim: 16, depth: 1, num_heads: 2}}}}
adapter: {{method: lora, r: 2, alpha: 4}}
train: {{epochs: {epochs}, lr: 0.01, progress: false}}
output: {{reliability_plots: false}}
"""


def write(tmp: Path, seeds: list[int], epochs: int, cpus: float = 1) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "base.yaml").write_text(BASE.format(epochs=epochs))
    path = tmp / "sweep.yaml"
    path.write_text(f"base: base.yaml\naxes: {{train.seed: {seeds}}}\nresources: {{cpus: {cpus}}}\n")
    return path


def overhead(tmp: Path, n: int) -> None:
    from bayespeft.config import load_config
    from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
    from bayespeft.experiments.sweep.store import SweepStore
    from bayespeft.experiments.train import train_run

    seeds = list(range(1000, 1000 + n))
    path = write(tmp, seeds, epochs=1)
    cfg0 = load_config(tmp / "base.yaml", ["output.root=" + str(tmp / "direct")])
    train_run(cfg0.model_copy(update={"train": cfg0.train.model_copy(update={"seed": 1})}))  # warm-up (imports)
    direct = []
    for s in seeds:
        cfg = cfg0.model_copy(update={"train": cfg0.train.model_copy(update={"seed": s})})
        t0 = time.perf_counter()
        train_run(cfg)
        direct.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        run_sweep(path, SweepOptions(out=str(tmp / "sweep")), stream=null)
    wall = time.perf_counter() - t0
    store = SweepStore.open(tmp / "sweep")
    swept = [a["ended"] - a["started"] for a in store.attempts()]
    md, ms = statistics.median(direct), statistics.median(swept)
    print(f"runs: {n} tiny training runs (1 epoch, 64 digits), local executor")
    print(f"  median direct train_run        {md:8.3f} s")
    print(f"  median sweep run (claim..commit) {ms:6.3f} s")
    print(f"  overhead per run (median diff) {ms - md:8.3f} s   (target <= 1 s)")
    print(f"  sweep wall {wall:.2f} s vs direct total {sum(direct):.2f} s: {wall - sum(direct):+.2f} s for the "
          "whole sweep (expansion, validation, store)")


def ray_vs_local(tmp: Path, n: int, epochs: int, cpus: int = 2) -> dict[str, float]:
    """Wall time of the same sweep of ``n`` single-threaded runs with the local executor and with Ray on ``cpus``
    CPUs (``ray.init`` and ``ray.shutdown`` inside the timed region); returns the figures printed."""
    import ray

    from bayespeft.experiments.sweep.command import SweepOptions, run_sweep
    from bayespeft.experiments.sweep.store import SweepStore

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the Ray workers (started below by ray.init)
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)  # the local executor runs in this process
    path = write(tmp, list(range(n)), epochs=epochs)
    walls = {}
    with open(os.devnull, "w") as null:
        t0 = time.perf_counter()
        run_sweep(path, SweepOptions(out=str(tmp / "local")), stream=null)
        walls["local"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - t0
        try:
            run_sweep(path, SweepOptions(out=str(tmp / "ray"), executor="ray"), stream=null)
        finally:
            ray.shutdown()
        walls["ray"] = time.perf_counter() - t0
    stores = {k: SweepStore.open(tmp / k) for k in walls}
    per_run = {k: statistics.median(a["ended"] - a["started"] for a in st.attempts()) for k, st in stores.items()}
    same = [r.metrics["rows"] for r in stores["local"].runs()] == [r.metrics["rows"] for r in stores["ray"].runs()]
    done = {k: st.counts()["done"] for k, st in stores.items()}
    pids = {json.loads((Path(r.run_dir) / "result.json").read_text())["pid"] for r in stores["ray"].runs()}
    in_workers = os.getpid() not in pids
    ratio = walls["ray"] / walls["local"]
    print(f"ray vs local: {n} single-threaded runs of {epochs} epochs, Ray on {cpus} CPUs ({os.cpu_count()} on the machine)")
    print(f"  median run: local {per_run['local']:.1f} s, in a Ray worker {per_run['ray']:.1f} s   (target >= 20 s)")
    print(f"  wall: local {walls['local']:.1f} s, ray {walls['ray']:.1f} s (Ray start-up included): ratio {ratio:.2f}"
          f"   (target <= 0.6 on 2 CPUs); runs done {done['local']}/{done['ray']}, same results: {same}, "
          f"Ray runs in {len(pids)} worker process(es){'' if in_workers else ' INCLUDING THE DRIVER'}")
    print(f"  of which ray.init {startup:.1f} s; without it the ratio is {(walls['ray'] - startup) / walls['local']:.2f} "
          "(workers still start inside the runs' time)")
    return {"local_s": walls["local"], "ray_s": walls["ray"], "ratio": ratio, "run_local_s": per_run["local"],
            "run_ray_s": per_run["ray"], "same_results": same, "done_local": done["local"], "done_ray": done["ray"], "ray_in_workers": in_workers,
            "ray_worker_pids": len(pids), "ray_init_s": startup}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--ray", action="store_true")
    p.add_argument("--ray-runs", type=int, default=8)
    p.add_argument("--ray-epochs", type=int, default=600)
    p.add_argument("--ray-cpus", type=int, default=2)
    p.add_argument("--ray-only", action="store_true", help="skip the overhead measurement")
    args = p.parse_args()
    os.environ.setdefault("BAYESPEFT_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as d:
        if not args.ray_only:
            overhead(Path(d) / "overhead", args.runs)
        if args.ray or args.ray_only:
            ray_vs_local(Path(d) / "ray", args.ray_runs, args.ray_epochs, args.ray_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
