"""Full-covariance Laplace on a trained checkpoint, stage by stage: what ``bayespeft laplace --structure full`` waits on.

Times, in one process, the stages of ``bayespeft laplace CONFIG --checkpoint RUN_DIR --structure full --prior
marglik`` (GGN, GLM probit predictive, the config's ``laplace`` defaults): the curvature fit over the training set,
the evidence-based prior tuning (100 Adam steps, one shared prior) and the GLM predictive on the test split, each
for

* new: the ``K = C`` output-gradient passes per batch as batched backward passes
  (:func:`bayespeft.laplace.capture.batched_grads`) and one cached Cholesky of the posterior precision for all
  predictive chunks (:meth:`FullStructure.cached_cholesky`);
* old: one backward pass per cotangent and one Cholesky per chunk of 32 test examples (the previous code path,
  restored by monkeypatching for the measurement).

Both give the same posterior (prior precision, evidence, probabilities are printed; they agree to float rounding).
The prior tuning is the same code in both (one ``eigvalsh`` of the ``(d, d)`` curvature, then ``O(d)`` per step).

    PYTHONPATH=src python benchmarks/laplace_full_stages.py RUN_DIR [--config configs/digits/lora.yaml] [--threads 2]

``RUN_DIR``: a ``bayespeft train configs/digits/lora.yaml`` run directory (the digits LoRA checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BAYESPEFT_PROGRESS", "0")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import bayespeft.laplace.capture as capture  # noqa: E402
from bayespeft.config import load_config  # noqa: E402
from bayespeft.experiments.run import build, load_checkpoint_into  # noqa: E402
from bayespeft.laplace import fit  # noqa: E402
from bayespeft.laplace.full import FullStructure  # noqa: E402


@contextlib.contextmanager
def old_path():
    """One backward per cotangent (a one-element budget) and a fresh Cholesky per predictive chunk."""
    budget, cached = capture.BATCHED_GRAD_ELEMENTS, FullStructure.cached_cholesky
    capture.BATCHED_GRAD_ELEMENTS, FullStructure.cached_cholesky = 1, FullStructure.cholesky
    try:
        yield
    finally:
        capture.BATCHED_GRAD_ELEMENTS, FullStructure.cached_cholesky = budget, cached


def stages(built) -> tuple[dict[str, float], dict[str, float]]:
    times, out = {}, {}
    t = time.perf_counter()
    post = fit(built.model, built.loaders.train, structure="full", subset="all", curvature="ggn", progress=False)
    times["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    post.optimize_prior("marglik", n_steps=100, lr=0.1, progress=False)
    times["prior"] = time.perf_counter() - t
    t = time.perf_counter()
    probs, y = post.predict_loader(built.loaders.test, method="glm", link="probit", chunk_size=32, progress=False)
    times["predict (test)"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    out = {"d": post.structure.d, "delta": float(post.prior_precision[0]), "log Z": float(post.log_marginal_likelihood()),
           "test NLL": float(-probs.gather(1, y.view(-1, 1)).log().mean()), "probs": probs}
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--config", default="configs/digits/lora.yaml")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    built = build(load_config(args.config))
    load_checkpoint_into(built, args.run_dir)
    new_t, new_o = stages(built)
    with old_path():
        old_t, old_o = stages(built)
    print(f"full Laplace, d = {new_o['d']}, GGN, marglik prior (100 Adam steps), GLM probit; {args.threads} threads")
    print(f"  {'stage':16s} {'old':>9s} {'new':>9s}   old/new")
    for k in new_t:
        print(f"  {k:16s} {old_t[k]:8.2f}s {new_t[k]:8.2f}s   {old_t[k] / new_t[k]:5.2f}x")
    for k in ("delta", "log Z", "test NLL"):
        print(f"  {k:10s} old {old_o[k]:.7g}   new {new_o[k]:.7g}")
    print(f"  max |Δ probability| {float((old_o['probs'] - new_o['probs']).abs().max()):.2e}")


if __name__ == "__main__":
    main()
