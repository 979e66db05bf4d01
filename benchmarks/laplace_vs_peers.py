"""Laplace speed and memory on a LoRA ViT: bayespeft vs bayesian-lora and laplace-torch, as ratios measured in one run.

Model: a 12-layer ViT-Tiny-sized ``transformers`` ViT (image 32, patch 4, width 192, 3 heads, MLP 768, 10 classes),
random init, LoRA r=8 on ``q_proj``/``v_proj`` via PEFT (73,728 adapter parameters; transformers 5 names), wrapped to
take a tensor and return logits. 512 random training examples (3x32x32), batch size 32, CPU, 2 torch threads.

Unit: one training epoch (forward + backward + AdamW over the 512 examples). Rows:

* bayesian-lora ``calculate_kronecker_factors`` (targets ``["lora"]``; last token only, so it does less work);
* laplace-torch ``Laplace(..., subset_of_weights="all", hessian_structure="kron").fit`` with ``AsdlGGN`` and
  ``CurvlinopsGGN`` (exact GGN, ``C`` backward passes). These are slow, so by default they run on the first
  ``--peer-examples`` examples and their time is scaled linearly to 512 (fit cost is linear in the data; the row
  says so);
* ours: ``bayespeft.laplace.fit`` KFAC Fisher (target <= 1.1x), KFAC exact GGN, diag Fisher (target <= 1.5x),
  diag GGN; GLM probit predictive on one batch of 32 relative to a MAP forward on the same batch (target <= 25x);
* peak RSS growth of our GLM predictive for 64/256/1024 test examples (one subprocess per size; the peak is reset
  with ``/proc/self/clear_refs`` before predicting, falling back to ``resource.getrusage``).

``--with-laplace-torch-predictive`` adds laplace-torch's GLM predictive on at most 4 examples (it needs ~20 GB for
16; never run by default). ``--quick``: 4 layers, 128 examples, memory sizes 16/64/256.

Usage: ``python benchmarks/laplace_vs_peers.py [--quick] [--with-laplace-torch-predictive]``; ``--n-train`` changes the
training-set size (every fit and the epoch scale linearly with it, so the ratios do not depend on it),
``--mem-sizes 64,256`` / ``--mem-sizes ""`` chooses or skips the memory rows, ``--memory-only`` runs only them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

TARGETS = {"ours KFAC Fisher fit": 1.1, "ours diag Fisher fit": 1.5, "ours GLM probit predictive (vs MAP forward)": 25.0}


class Logits(nn.Module):
    """Tensor in, logits out (what laplace-torch needs; used for every method so they all see the same model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def build_model(layers: int, seed: int = 0) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=layers, num_attention_heads=3,
        intermediate_size=768, num_labels=10,
    )
    model = get_peft_model(ViTForImageClassification(cfg), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at 0, which zeroes the A-gradients; a trained adapter is not zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    return Logits(model)


def data(n: int, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def train_epoch(model: nn.Module, loader: DataLoader) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def peak_rss_child(n_test: int, layers: int) -> dict[str, float]:
    """Fit a KFAC posterior on 64 examples, then measure the RSS peak while predicting ``n_test`` examples."""
    import bayespeft.laplace as bl

    torch.set_num_threads(2)
    model = build_model(layers).eval()
    post = bl.fit(model, DataLoader(data(64), batch_size=32), structure="kfac", curvature="fisher", progress=False)
    x = data(n_test, seed=2).tensors[0]

    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return float(line.split()[1]) / 1024.0  # MiB
        raise KeyError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS high-water mark (Linux)
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (includes the fit)"
    before = status("VmRSS:")
    probs = post.predict(x, method="glm", link="probit", chunk_size=32)
    assert probs.shape == (n_test, 10)
    peak = status("VmHWM:") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"n_test": n_test, "rss_before_mib": before, "peak_mib": peak, "growth_mib": peak - before, "method": method}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 layers, 128 examples, smaller memory sizes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--n-train", type=int, default=None, help="training examples (default 512; 128 with --quick)")
    ap.add_argument("--mem-sizes", default=None, help="comma-separated test-set sizes for the memory rows ('' to skip; default 64,256,1024)")
    ap.add_argument("--memory-only", action="store_true", help="only the memory rows")
    ap.add_argument("--peer-examples", type=int, default=64, help="examples for laplace-torch fits (scaled to the full set)")
    ap.add_argument("--with-laplace-torch-predictive", action="store_true", help="also time laplace-torch's GLM predictive on <= 4 examples (slow, ~GBs)")
    ap.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_layers", type=int, default=12, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_child is not None:
        print(json.dumps(peak_rss_child(args._memory_child, args._layers)))
        return

    import bayesian_lora
    from laplace import Laplace
    from laplace.curvature import AsdlGGN, CurvlinopsGGN

    import bayespeft.laplace as bl

    torch.set_num_threads(args.threads)
    layers, n_train = (4, 128) if args.quick else (12, 512)
    n_train = args.n_train or n_train
    mem_sizes = (16, 64, 256) if args.quick else (64, 256, 1024)
    if args.mem_sizes is not None:
        mem_sizes = tuple(int(v) for v in args.mem_sizes.split(",") if v.strip())
    if args.memory_only:
        memory_rows(mem_sizes, layers)
        return
    model = build_model(layers)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train = data(n_train)
    loader = DataLoader(train, batch_size=32)
    peer_n = min(args.peer_examples, n_train)
    peer_loader = DataLoader(TensorDataset(*(t[:peer_n] for t in train.tensors)), batch_size=32)
    print(f"ViT {layers} layers, LoRA r=8 q/v: {n_lora:,} adapter params; {n_train} examples, batch 32, {args.threads} threads")

    rows: list[tuple[str, float, str]] = []
    train_epoch(model, loader)  # warm-up (allocator, lazy init) and a short MAP fit
    t_epoch, _ = timed(lambda: train_epoch(model, loader), repeats=2)
    rows.append(("training epoch (fwd+bwd+AdamW)", t_epoch, ""))

    bl_model = copy.deepcopy(model)  # its full backward hooks leave a flag that breaks ASDL's hooks afterwards

    def bl_factors() -> Any:
        return bayesian_lora.calculate_kronecker_factors(bl_model, lambda m, b: m(b[0]), loader, target_module_keywords=["lora"])

    rows.append(("bayesian-lora calculate_kronecker_factors", timed(bl_factors)[0], "last token only"))
    for backend in (AsdlGGN, CurvlinopsGGN):
        la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron", backend=backend)
        t, _ = timed(lambda: la.fit(peer_loader))
        note = f"scaled from {peer_n} examples" if peer_n < n_train else ""
        rows.append((f"laplace-torch kron fit, {backend.__name__}", t * n_train / peer_n, note))
        del la

    fits = {}
    for label, structure, curvature in (
        ("ours KFAC Fisher fit", "kfac", "fisher"),
        ("ours KFAC exact-GGN fit", "kfac", "ggn"),
        ("ours diag Fisher fit", "diag", "fisher"),
        ("ours diag exact-GGN fit", "diag", "ggn"),
    ):
        t, post = timed(lambda: bl.fit(model, loader, structure=structure, curvature=curvature, progress=False))
        fits[label] = post
        rows.append((label, t, ""))

    t_epoch_again, _ = timed(lambda: train_epoch(copy.deepcopy(model), loader))
    rows[0] = (rows[0][0], min(t_epoch, t_epoch_again), "fastest of 3 epochs (before and after the fits)")
    t_epoch = rows[0][1]

    xb = train.tensors[0][:32]
    post = fits["ours KFAC Fisher fit"]
    with torch.no_grad():
        t_map, _ = timed(lambda: model(xb), repeats=3)
    t_pred, _ = timed(lambda: post.predict(xb, method="glm", link="probit"), repeats=2)
    pred_rows = [("MAP forward, 32 examples", t_map, "unit for the next row"),
                 ("ours GLM probit predictive (vs MAP forward)", t_pred, "KFAC")]
    if args.with_laplace_torch_predictive:
        la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron", backend=CurvlinopsGGN)
        la.fit(peer_loader)
        x4 = xb[:4]
        with torch.no_grad():
            t_map4, _ = timed(lambda: model(x4), repeats=3)
        t_la, _ = timed(lambda: la(x4, pred_type="glm", link_approx="probit"))
        pred_rows.append(("laplace-torch GLM probit predictive, 4 examples (vs MAP forward on 4)", t_la * t_map / t_map4, "rescaled"))

    print(f"\n{'what':<62} {'seconds':>9} {'ratio':>8}  target  note")
    for label, t, note in rows:
        ratio = t / t_epoch
        target = TARGETS.get(label)
        flag = "" if target is None else (f"<= {target:g}" + (" ok" if ratio <= target else " MISSED"))
        print(f"{label:<62} {t:9.2f} {ratio:7.2f}x  {flag:<10} {note}")
    for label, t, note in pred_rows:
        ratio = t / t_map
        target = TARGETS.get(label)
        flag = "" if target is None else (f"<= {target:g}" + (" ok" if ratio <= target else " MISSED"))
        print(f"{label:<62} {t:9.3f} {ratio:7.2f}x  {flag:<10} {note}")

    memory_rows(mem_sizes, layers)


def memory_rows(mem_sizes: tuple[int, ...], layers: int) -> None:
    if not mem_sizes:
        return
    print("\npeak RSS growth of our GLM predictive (KFAC, chunks of 32), one subprocess per size:", flush=True)
    for n in mem_sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--_memory-child", str(n), "--_layers", str(layers)],
            capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {n:5d} test examples: +{r['growth_mib']:7.1f} MiB over {r['rss_before_mib']:.0f} MiB ({r['method']})", flush=True)


if __name__ == "__main__":
    main()
