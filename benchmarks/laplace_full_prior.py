"""Full-covariance Laplace: evidence-based prior tuning, Cholesky per step (old) vs cached eigenvalues (new).

``LaplacePosterior.optimize_prior("marglik")`` with one scalar prior precision ``δ`` runs Adam on ``log δ`` (the
``bayespeft laplace`` defaults: 100 steps, lr 0.1). Each step needs ``log det(scale · H + δ I)`` and its gradient:

* old: a Cholesky of the ``(d, d)`` precision and its backward every step (``O(d³)`` per step) — the path kept for
  per-group priors (``layerwise_prior: true``), forced here through ``Structure.logdet_precision_shared``'s generic
  implementation;
* new: one ``eigvalsh`` of ``H``, then ``Σ log(scale · λ_i + δ)`` (``O(d)`` per step).

Curvature: a random positive semi-definite ``H = Gᵀ G`` of the size of the digits LoRA checkpoint's full posterior
(``d = 2794`` by default; ``G`` ``(2 d, d)`` Gaussian with decaying column scales so the spectrum spans several
decades like a GGN's), float32 like a posterior of a float32 model. Prints both times, their ratio, the two optima
and the evidence at both. Target: new <= 5 s, same optimum.

    PYTHONPATH=src python benchmarks/laplace_full_prior.py [--d 2794] [--steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bayespeft.laplace import STRUCTURES, LaplacePosterior, Structure

TARGET_S = 5.0


class Flat(nn.Module):
    """``d`` parameters in one linear layer ``(d,) -> ()`` (the posterior is built directly, never run forward)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d, 1, bias=False)


def posterior(d: int, seed: int) -> LaplacePosterior:
    g = torch.Generator().manual_seed(seed)
    model = Flat(d)
    with torch.no_grad():
        model.layer.weight.copy_(0.05 * torch.randn(1, d, generator=g))
    params = list(model.named_parameters())
    structure = STRUCTURES.get("full")(model, params)
    cols = (1.0 + torch.arange(d, dtype=torch.float32)) ** -0.75
    G = torch.randn(2 * d, d, generator=g) * cols
    structure.load_state_tensors({"H": G.T @ G})
    mean = torch.cat([p.detach().reshape(-1) for _, p in params])
    return LaplacePosterior(
        model, structure, likelihood="classification", curvature="ggn", subset_desc="all", prior_precision=1.0,
        temperature=1.0, sigma_noise=1.0, n_data=2 * d, n_outputs=10, loss=100.0, mean=mean,
        forward_fn=lambda m, b: (m(b), None),
    )


def cholesky_path(post: LaplacePosterior) -> None:
    """Make ``post`` use the generic ``logdet_precision_shared`` (Cholesky of the precision every call)."""
    post.structure.logdet_precision_shared = Structure.logdet_precision_shared.__get__(post.structure)


def tune(post: LaplacePosterior, steps: int) -> tuple[float, float, float]:
    """(seconds, optimum δ, evidence at the optimum) of one ``optimize_prior("marglik")``."""
    t0 = time.perf_counter()
    delta = float(post.optimize_prior("marglik", n_steps=steps, lr=0.1, progress=False)[0])
    seconds = time.perf_counter() - t0
    return seconds, delta, float(post.log_marginal_likelihood().detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=2794)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    for path in ("new", "old"):  # warm-up: first-call costs of torch, Adam and LAPACK out of the timings
        warm = posterior(64, args.seed)
        if path == "old":
            cholesky_path(warm)
        tune(warm, 5)

    new = posterior(args.d, args.seed)
    t_new, d_new, lml_new = tune(new, args.steps)

    old = posterior(args.d, args.seed)
    cholesky_path(old)
    t_old, d_old, lml_old = tune(old, args.steps)

    print(f"full posterior d={args.d}, random PSD curvature, {args.steps} Adam steps, {args.threads} threads")
    print(f"  old (Cholesky per step)    {t_old:8.2f} s   δ* = {d_old:.6g}   log Z = {lml_old:.6f}")
    print(f"  new (cached eigenvalues)   {t_new:8.2f} s   δ* = {d_new:.6g}   log Z = {lml_new:.6f}")
    print(f"  speed-up {t_old / t_new:.1f}x; optimum relative difference {abs(d_new - d_old) / d_old:.2e}; "
          f"new <= {TARGET_S:g} s: {'yes' if t_new <= TARGET_S else 'NO'}")


if __name__ == "__main__":
    main()
