"""Trainer overhead: ``bayespeft.train.fit`` vs a bare PyTorch loop, per epoch, measured in one run.

Same model (the digits config's timm micro ViT, embed 48, depth 3, 3 heads, random init, PEFT LoRA r=4 on qkv +
head), same batches (scikit-learn digits, 400 training images, batch 32, a loader shuffled by a generator with the
same seed), AdamW with the same learning rate and weight decay, CPU, fp32, no validation set, no gradient clipping.

* bare: ``for x, y in loader: loss = CE(model(x), y); zero_grad; backward; step`` -- nothing else;
* ours: ``fit(model, loader, None, cfg, run_dir)``: the same steps plus what a user gets with them (cosine schedule,
  loss/accuracy bookkeeping, the per-step finiteness check, seeding, and after each epoch the resumable checkpoint:
  weights, optimiser/scheduler/RNG state, history.json).

Each round builds fresh models from the same seed and runs 1 and ``--epochs`` epochs of both, alternating which goes
first. Per epoch = the slope of wall time over epochs ((T(E) - T(1)) / (E - 1)): what one more epoch costs, without
the once-per-call work (setup, the last epoch's checkpoint write that nothing can overlap, reloading the best weights,
the final history.json), which is printed separately as the intercept. The printed ratio is the median over rounds
of ours / bare per epoch. Target <= 1.05x. The whole call's ratio is printed too.

``--model vit_b16 --device cuda --precision bf16`` measures the same on a GPU with timm ``vit_base_patch16_224``
(random init) + LoRA r=8 on qkv, ``--images`` random 224x224 images (default 1024), batch 64; both loops then
autocast the forward pass to bfloat16, and the bare loop moves each batch to the GPU with ``non_blocking=True``.

    PYTHONPATH=src python benchmarks/trainer_overhead.py [--epochs 6] [--rounds 5] [--threads 1] [--profile]
    PYTHONPATH=src python benchmarks/trainer_overhead.py --model vit_b16 --device cuda --precision bf16 --rounds 3
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
#: what the command line chose: model ("micro" or "vit_b16"), device, precision ("fp32" or "bf16"), images
SETUP = {"model": "micro", "device": "cpu", "precision": "fp32", "images": 1024}


def model():
    torch.manual_seed(0)
    if SETUP["model"] == "vit_b16":
        m = build_model(ModelConfig(name="vit_base_patch16_224", pretrained=False), 10)
        return apply_adapter(m, AdapterConfig(method="lora", r=8, alpha=16)).to(SETUP["device"])
    m = build_model(ModelConfig(name="micro_vit", pretrained=False, overrides={"embed_dim": 48, "depth": 3, "num_heads": 3}), 10)
    return apply_adapter(m, AdapterConfig(method="lora", r=4, alpha=8)).to(SETUP["device"])


def loader():
    if SETUP["model"] == "vit_b16":
        g = torch.Generator().manual_seed(0)
        n = SETUP["images"]
        data = TensorDataset(torch.randn(n, 3, 224, 224, generator=g), torch.randint(0, 10, (n,), generator=g))
        return DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
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
    dev = torch.device(SETUP["device"])
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=SETUP["precision"] == "bf16")
    _sync()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in data:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with amp:
                logits = m(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync()
    return (time.perf_counter() - t0) / epochs


def _sync() -> None:
    if SETUP["device"].startswith("cuda"):
        torch.cuda.synchronize()


def ours(epochs: int) -> float:
    m, data = model(), loader()
    cfg = TrainConfig(epochs=epochs, lr=LR, weight_decay=WD, grad_clip=None, patience=None, device=SETUP["device"],
                      precision=SETUP["precision"], progress=False, warmup_ratio=0.0)
    with tempfile.TemporaryDirectory() as d:
        _sync()
        t0 = time.perf_counter()
        fit(m, data, None, cfg, d, resume=False)
        _sync()
        return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6, help="the longer of the two fits per round (the other: 1 epoch)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one fit() run instead")
    ap.add_argument("--model", choices=("micro", "vit_b16"), default="micro")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--images", type=int, default=1024, help="random images per epoch for --model vit_b16")
    args = ap.parse_args()
    SETUP.update(model=args.model, device=args.device, precision=args.precision, images=args.images)
    torch.set_num_threads(args.threads)
    if args.profile:
        import cProfile
        import pstats

        ours(1)
        cProfile.runctx("ours(args.epochs)", globals(), {"args": args, "ours": ours}, "/tmp/trainer_overhead.prof")
        pstats.Stats("/tmp/trainer_overhead.prof").sort_stats("tottime").print_stats(25)
        return
    bare(1), ours(1)  # warm-up
    lo, hi = 1, args.epochs
    per_epoch, whole, fixed = [], [], {"bare": [], "ours": []}
    tb, to = [], []
    for r in range(args.rounds):
        runs = (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare))
        t = {(name, e): f(e) * e for e in (lo, hi) for name, f in runs}  # seconds of the whole fit / loop
        for name in ("bare", "ours"):
            slope = (t[name, hi] - t[name, lo]) / (hi - lo)
            fixed[name].append(t[name, lo] - slope * lo)
            (tb if name == "bare" else to).append(slope)
        per_epoch.append(to[-1] / tb[-1])
        whole.append(t["ours", hi] / t["bare", hi])
    ratio = statistics.median(per_epoch)
    what = ("micro ViT + LoRA, 13 steps/epoch" if args.model == "micro"
            else f"ViT-B/16 + LoRA, {args.images // 64} steps/epoch of 64 images")
    print(f"{what}, {args.device} {args.precision}, {args.threads} thread(s), {args.rounds} rounds of {lo} and {hi} epochs")
    print(f"  bare loop        {statistics.median(tb):.4f} s per epoch, {statistics.median(fixed['bare']) * 1e3:+.1f} ms per call")
    print(f"  bayespeft fit    {statistics.median(to):.4f} s per epoch, {statistics.median(fixed['ours']) * 1e3:+.1f} ms per call "
          "(setup, the last checkpoint write, best weights reloaded, history.json)")
    print(f"  whole {hi}-epoch call: fit / bare = {statistics.median(whole):.3f}x")
    print(f"  per epoch (the slope over {lo} -> {hi} epochs): fit / bare = {ratio:.3f}x "
          f"(per-round {', '.join(f'{x:.3f}' for x in per_epoch)}; target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")

if __name__ == "__main__":
    main()
