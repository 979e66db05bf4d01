"""bayesian-lora's example (``examples/example_usage.py``: Phi-2 + LoRA on ARC-Easy) on ``bayespeft.laplace.bayesian_lora``.

The steps and function calls are those of the upstream example (github.com/MaximeRobeyns/bayesian_lora), with the
same names, arguments and argument order, so that code written against ``bayesian_lora`` maps one to one:

    1. settings (upstream: Hydra config)          5. calculate_kronecker_factors + cholesky_decompose_small_factors
    2. model + LoRA (PEFT) + ARC-Easy data         6. prior variance s2 tuned by model_evidence
    3. MAP fine-tuning (AdamW, wd = 1/prior_var)   7. jacobian_mean + variance -> stable_cholesky -> sampled logits
    4. log-likelihood of the data                  8. accuracy / NLL / ECE: pretrained, MAP, linearised Laplace

Where the upstream example computes something other than the standard Laplace quantity, this script does the
standard thing and says so in a comment marked ``upstream:``. The three that change numbers:

* ``model_evidence`` here is the standard Laplace *log* evidence, to be maximised (upstream minimises
  ``model_evidence(...).log()`` of a different expression; see ``bayespeft.laplace.bayesian_lora``, difference 4);
* the log-likelihood passed to it is the summed *log* probability of the data the Kronecker factors come from
  (upstream sums *probabilities* of the validation set);
* the sampled predictive is an average of probabilities and its NLL is ``-log p[y]`` (upstream passes the averaged
  probabilities to ``F.cross_entropy`` as if they were logits).

Usage::

    python examples/bayesian_lora_arc.py --tiny                       # offline, a few seconds on a CPU
    python examples/bayesian_lora_arc.py --data-root data/arc         # microsoft/phi-2 (hub id or --model DIR), a GPU

``--tiny`` builds a random 2-layer Phi and a byte-level BPE tokenizer in a temporary directory, writes a small
ARC-Easy set in the real JSONL format next to them, and then runs exactly the code path of a real model directory.
The same pipeline as configs: ``configs/arc/phi2_lora_laplace.yaml`` (``bayespeft train`` then ``bayespeft laplace``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peft
import torch as t
import torch.nn as nn
import torch.nn.functional as F

from bayespeft.data import DataConfig, build_data
from bayespeft.errors import BayesPeftError
from bayespeft.inputs import InputSpec
from bayespeft.laplace.bayesian_lora import (
    calculate_kronecker_factors,
    cholesky_decompose_small_factors,
    jacobian_mean,
    linearized_predictive,
    model_evidence,
    stable_cholesky,
    variance,
)
from bayespeft.metrics import accuracy, calibration_error, nll
from bayespeft.models.hf_text import letter_token_ids
from bayespeft.models.hub import env_flag, first_line, hub_cache

#: upstream settings (examples/configs/example_usage.yaml, llm/phi.yaml, llm/peft/lora.yaml, dset/arc.yaml)
UPSTREAM = dict(
    model="microsoft/phi-2", r=8, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj", "lm_head"],
    map_lr=5e-5, train_steps=1000, train_bs=5, eval_bs=4, n_kfac=10, lr_threshold=100, prior_var=0.1,
    samples=100_000, max_length=512, prior_steps=200,
)
#: the --tiny run: same targets and steps, toy sizes (factors wider than 16 are low-rank, as 100 is for width 2560)
TINY = dict(map_lr=1e-3, train_steps=24, train_bs=4, eval_bs=8, n_kfac=4, lr_threshold=16, samples=20_000, max_length=128)


def build_tiny(directory: Path) -> tuple[str, Path]:
    """A random 2-layer Phi + byte-level BPE tokenizer saved as a model directory, and a small ARC-Easy JSONL set."""
    from transformers import PhiConfig, PhiForCausalLM

    from bayespeft.models.tiny import bpe_tokenizer
    from bayespeft.testing import write_arc

    t.manual_seed(0)
    tok = bpe_tokenizer(directory / "model")
    cfg = PhiConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=256, pad_token_id=tok.pad_token_id)
    PhiForCausalLM(cfg).save_pretrained(directory / "model")
    write_arc(directory / "arc", {"Train": 32, "Dev": 16, "Test": 8})
    return str(directory / "model"), directory / "arc"


class ModelUnavailable(Exception):
    """``--model`` could not be loaded; the message says what is missing and how to fix it (exit 2, no traceback)."""


#: what a ``save_pretrained`` model directory needs besides its weights (transformers 5 builds an empty GPT-2
#: tokenizer, silently, from a directory without tokenizer files)
NEEDED_FILES = {"config.json": ("config.json",), "tokenizer files": ("tokenizer.json", "tokenizer_config.json")}


def incomplete_directory(path: Path, lacks: str) -> str:
    files = sorted(p.name for p in path.iterdir())
    held = f"it holds {', '.join(files[:6])}{', ...' if len(files) > 6 else ''}" if files else "it is empty"
    return (f"--model {path}: not a complete model directory: {lacks}; {held}. Fix: pass --model a directory saved "
            "by save_pretrained (config.json, weights and tokenizer files) or a hub id, or --tiny for the offline demo")


def unavailable_message(model: str, e: BaseException) -> str:
    """One line for a ``--model`` (hub id or local directory) that ``from_pretrained`` could not load."""
    path, why = Path(model).expanduser(), first_line(e)
    if path.is_dir():
        return incomplete_directory(path, why)
    if model.startswith(("/", ".", "~")):
        return f"--model {model}: no such directory. Fix: pass --model a local model directory or a hub id, or --tiny"
    flag = env_flag("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if flag:
        return (f"--model {model}: the model is not in the Hugging Face cache {hub_cache()} and downloads are off "
                f"({flag}=1) ({why}). Fix: run once with network without {flag}=1, or copy it into that cache from a "
                f"connected machine (`hf download {model}`, same HF_HOME), or pass --model a local model directory, "
                "or --tiny for the offline demo")
    return (f"--model {model}: could not download the model from the Hugging Face hub into {hub_cache()} ({why}). "
            "Fix: check the network and the id (a gated repo needs `hf auth login`), or pass --model a local model "
            "directory, or --tiny for the offline demo")


def load_model(args: argparse.Namespace, dtype: t.dtype) -> tuple[nn.Module, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` of ``--model``; :class:`ModelUnavailable` when either is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(args.model).expanduser()
    if path.is_dir():
        lacks = [what for what, names in NEEDED_FILES.items() if not any((path / n).is_file() for n in names)]
        if lacks:
            raise ModelUnavailable(incomplete_directory(path, "no " + " and no ".join(lacks)))
    try:
        # eager attention: the Jacobians of step 7 (jacrev = vmap over a backward pass) have no batching rule for the
        # fused scaled-dot-product-attention backward and would fall back to a slow per-output loop
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=args.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except (OSError, ValueError) as e:  # not cached / not downloadable / not a model directory
        raise ModelUnavailable(unavailable_message(args.model, e)) from e
    return model, tokenizer


def evaluate(probs: t.Tensor, labels: t.Tensor) -> dict[str, float]:
    """Accuracy, NLL (-mean log p[y]) and 15-bin top-label ECE (torchmetrics' CalibrationError, as upstream)."""
    return {"acc": accuracy(probs, labels), "nll": nll(probs, labels), "ece": calibration_error(probs, labels, n_bins=15)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    #
    # 1. Settings (upstream: Hydra config; here argparse with upstream's defaults)
    #
    device = args.device or ("cuda:0" if t.cuda.is_available() else "cpu")
    t.manual_seed(args.seed)

    #
    # 2. Load PEFT model and dataset
    #
    dtype = {"bfloat16": t.bfloat16, "float32": t.float32}[args.dtype]
    model, tokenizer = load_model(args, dtype)
    model = model.to(device)
    peft_cfg = peft.LoraConfig(r=args.r, lora_alpha=UPSTREAM["lora_alpha"], lora_dropout=UPSTREAM["lora_dropout"],
                               target_modules=UPSTREAM["target_modules"], bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT reads a property transformers 5 deprecates (as bayespeft.adapters does)
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        model = peft.get_peft_model(model, peft_cfg)  # LoRA weights stay float32 on a bf16 model (PEFT's default)
    # ARC-Easy through bayespeft's loader: the zero-shot prompt "Question: ... A. ... D. ...\nAnswer:", right-padded
    # batches {input_ids, attention_mask, labels}; the classes are the next-token logits of " A" .. " D".
    # upstream: prompts tokenised inside the loop with left padding, 5 classes ("A".."E"), logits[:, -1].
    data = build_data(
        DataConfig(name="arc_easy", root=str(args.data_root), batch_size=args.train_bs, eval_batch_size=args.eval_bs,
                   max_train=args.max_train, max_val=args.max_eval),
        InputSpec(kind="text", tokenizer=tokenizer, max_length=args.max_length),
    )
    loaders = data.loaders()
    train_loader, val_loader = loaders.train, loaders.val  # val = ARC-Easy-Dev, upstream's "validation" split
    _, target_ids = letter_token_ids(tokenizer, data.num_classes)
    target_ids = t.tensor(target_ids)
    n_labels = len(target_ids)

    def inputs_of(batch: dict[str, t.Tensor]) -> dict[str, t.Tensor]:
        return {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}

    def class_logits(outputs: Any, attention_mask: t.Tensor) -> t.Tensor:
        """Letter logits at the last real token (right padding: position attention_mask.sum(1) - 1)."""
        last = attention_mask.sum(1) - 1
        return outputs.logits[t.arange(last.numel(), device=last.device), last][:, target_ids.to(last.device)].float()

    def predict_map(loader) -> tuple[t.Tensor, t.Tensor]:
        probs, labels = [], []
        model.eval()
        with t.no_grad():
            for batch in loader:
                inputs = inputs_of(batch)
                probs.append(class_logits(model(**inputs), inputs["attention_mask"]).softmax(-1).cpu())
                labels.append(batch["labels"])
        return t.cat(probs), t.cat(labels)

    metrics: dict[str, dict[str, float]] = {"pretrained": evaluate(*predict_map(val_loader))}

    #
    # 3. Do MAP training
    #
    # add prior / regularisation for the MAP objective, as upstream: AdamW's decoupled weight decay 1 / prior_var
    opt = t.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1 / args.prior_var)
    grad_steps = 0
    model.train()
    while grad_steps < args.train_steps:
        for batch in train_loader:
            opt.zero_grad()
            inputs = inputs_of(batch)
            logits = class_logits(model(**inputs), inputs["attention_mask"])
            loss = F.cross_entropy(logits, batch["labels"].to(device))
            assert not t.isnan(loss).any(), "NaN in loss for MAP training."
            loss.backward()
            opt.step()
            grad_steps += 1
            if not grad_steps < args.train_steps:
                break
    model.eval()
    metrics["map"] = evaluate(*predict_map(val_loader))

    #
    # 4. Evaluate the log likelihood
    #
    # upstream: LL += probs.gather(1, classes).sum() on the validation set, i.e. a sum of probabilities. The Laplace
    # evidence needs log p(D | θ*) of the data the curvature (the Kronecker factors) is computed on: the training set.
    LL = t.zeros((), dtype=t.float64)
    with t.no_grad():
        for batch in train_loader:
            inputs = inputs_of(batch)
            logp = class_logits(model(**inputs), inputs["attention_mask"]).log_softmax(-1)
            LL += logp.gather(1, batch["labels"][:, None].to(device)).sum().double().cpu()

    #
    # 5. Calculate the (low-rank) Kronecker factors
    #
    def fwd_call(model: nn.Module, batch: Any) -> t.Tensor:
        inputs = inputs_of(batch)
        outputs = model(**inputs)
        # upstream returns logits.softmax(-1) here; the factors need the class *logits* (the softmax is applied when
        # labels are sampled from the model), so no softmax
        return class_logits(outputs, inputs["attention_mask"])

    factors = calculate_kronecker_factors(
        model,
        fwd_call,
        train_loader,
        args.n_kfac,
        args.lr_threshold,
        ["lora"],
        use_tqdm=args.use_tqdm,
    )
    # Calculate Cholesky decomposition of the smaller factors
    factors = cholesky_decompose_small_factors(factors, args.lr_threshold, device, t.float32)

    #
    # 6. Use the marginal likelihood to optimise the prior variance
    #
    def log_evidence(s2: t.Tensor) -> t.Tensor:
        return model_evidence(model, LL, factors, args.r, args.n_kfac, s2)

    # a coarse grid first (reported, and a check that the optimum found below is the best of the grid) ...
    s2_grid = t.logspace(-5, 2, 29, dtype=t.float64)
    with t.no_grad():
        evidence_grid = t.stack([log_evidence(s2) for s2 in s2_grid])
    # ... then gradient ascent from upstream's initial prior_var. upstream: s2 itself with AdamW(lr=1e-2) on the loss
    # model_evidence(...).log(), 200 steps, grad-norm clipping; here log s2 (s2 stays positive) with Adam(lr=0.1)
    # on the loss -model_evidence(...), because our evidence is already the log evidence (to be maximised).
    log_s2 = t.tensor(math.log(args.prior_var), dtype=t.float64, requires_grad=True)
    opt = t.optim.Adam([log_s2], lr=0.1)
    for _ in range(args.prior_steps):
        opt.zero_grad()
        loss = -log_evidence(log_s2.exp())
        loss.backward()
        opt.step()
    s2 = log_s2.detach().exp()
    evidence_s2 = float(log_evidence(s2))

    #
    # 7. Make linearized predictions
    #
    # upstream reloads the model here without 4-bit quantisation; this script never quantises, so the MAP model is used.
    probs_sampled, probs_lp, labels_all = [], [], []
    gen = t.Generator(device=device).manual_seed(args.seed)
    with t.no_grad():
        for batch in val_loader:
            batch_inputs = inputs_of(batch)
            # Predict the output logit locations (the default output callback reads the last non-padding position)
            jacobian, f_mu = jacobian_mean(model, batch_inputs, target_ids)
            f_mu = f_mu.float()
            # Predict the output logit variances
            f_var = variance(
                batch_inputs,
                jacobian,
                factors,
                s2,
                n_labels,
                args.r,
                args.n_kfac,
                device,
            )
            # Sample logits from a Gaussian parametrised by f_mu, f_var
            L = stable_cholesky(f_var)
            samples = args.samples
            f_mu_s = f_mu.expand(samples, *f_mu.shape)
            L_s = L.expand(samples, *L.shape)
            eps = t.randn(f_mu_s.shape, generator=gen, device=f_mu.device).unsqueeze(-1)
            logits = f_mu_s[..., None] + L_s @ eps
            # upstream calls the next line's result "logits"; it is the predictive *probability* (B, n_labels)
            probs = logits.squeeze(-1).softmax(-1).mean(0)
            probs_sampled.append(probs.cpu())
            probs_lp.append(linearized_predictive(f_mu, f_var, "mc", samples, generator=gen).cpu())
            labels_all.append(batch["labels"])
    labels = t.cat(labels_all)
    metrics["laplace"] = evaluate(t.cat(probs_sampled), labels)  # upstream: F.cross_entropy(probs, classes) as NLL
    metrics["laplace_linearized_predictive"] = evaluate(t.cat(probs_lp), labels)

    return {
        "metrics": metrics,
        "s2": float(s2),
        "evidence_s2": evidence_s2,
        "s2_grid": s2_grid.tolist(),
        "evidence_grid": evidence_grid.tolist(),
        "LL": float(LL),
        "n_train": len(data.train),
        "n_eval": len(data.val),
        "n_factors": len(factors),
        "factor_shapes": {k: [list(a.shape), list(s.shape)] for k, (a, s) in factors.items()},
        "max_abs_diff_sampled_vs_linearized_predictive": float((t.cat(probs_sampled) - t.cat(probs_lp)).abs().max()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=UPSTREAM["model"], help="hub id or local model directory (default microsoft/phi-2)")
    p.add_argument("--tiny", action="store_true", help="random 2-layer Phi + tokenizer + small ARC set built locally (offline, CPU, seconds)")
    p.add_argument("--data-root", default="data/arc", help="directory holding ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl")
    p.add_argument("--device", default=None, help="cuda:0 / cpu (default: cuda:0 when available)")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"], help="base weights (default bfloat16; float32 with --tiny)")
    p.add_argument("--attn-implementation", default="eager", help="transformers attention kernel (default eager, see step 2)")
    p.add_argument("--r", type=int, default=UPSTREAM["r"], help="LoRA rank (n_lora)")
    for name in ("map_lr", "train_steps", "train_bs", "eval_bs", "n_kfac", "lr_threshold", "samples", "max_length", "prior_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(UPSTREAM[name]), default=None,
                       help=f"default {UPSTREAM[name]} (upstream), {TINY.get(name, UPSTREAM[name])} with --tiny")
    p.add_argument("--prior-var", type=float, default=UPSTREAM["prior_var"], help="initial prior variance s2 (and MAP weight decay 1/s2)")
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training questions")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on at most this many Dev questions (upstream: 1500, i.e. all)")
    p.add_argument("--use-tqdm", action="store_true", help="progress bar while collecting the Kronecker factors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    defaults = {**UPSTREAM, **TINY} if args.tiny else UPSTREAM
    for name in ("train_steps", "train_bs", "eval_bs", "n_kfac", "lr_threshold", "samples", "max_length", "prior_steps"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    args.lr = args.map_lr if args.map_lr is not None else defaults["map_lr"]
    args.dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    return args


@contextlib.contextmanager
def quiet_transformers(on: bool) -> Iterator[None]:
    """While ``on`` (``--tiny``): no transformers progress bars (writing and loading the toy model's one shard in
    milliseconds); restored afterwards. A real model keeps its loading bar."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if on and was:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, quiet_transformers(args.tiny):
        if args.tiny:
            args.model, args.data_root = build_tiny(Path(tmp))
        out = run(args)
    print(f"{'predictive':<30} {'acc':>7} {'nll':>7} {'ece':>7}")
    for name, m in out["metrics"].items():
        print(f"{name:<30} {m['acc']:7.4f} {m['nll']:7.4f} {m['ece']:7.4f}")
    best = int(t.tensor(out["evidence_grid"]).argmax())
    print(f"prior variance s2 = {out['s2']:.4g} (log evidence {out['evidence_s2']:.3f}); best of the grid: "
          f"s2 = {out['s2_grid'][best]:.3g} (log evidence {out['evidence_grid'][best]:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def cli(argv: list[str] | None = None) -> int:
    """The script's entry: :func:`main`, with a model or data set that cannot be loaded as one ``error:`` line and
    exit 2 (as the ``bayespeft`` command)."""
    try:
        main(argv)
    except (ModelUnavailable, BayesPeftError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
