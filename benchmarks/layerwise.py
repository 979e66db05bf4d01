"""Layer-wise Laplace speed: naive protocol vs bayespeft's shared passes, as ratios measured in one run.

Model: the ViT-Tiny-sized LoRA ViT of ``benchmarks/laplace_vs_peers.py`` (its ``build_model``: a 12-layer
``transformers`` ViT, width 192, LoRA r=8 on q/v, random init with non-zero LoRA B), CPU, 1 torch thread by default
(on a shared, loaded 2-core machine two OpenMP threads wait for each other: a forward measured 10x slower than with
one thread, which distorts every ratio). Each timing is the best of ``--repeats`` runs, interleaved with its
baseline's runs so that both see the same load. Groups: the 12 blocks (``vit.layers.<i>``; the classifier is frozen
in this model). Rows:

* curvature: ``LayerwiseLaplace.fit`` over all 12 groups vs ONE group's ``laplace.fit(subset=group)`` (the first
  block, whose backward goes through the whole network like ours; also the mean of the first, middle and last
  block). Target <= 1.2x. The naive protocol pays the sum of 12 single-group fits. Prior tuning (no data pass; all
  groups in one Adam loop) is a separate row.
* MC predictive, every group, ``S`` samples over the test set: cached prefix (ours; on CPU one draw per forward)
  vs the naive full forward for every sample, same seed; also ours with ``--sample-batch`` draws stacked per forward
  (what an accelerator uses; on CPU it does not pay: 30 stacked draws measured 1.5x slower than one at a time).
  The naive cost does not depend on the group (one full forward per sample), so it is measured on the
  first/middle/last block and scaled to all groups; the largest probability difference on those groups is printed
  (same numbers). Target <= 0.6x.
* GLM predictive (probit), every group from one pass of output gradients per batch vs the naive MC above.
  Target <= 0.1x.
* peak RSS growth of each phase (``/proc/self/clear_refs`` + ``VmHWM``, Linux).

Usage: ``python benchmarks/layerwise.py [--quick] [--n-train 128] [--n-test 16] [--samples 30] [--repeats 2]`` (defaults sized for
a few minutes on a busy 2-core CPU; the ratios do not depend on the set sizes); ``--quick``: 4 layers, 32 training /
8 test examples, 8 samples.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from laplace_vs_peers import build_model, data  # noqa: E402

TARGETS = {"curvature": 1.2, "mc": 0.6, "glm": 0.1}


def rss(key: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def measured(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak RSS growth in MiB, result) of one call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = rss("VmRSS:")
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, rss("VmHWM:") - before, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--curvature", default="fisher", choices=["fisher", "ggn"])
    ap.add_argument("--structure", default="kfac", choices=["kfac", "diag"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many interleaved runs per timing")
    ap.add_argument("--sample-batch", type=int, default=6, help="draws stacked per forward in the extra MC row")
    args = ap.parse_args()
    layers, n_train, n_test, samples = (4, 32, 8, 8) if args.quick else (12, 128, 16, 30)
    layers = args.layers or layers
    n_train, n_test, samples = args.n_train or n_train, args.n_test or n_test, args.samples or samples
    torch.set_num_threads(args.threads)

    import bayespeft.laplace as bl
    from bayespeft.laplace.layerwise import LayerwiseLaplace

    model = build_model(layers).eval()
    train = DataLoader(data(n_train), batch_size=32)
    test = DataLoader(data(n_test, seed=2), batch_size=32)
    fit_kw = {"structure": args.structure, "curvature": args.curvature, "progress": False}
    print(f"ViT {layers} layers, LoRA r=8 q/v; {n_train} train / {n_test} test examples, {samples} samples, "
          f"{args.structure} {args.curvature}, {args.threads} threads", flush=True)

    t_ours, m_ours, lw = measured(lambda: LayerwiseLaplace.fit(model, train, "block", **fit_kw))
    t_tune, _, _ = measured(lambda: lw.tune_priors("marglik"))
    groups = lw.groups
    print(f"groups: {[g.name for g in groups]}", flush=True)
    probe = sorted({0, len(groups) // 2, len(groups) - 1})  # first, middle, last block
    singles, single_tunes = {}, []
    for i in probe:
        t, m, post = measured(lambda i=i: bl.fit(model, train, subset=list(groups[i].param_names), **fit_kw))
        singles[groups[i].name] = (t, m)
        single_tunes.append(measured(lambda post=post: post.optimize_prior("marglik", progress=False))[0])
    for _ in range(args.repeats - 1):  # interleaved: ours and the first block's fit see the same load
        t_ours = min(t_ours, measured(lambda: LayerwiseLaplace.fit(model, train, "block", **fit_kw))[0])
        t = measured(lambda: bl.fit(model, train, subset=list(groups[0].param_names), **fit_kw))[0]
        singles[groups[0].name] = (min(t, singles[groups[0].name][0]), singles[groups[0].name][1])
    print(f"curvature: all groups {t_ours:.2f}s, first block {singles[groups[0].name][0]:.2f}s", flush=True)
    t_first = singles[groups[0].name][0]
    t_mean = sum(v[0] for v in singles.values()) / len(singles)

    # naive MC costs one full forward per sample whatever the group: measured on the probe groups, scaled to all
    all_sets = [[g.name] for g in groups]
    probe_sets = [all_sets[i] for i in probe]
    mc_kw = {"n_samples": samples, "progress": False}
    t_naive_probe, m_naive, naive = measured(lambda: lw.predict_loader(test, probe_sets, "mc", path="naive", **mc_kw))
    stack = args.sample_batch
    t_mc, m_mc, fast = measured(lambda: lw.predict_loader(test, all_sets, "mc", **mc_kw))
    t_one, m_one, one = measured(lambda: lw.predict_loader(test, all_sets, "mc", sample_batch=stack, **mc_kw))
    for _ in range(args.repeats - 1):
        t_naive_probe = min(t_naive_probe, measured(lambda: lw.predict_loader(test, probe_sets, "mc", path="naive", **mc_kw))[0])
        t_mc = min(t_mc, measured(lambda: lw.predict_loader(test, all_sets, "mc", **mc_kw))[0])
        t_one = min(t_one, measured(lambda: lw.predict_loader(test, all_sets, "mc", sample_batch=stack, **mc_kw))[0])
    t_naive = t_naive_probe * len(groups) / len(probe)
    diff = max(float((r.probs[i] - b).abs().max()) for r in (fast, one) for i, b in zip(probe, naive.probs))
    t_glm, m_glm, _ = measured(lambda: lw.predict_loader(test, all_sets, "glm", link="probit", progress=False))

    L = len(groups)
    rows = [
        ("curvature: all groups in one pass (ours) vs first block's fit", t_ours, t_first, "curvature", m_ours),
        ("  vs mean single-group fit (first/middle/last block)", t_ours, t_mean, None, None),
        (f"  naive protocol: {L} single-group fits (est. {L} x mean)", L * t_mean, t_ours, None, None),
        (f"prior tuning, all groups jointly vs {L} x one group's", t_tune, L * sum(single_tunes) / len(single_tunes), None, None),
        (f"MC, every group: cached prefix (ours) vs naive (scaled from {len(probe)})", t_mc, t_naive, "mc", m_mc),
        (f"  ours with {stack} draws stacked per forward vs naive", t_one, t_naive, None, m_one),
        ("GLM probit, every group from one pass vs naive MC", t_glm, t_naive, "glm", m_glm),
    ]
    print(f"\n{'what':<58} {'ours s':>8} {'base s':>8} {'ratio':>7}  target    peak RSS +MiB")
    for label, a, b, key, mem in rows:
        target = TARGETS.get(key) if key else None
        flag = "" if target is None else f"<= {target:g}" + (" ok" if a / b <= target else " MISSED")
        mem_s = "" if mem is None else f"{mem:8.1f}"
        print(f"{label:<58} {a:8.2f} {b:8.2f} {a / b:6.2f}x  {flag:<9} {mem_s}")
    print(f"single-group fits: " + ", ".join(f"{k} {v[0]:.2f}s (+{v[1]:.0f} MiB)" for k, v in singles.items()))
    print(f"naive MC peak RSS +{m_naive:.1f} MiB; MC paths: " + " | ".join(sorted(set(fast.paths))))
    print(f"largest |p_cached - p_naive| on the probe groups: {diff:.2e} (same seed)")


if __name__ == "__main__":
    main()
