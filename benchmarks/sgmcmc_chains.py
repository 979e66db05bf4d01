"""Many chains at once: ``run_chains`` wall time of 4 vectorised chains vs 1 chain (and vs 4 chains one at a time).

Model: the digits config's micro ViT (timm ``VisionTransformer``, embed 48, depth 3, 3 heads, 8x8 1-channel input,
random init) with PEFT LoRA r=4 on qkv + the head, SGLD over the trainable parameters; data: scikit-learn's bundled
digits, 400 training images, batch 32, ``--epochs`` passes per chain (burn-in 1 epoch, thin 3), CPU. Every run
includes what a user waits for: sampler steps, kept samples written to the store, probe diagnostics, resume files.
Rows are measured in one process, interleaved over ``--rounds`` rounds (median). Target: 4 vectorised chains <= 1.6x
one chain.

The same run also prints the arithmetic floor of this device: one chain's gradient (``log p`` and its backward) on a
batch of 32 and on 4 x 32 examples (what four chains must compute at each step), and the batched gradient of 4 chains
(``StackedGradient``: one vmapped forward, one backward). Where the 128-example gradient already costs ~2.5x the
32-example one (a compute-bound CPU), no implementation of 4 independent chains gets near 1.6x; where it costs ~1x
(an idle GPU), the rest of the step (per-chain updates, store, probes) decides.

    PYTHONPATH=src python benchmarks/sgmcmc_chains.py [--epochs 3] [--rounds 3] [--threads 1] [--device cuda]

``--device cuda`` runs the same model and chains on a GPU (where one chain of this small model leaves the device
mostly idle).
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
from sklearn.datasets import load_digits  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from bayespeft.adapters import AdapterConfig, apply_adapter  # noqa: E402
from bayespeft.models import ModelConfig, build_model  # noqa: E402
from bayespeft.sgmcmc import SamplerConfig, build, run_chains  # noqa: E402
from bayespeft.sgmcmc.model import model_log_prob, trainable_params  # noqa: E402
from bayespeft.evalmode import unfused_attention  # noqa: E402
from bayespeft.sgmcmc.vectorized import StackedGradient  # noqa: E402

TARGET = 1.6


def setup(epochs: int, device: str = "cpu"):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="micro_vit", pretrained=False,
                                    overrides={"embed_dim": 48, "depth": 3, "num_heads": 3}), 10)
    model = apply_adapter(model, AdapterConfig(method="lora", r=4, alpha=8)).to(device)
    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X[:400], dtype=torch.float32).reshape(-1, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    loader = DataLoader(TensorDataset(x, torch.tensor(y[:400])), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    return model, loader


def timed(model, loader, epochs: int, n_chains: int, vectorize: bool) -> float:
    cfg = SamplerConfig(sampler="sgld", lr=5e-5, epochs=epochs, burn_in_epochs=1, thin=3, n_chains=n_chains,
                        probe_size=64, vectorize_chains=vectorize)
    cuda = next(model.parameters()).is_cuda
    with tempfile.TemporaryDirectory() as d:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_chains(model, loader, cfg, store=d, show_progress=False)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def per_call(fn, device: str, n: int = 20) -> float:
    """Median seconds of ``fn()`` over ``n`` calls after 3 warm-up calls (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        fn()
    out = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def gradient_floor(model, loader, device: str, k: int = 4) -> dict[str, float]:
    """Seconds per call: one chain's gradient on one batch and on ``k`` batches at once, and ``k`` chains' batched
    gradient (each chain its own batch), all at the model's current trainable values."""
    model.eval()
    log_prob = model_log_prob(model, len(loader.dataset))
    params = {n: p.detach().clone().requires_grad_(True) for n, p in trainable_params(model).items()}
    batches = [tuple(t.to(device) for t in b) for b, _ in zip(loader, range(k))]
    big = tuple(torch.cat(col) for col in zip(*batches))

    def one(batch):
        torch.autograd.grad(log_prob(params, batch), list(params.values()))

    sampler = build("sgld", log_prob, lr=1e-5, seed=0)
    states = [sampler.init({n: p.detach() for n, p in params.items()}, seed=c) for c in range(k)]
    stacked = StackedGradient(log_prob)
    with unfused_attention(model):
        chains = per_call(lambda: stacked(states, batches), device)
    return {"one": per_call(lambda: one(batches[0]), device), "big": per_call(lambda: one(big), device),
            "chains": chains}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, loader = setup(args.epochs, args.device)
    rows = {"1 chain": (1, False), "4 chains vectorised": (4, True), "4 chains one at a time": (4, False)}
    timed(model, loader, 1 + 1, 2, True)  # warm-up (vmap, timm, allocator)
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for name, (k, vec) in rows.items():
            times[name].append(timed(model, loader, args.epochs, k, vec))
    base = statistics.median(times["1 chain"])
    steps = args.epochs * len(loader)
    print(f"micro ViT + LoRA, SGLD, {steps} steps per chain, batch 32, {args.threads} thread(s), "
          f"median of {args.rounds} rounds, {args.device}")
    for name in rows:
        t = statistics.median(times[name])
        print(f"  {name:24s} {t:7.2f} s   {t / base:5.2f}x one chain")
    ratio = statistics.median(times["4 chains vectorised"]) / base
    g = gradient_floor(model, loader, args.device)
    print(f"  arithmetic floor: one chain's gradient {1e3 * g['one']:.1f} ms on 32 examples, {1e3 * g['big']:.1f} ms "
          f"on 4 x 32 ({g['big'] / g['one']:.2f}x); 4 chains' batched gradient {1e3 * g['chains']:.1f} ms "
          f"({g['chains'] / g['one']:.2f}x one chain's)")
    print(f"4 vectorised chains / 1 chain = {ratio:.2f}x (target <= {TARGET}x): {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
