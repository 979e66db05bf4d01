"""Trainer overhead: ``bayespeft.train.fit`` vs a bare PyTorch loop, per epoch, measured in one run.

Same model (the digits config's timm micro ViT, embed 48, depth 3, 3 heads, random init, PEFT LoRA r=4 on qkv +
head), same batches (scikit-learn digits, 400 training images, batch 32, a loader shuffled by a generator with the
same seed), AdamW with the same learning rate and weight decay, CPU, fp32, no validation set, no gradient clipping.

* bare: ``for x, y in loader: loss = CE(model(x), y); zero_grad; backward; step`` -- nothing else;
* ours: ``fit(model, loader, None, cfg, run_dir)``: the same steps plus what a user gets with them (cosine schedule,
  loss/accuracy bookkeeping, the per-step finiteness check, seeding, and after each epoch the resumable checkpoint:
  weights, optimiser/scheduler/RNG state, history.json).

Each round builds fresh models from the same seed and runs ``--epochs`` epochs of both, alternating which goes first;
the printed ratio is the median over rounds of ours / bare per epoch. Target <= 1.05x.

    PYTHONPATH=src python benchmarks/trainer_overhead.py [--epochs 3] [--rounds 5] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from bayespeft.adapters import AdapterConfig, apply_adapter  # noqa: E402
from bayespeft.models import ModelConfig, build_model  # noqa: E402
from bayespeft.train import TrainConfig, fit  # noqa: E402

TARGET = 1.05
LR, WD = 1e-2, 0.01


def model():
    torch.manual_seed(0)
    m = build_model(ModelConfig(name="micro_vit", pretrained=False, overrides={"embed_dim": 48, "depth": 3, "num_heads": 3}), 10)
    return apply_adapter(m, AdapterConfig(method="lora", r=4, alpha=8))


def loader():
    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X[:400], dtype=torch.float32).reshape(-1, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    return DataLoader(TensorDataset(x, torch.tensor(y[:400])), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def bare(epochs: int) -> float:
    m, data = model(), loader()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    m.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in data:
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (time.perf_counter() - t0) / epochs


def ours(epochs: int) -> float:
    m, data = model(), loader()
    cfg = TrainConfig(epochs=epochs, lr=LR, weight_decay=WD, grad_clip=None, patience=None, device="cpu",
                      progress=False, warmup_ratio=0.0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        fit(m, data, None, cfg, d, resume=False)
        return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one fit() run instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        import cProfile
        import pstats

        ours(1)
        cProfile.runctx("ours(args.epochs)", globals(), {"args": args, "ours": ours}, "/tmp/trainer_overhead.prof")
        pstats.Stats("/tmp/trainer_overhead.prof").sort_stats("tottime").print_stats(25)
        return
    bare(1), ours(1)  # warm-up
    ratios, tb, to = [], [], []
    for r in range(args.rounds):
        if r % 2:
            o, b = ours(args.epochs), bare(args.epochs)
        else:
            b, o = bare(args.epochs), ours(args.epochs)
        tb.append(b), to.append(o), ratios.append(o / b)
    ratio = statistics.median(ratios)
    print(f"micro ViT + LoRA, 13 steps/epoch x {args.epochs} epochs, {args.threads} thread(s), {args.rounds} rounds")
    print(f"  bare loop        {statistics.median(tb):.3f} s/epoch")
    print(f"  bayespeft fit    {statistics.median(to):.3f} s/epoch")
    print(f"  fit / bare = {ratio:.3f}x (per-round {', '.join(f'{x:.3f}' for x in ratios)}; target <= {TARGET}x): "
          f"{'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
