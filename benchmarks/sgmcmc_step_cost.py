"""Cost of one SG-MCMC step vs one AdamW step on the same model and batch, and of keeping a sample vs a bare
``safetensors.save_file`` of the same tensors. Ratios are measured in the same run (interleaved rounds, median).

Targets: SGLD <= 1.05x AdamW; SAM variants <= 2.1x AdamW (two forward/backward passes per step).

    .venv/bin/python benchmarks/sgmcmc_step_cost.py [--device cpu|cuda] [--threads 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from bayespeft.sgmcmc import SAMPLERS, SampleStore, build, model_log_prob, trainable_params


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class MLPMixerish(nn.Module):
    """Transformer-ish MLP: token-wise residual MLP blocks over (B, L, d), mean-pooled head."""

    def __init__(self, d=128, depth=4, classes=10, tokens=16):
        super().__init__()
        self.embed = nn.Linear(32, d)
        self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean(1))


def timeit(fn, n, sync):
    for _ in range(3):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = MLPMixerish().to(dev)
    for n, p in model.named_parameters():  # adapter-like: tune the blocks' second layers, norms and the head
        p.requires_grad_(("fc2" in n) or ("norm" in n) or n.startswith("head"))
    batch = (torch.randn(64, 16, 32, device=dev), torch.randint(0, 10, (64,), device=dev))
    params = list(trainable_params(model).values())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2, foreach=True)

    def adamw_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        opt.step()

    log_prob = model_log_prob(model, n_data=50_000, prior_std=1.0)
    theta0 = {k: v.detach() for k, v in trainable_params(model).items()}
    steppers = {}
    for name in SAMPLERS.names():
        s = build(name, log_prob, lr=1e-7, temperature=1.0, seed=0)
        st = s.init(theta0)
        steppers[name] = (lambda s=s, st=st: s.step(st, batch))
    tmp = Path(tempfile.mkdtemp())
    store = SampleStore(tmp / "store")
    host = {k: v.detach().cpu().contiguous() for k, v in theta0.items()}
    counter = iter(range(10**9))

    def keep():
        store.add(0, theta0, step=next(counter))

    def bare_save():
        save_file({k: v.detach().cpu().contiguous() for k, v in theta0.items()}, str(tmp / "bare.safetensors"))

    res = {k: [] for k in ["adamw", *steppers, "keep", "save_file"]}
    for _ in range(args.rounds):
        res["adamw"].append(timeit(adamw_step, args.steps, sync))
        for name, fn in steppers.items():
            res[name].append(timeit(fn, args.steps, sync))
        res["keep"].append(timeit(keep, 5, sync))
        res["save_file"].append(timeit(bare_save, 5, sync))
    med = {k: statistics.median(v) for k, v in res.items()}
    n_tr = sum(p.numel() for p in params)
    print(f"device={dev} threads={torch.get_num_threads()} trainable={n_tr:,} of "
          f"{sum(p.numel() for p in model.parameters()):,} params, batch 64x16x32, {args.rounds} rounds x {args.steps} steps")
    print(f"{'step':>12} {'ms':>8} {'x AdamW':>8}  target")
    targets = {"sgld": 1.05, "sam_sgld": 2.1, "sam_sgld_r1": 2.1}
    for k in ["adamw", *steppers]:
        tgt = targets.get(k)
        flag = "" if tgt is None else (f"<= {tgt}  {'OK' if med[k] / med['adamw'] <= tgt else 'MISSED'}")
        print(f"{k:>12} {med[k] * 1e3:8.3f} {med[k] / med['adamw']:8.3f}  {flag}")
    print(f"keep sample (store.add) {med['keep'] * 1e3:.3f} ms vs safetensors.save_file {med['save_file'] * 1e3:.3f} ms:"
          f" {med['keep'] / med['save_file']:.2f}x")


if __name__ == "__main__":
    main()
