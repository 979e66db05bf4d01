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
   >= 20 s each, Ray start-up included): the same sweep of ``--ray-runs`` longer runs (``--ray-epochs``) with both
   executors, wall time of each and the ratio.

Usage: ``python benchmarks/sweep_overhead.py [--runs 20] [--ray --ray-runs 8 --ray-epochs 40]``.
"""

from __future__ import annotations

import argparse
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


def ray_vs_local(tmp: Path, n: int, epochs: int) -> None:
    from bayespeft.experiments.sweep.command import SweepOptions, run_sweep

    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    path = write(tmp, list(range(n)), epochs=epochs)
    walls = {}
    for executor in ("local", "ray"):
        t0 = time.perf_counter()
        with open(os.devnull, "w") as null:
            run_sweep(path, SweepOptions(out=str(tmp / executor), executor=executor), stream=null)
        walls[executor] = time.perf_counter() - t0
    print(f"ray vs local: {n} single-threaded runs of {epochs} epochs, {os.cpu_count()} CPUs")
    print(f"  local {walls['local']:.1f} s, ray {walls['ray']:.1f} s (start-up included): "
          f"ratio {walls['ray'] / walls['local']:.2f}   (target <= 0.6 on 2 CPUs)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--ray", action="store_true")
    p.add_argument("--ray-runs", type=int, default=8)
    p.add_argument("--ray-epochs", type=int, default=40)
    args = p.parse_args()
    os.environ.setdefault("BAYESPEFT_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as d:
        overhead(Path(d) / "overhead", args.runs)
        if args.ray:
            ray_vs_local(Path(d) / "ray", args.ray_runs, args.ray_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
