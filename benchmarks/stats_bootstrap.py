"""Paired ΔECE bootstrap: the vectorised ``bayespeft.stats.delta_ece_interval`` vs a per-replicate loop, one run.

Data: N test examples, C = 10 classes, two predictives ("MAP" and a tempered "Bayes" copy) from random logits;
B bootstrap replicates, seed 0. Rows (seconds, best of ``--repeat``):

* ``index draw``: ``default_rng(0).integers(0, N, (B, N))`` alone — the part any implementation pays;
* ``delta_ece_interval``: the whole interval (binning, B x N weights, two (B, N) @ (N, M) products per block);
* ``per-replicate loop``: for each replicate, ``bayespeft.metrics.calibration_error`` of both predictives on the
  resampled probabilities (the obvious implementation). It runs on the first ``--loop-replicates`` replicates and
  is scaled linearly to B; its ΔECE values are checked against the vectorised ones (max abs difference printed).

Target (issue 9): B = 2000, N = 10,000 well under a second. Usage: ``python benchmarks/stats_bootstrap.py
[--n 10000] [--n-boot 2000] [--loop-replicates 100] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(repeat: int, fn):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--loop-replicates", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from bayespeft.metrics import calibration_error
    from bayespeft.stats import delta_ece_interval
    from bayespeft.stats.intervals import bootstrap_index_blocks

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.normal(size=(args.n, 10))
    y = rng.integers(0, 10, args.n)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_map, p_bayes = softmax(logits), softmax(logits / 1.5)
    top = [(p.max(1), p.argmax(1) == y) for p in (p_map, p_bayes)]
    delta_ece_interval(*top[0], *top[1], n_boot=2)  # imports and first-call costs

    t_draw, _ = best_of(args.repeat, lambda: np.random.default_rng(0).integers(0, args.n, (args.n_boot, args.n)))
    t_fast, r = best_of(args.repeat, lambda: delta_ece_interval(*top[0], *top[1], n_boot=args.n_boot, seed=0))

    k = min(args.loop_replicates, args.n_boot)
    idx = next(bootstrap_index_blocks(args.n, args.n_boot, 0, block=k))  # the first k replicates, same stream

    def loop():
        return [calibration_error(p_map[i], y[i]) - calibration_error(p_bayes[i], y[i]) for i in idx]

    t_loop, ref = best_of(1, loop)
    t_loop *= args.n_boot / k
    err = float(np.max(np.abs(np.asarray(ref) - r.replicates[:k])))

    print(f"N = {args.n}, B = {args.n_boot}; ΔECE = {r.estimate:.4f}, 95% [{r.lo:.4f}, {r.hi:.4f}]")
    print(f"{'row':<22}{'seconds':>10}{'x draw':>9}")
    for name, t in (("index draw", t_draw), ("delta_ece_interval", t_fast), ("per-replicate loop*", t_loop)):
        print(f"{name:<22}{t:>10.3f}{t / t_draw:>9.1f}")
    print(f"* {k} replicates scaled to {args.n_boot}; max |loop - vectorised| over them = {err:.1e}")


if __name__ == "__main__":
    main()
