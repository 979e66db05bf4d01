"""``bayespeft quickstart``: the whole product on the embedded default dataset, in a few minutes on 2 CPU cores.

1. *Upstream*: a micro ViT is trained from scratch on the digits 0-4 of the training split (all parameters) and
   cached under ``~/.cache/bayespeft`` (keyed by its config), standing in for an ImageNet-pretrained backbone: the
   weights source ``model.pretrained: quickstart-upstream`` (:mod:`bayespeft.models.upstream`), made on first use.
2. *Downstream*: the backbone is adapted to all ten digits from a small labelled set with each of ``lora``,
   ``normtune``, ``hybrid`` and ``full`` (new 10-class head), through the same pipeline as ``bayespeft train``.
3. *Bayesian rows* over the LoRA adapters: Laplace (diag and KFAC over all adapters, and last-layer) and a short
   SGLD ensemble, on the clean test split and the rotated (shifted) test split.

4. *Layer-wise*: which part of the LoRA model buys calibration when made Bayesian: a diagonal Laplace over each of
   its two blocks and its head alone (GLM probit predictive), ranked by ΔECE = ECE_MAP − ECE_Bayes
   (:mod:`.layerwise`; written to ``<out>/layerwise``, ready for ``bayespeft analyze``).

It prints one table (method, posterior, tuned params %, acc@1, NLL, ECE, train time), then the layer-wise ranking,
and writes the results CSV, ``metrics.json`` files and reliability diagrams under ``--out``.
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..adapters import AdapterConfig
from ..config import ExperimentConfig, read_yaml, validate
from ..models.upstream import UPSTREAM_CLASSES, cache_dir, pretrain_upstream  # noqa: F401  (re-exported)
from ..table import format_table

DOWNSTREAM_METHODS = ("lora", "normtune", "hybrid", "full")
#: downstream training epochs of ``--fast`` (the upstream backbone is the same as in the full run)
FAST_EPOCHS = 3


def quickstart_config(out: str | Path) -> ExperimentConfig:
    raw = read_yaml(resources.files("bayespeft") / "configs" / "quickstart.yaml")
    raw.setdefault("output", {})["root"] = str(out)
    return validate(raw, "quickstart config")


def method_config(cfg: ExperimentConfig, method: str) -> ExperimentConfig:
    """The quickstart's run of adapter ``method``: its config with that method (the YAML's adapter section is LoRA's;
    each method keeps the options it reads) -- what ``configs/digits/<method>.yaml`` holds."""
    adapter = AdapterConfig.dropping_unread({**cfg.adapter.model_dump(mode="json"), "method": method})
    return validate({**cfg.model_dump(mode="json"), "name": f"quickstart-{method}", "adapter": adapter.model_dump(mode="json")})


#: stages of the quickstart, for the ``[quickstart k/N]`` lines: 4 MAP runs, 3 Laplace posteriors, SGLD, layer-wise
N_STAGES = 9


def stage(k: int, what: str) -> None:
    """One ``[quickstart k/N] what`` line on stderr before stage ``k`` (the progress lines inside carry no label)."""
    print(f"[quickstart {k}/{N_STAGES}] {what}", file=sys.stderr, flush=True)


def run_quickstart(out: str | Path = "runs/quickstart", fast: bool = False) -> list[dict[str, Any]]:
    """Run the quickstart; returns the table rows (also printed and written to ``<out>/quickstart.csv``)."""
    from .train import train_model

    t_start = time.perf_counter()
    # a micro ViT is far too small for intra-op parallelism: extra threads only contend for the cores
    torch.set_num_threads(1)
    out = Path(out)
    cfg = quickstart_config(out)
    from .records import check_output_dir
    from .run import check_outputs

    check_outputs(cfg)
    check_output_dir(cache_dir() / "quickstart", "cache directory", "set BAYESPEFT_CACHE=DIR to another directory")
    if fast:  # the same upstream backbone (made once, cached), fewer downstream epochs
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": FAST_EPOCHS})})
    rows: list[dict[str, Any]] = []
    lora_run = None
    for k, method in enumerate(DOWNSTREAM_METHODS, 1):
        stage(k, f"train {method} (MAP{'; makes the upstream backbone first unless cached' if method == DOWNSTREAM_METHODS[0] else ''})")
        run = train_model(method_config(cfg, method))
        for split, m in run.metrics["map"].items():
            rows.append(_row(method, "map", split, run.built.params, m, run.train_time_s))
        if method == "lora":
            lora_run = run
    assert lora_run is not None
    rows.extend(bayesian_rows(lora_run, fast=fast))
    cols = ["method", "posterior", "split", "tuned_%", "acc@1", "nll", "ece", "brier", "time_s"]
    table = format_table(rows, cols)
    print(table)
    io.write_text(out / "quickstart.txt", table + "\n")
    import pandas as pd

    pd.DataFrame(rows)[cols].to_csv(out / "quickstart.csv", index=False)
    layerwise_section(lora_run, out)
    print(f"\nresults: {cfg.output.csv_path()} (all runs), {out / 'quickstart.csv'} (this table); "
          f"reliability diagrams under {out}/*/plots; total {time.perf_counter() - t_start:.0f} s")
    return rows


def _row(method: str, posterior: str, split: str, params: dict, m: dict, seconds: float | None) -> dict[str, Any]:
    return {
        "method": method, "posterior": posterior, "split": split,
        "tuned_%": round(float(params["trainable_pct"]), 2),
        "acc@1": m["acc"], "nll": m["nll"], "ece": m["ece"], "brier": m["brier"],
        "time_s": None if seconds is None else round(float(seconds), 1),
    }


#: Laplace posteriors of the quickstart: over all tuned parameters (LoRA adapters + head) and over the head only.
QUICKSTART_LAPLACE = (
    {"structure": "diag"},
    {"structure": "kfac"},
    {"structure": "full", "subset": "last_layer"},
)


def bayesian_rows(run, fast: bool = False) -> list[dict[str, Any]]:
    """Laplace (diag, KFAC, last-layer full) and a short SGLD ensemble over the trained LoRA model.

    The LoRA run is restored to its MAP weights after each posterior (both modules put the MAP back).
    """
    from ..laplace import LaplaceConfig
    from .laplace import fit_and_evaluate

    cfg = validate(yaml_safe(run.run_dir / "config.yaml"), "quickstart run config")
    rows = []
    for k, spec in enumerate(QUICKSTART_LAPLACE, len(DOWNSTREAM_METHODS) + 1):
        lc = LaplaceConfig(prior_method="marglik", **spec)
        stage(k, f"Laplace {spec['structure']} over the lora model{' (head only)' if 'subset' in spec else ''}")
        res = fit_and_evaluate(cfg, run.built, run.run_dir, lc)
        for split, m in res["splits"].items():
            rows.append(_row("lora", res["label"], split, run.built.params, m, res["fit_time_s"] + res["prior_time_s"]))
    from .sample import sample_and_evaluate

    stage(N_STAGES - 1, "SGLD ensemble over the lora model")
    res = sample_and_evaluate(cfg, run.built, run.run_dir, label="sgld")
    for split, m in res["splits"].items():
        rows.append(_row("lora", "sgld-ensemble", split, run.built.params, m, res["sample_time_s"]))
    from .run import publish_rows

    publish_rows(cfg, run.run_dir)
    return rows


#: the quickstart's layer-wise analysis: diagonal posteriors, the linearised predictive with the probit link (no
#: sampling, no bootstrap beyond the default), so it adds seconds
QUICKSTART_LAYERWISE = {"structure": "diag", "predictive": "glm", "link": "probit"}


def layerwise_section(run, out: Path) -> dict[str, Any]:
    """Layer-wise Laplace over the LoRA model's groups (its two blocks + head): print the ranked ΔECE table."""
    from ..laplace import LayerwiseConfig
    from .layerwise import format_ranking, run_study

    t0 = time.perf_counter()
    cfg = validate(yaml_safe(run.run_dir / "config.yaml"), "quickstart run config")
    stage(N_STAGES, "layer-wise Laplace over the lora model's blocks and head")
    res = run_study(cfg, run.built, LayerwiseConfig(**QUICKSTART_LAYERWISE), out / "layerwise", plots=False,
                    echo=lambda line: None)
    print("\nlayer-wise Laplace over the LoRA model (diag, GLM probit): ΔECE = ECE_MAP − ECE_Bayes, > 0 = the "
          "Bayesian group helps; 95% bootstrap intervals over test examples")
    print(format_ranking(res))
    print(f"({time.perf_counter() - t0:.0f} s; {out / 'layerwise'}; summarise with `bayespeft analyze {out / 'layerwise'}`)")
    return res


def yaml_safe(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())
