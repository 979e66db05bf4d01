"""``bayespeft laplace``: fit a Laplace posterior over a trained checkpoint, compare MAP vs Laplace.

Writes ``metrics.json`` (MAP and Laplace metrics per split, prior precision, log evidence, fit/predict times),
reliability diagrams, the posterior (``posterior/``, safetensors + JSON) and one results-CSV row per predictive.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, validate
from ..laplace import LaplaceConfig, fit
from .checkpoint_arg import checkpoint_dir
from .run import (Built, build, check_outputs, evaluate_map, finish_run, load_checkpoint_into, record_predictive,
                  recording, split_loaders, start_run)

#: Laplace settings that do not change the predictive (left out of the result key)
NOT_IN_RESULT_KEY = frozenset({"chunk_size"})


def laplace_label(lc: LaplaceConfig) -> str:
    subset = lc.subset if isinstance(lc.subset, str) else "+".join(lc.subset)
    sub = "" if subset == "all" else f"[{subset}]"
    return f"laplace-{lc.structure}{sub}"


def fit_and_evaluate(cfg: ExperimentConfig, built: Built, run_dir: Path, lc: LaplaceConfig, label: str | None = None) -> dict[str, Any]:
    """Fit the posterior described by ``lc`` on the train loader, tune its prior, evaluate every test split."""
    label = label or laplace_label(lc)
    t0 = time.perf_counter()
    post = fit(
        built.model, built.loaders.train, structure=lc.structure, subset=lc.subset, curvature=lc.curvature,
        prior_precision=lc.prior_precision, temperature=lc.temperature, n_kfac=lc.n_kfac,
        lr_threshold=lc.lr_threshold, train_mode=lc.train_mode, seed=lc.seed,
    )
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if lc.prior_method == "marglik":
        post.optimize_prior("marglik", layerwise=lc.layerwise_prior, n_steps=lc.prior_steps, lr=lc.prior_lr)
    elif lc.prior_method == "gridsearch":
        post.optimize_prior("gridsearch", val_loader=built.loaders.val, pred_method=lc.predictive, link=lc.link,
                            n_samples=lc.n_samples, chunk_size=lc.chunk_size)  # δ scored under the evaluated predictive
    prior_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "label": label,
        "prior_precision": post.prior_precision.detach().cpu().tolist(),
        "log_marginal_likelihood": float(post.log_marginal_likelihood().detach()),
        "fit_time_s": fit_s,
        "prior_time_s": prior_s,
        "splits": {},
    }
    for split, loader in split_loaders(built.loaders).items():
        t0 = time.perf_counter()
        probs, labels = post.predict_loader(
            loader, method=lc.predictive, link=lc.link, n_samples=lc.n_samples, chunk_size=lc.chunk_size
        )
        ev = {"eval_time_s": time.perf_counter() - t0, "train_time_s": fit_s + prior_s,
              "prior_precision": out["prior_precision"]}
        settings = {k: v for k, v in lc.model_dump(mode="json").items() if k not in NOT_IN_RESULT_KEY}
        out["splits"][split] = record_predictive(cfg, built, run_dir, label, split, probs, labels, ev, settings=settings)
    post.save(run_dir / "posterior" / label)
    return out


#: ``bayespeft laplace`` flag -> key of the ``laplace`` config section it sets.
FLAG_KEYS = {"structure": "structure", "subset": "subset", "curvature": "curvature", "prior": "prior_method",
             "predictive": "predictive", "link": "link"}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def with_laplace_flags(cfg: ExperimentConfig, flags: dict[str, str | None] | None) -> ExperimentConfig:
    """``cfg`` with the command-line flags (``{"structure": "kfac", "prior": "marglik", ...}``, None = not given) set
    in its ``laplace`` section and validated like the config file itself: a bad value gets the config loader's
    message (the key, what is allowed, the closest valid name). ``subset`` may be comma-separated."""
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(given) - set(FLAG_KEYS))
    if unknown:
        raise ValueError(f"unknown laplace flag(s) {unknown}; valid: {sorted(FLAG_KEYS)}")
    if not given:
        return cfg if cfg.laplace is not None else cfg.model_copy(update={"laplace": LaplaceConfig()})
    raw = cfg.model_dump(mode="json")
    section = dict(raw.get("laplace") or {})
    for flag, value in given.items():
        section[FLAG_KEYS[flag]] = [s for s in value.split(",") if s] if flag == "subset" and "," in value else value
    raw["laplace"] = section
    if "prior" in given and _is_number(given["prior"]):
        raise ValueError(f"--prior {given['prior']}: `bayespeft laplace --prior` chooses how the prior is tuned "
                         "(marglik | gridsearch | none); for a fixed prior precision give --prior none --set "
                         f"laplace.prior_precision={given['prior']} (`bayespeft layerwise --prior` takes a number)")
    if "link" in given and section.get("predictive") == "mc":
        raise ValueError(f"--link {given['link']} applies to the GLM predictive only (--predictive glm); the weight-space "
                         "MC predictive (--predictive mc) has no link: drop --link, or use --predictive glm")
    typed = " ".join(f"--{k} {v}" for k, v in given.items())
    return validate(raw, source=f"laplace flags ({typed})")


def laplace_run(cfg: ExperimentConfig, checkpoint: str | Path, cli: dict[str, Any] | None = None,
                check_base: bool = True, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the model of ``cfg``, load ``checkpoint``, fit the Laplace posterior, print/write MAP vs Laplace.

    ``cli``: the command's flags (see :func:`with_laplace_flags`), checked before anything is built or read.
    Writes a new run directory, or ``run_dir`` when given (a sweep's stage directory)."""
    cfg = with_laplace_flags(cfg, cli)
    lc = cfg.laplace
    check_outputs(cfg)
    checkpoint_dir(checkpoint)  # a wrong --checkpoint fails before the model and data are built
    built = build(cfg)
    load_checkpoint_into(built, checkpoint, check_base, cfg.data)
    run_dir = start_run(cfg, run_dir)
    with recording(run_dir):
        map_metrics = evaluate_map(cfg, built, run_dir)
        lap = fit_and_evaluate(cfg, built, run_dir, lc)
    table = [{"posterior": "map", "split": s, **m} for s, m in map_metrics.items()]
    table += [{"posterior": lap["label"], "split": s, **m} for s, m in lap["splits"].items()]
    metrics = finish_run(cfg, run_dir, {"checkpoint": str(checkpoint), "params": built.params,
                                        "data": built.data.record(), "map": map_metrics, "laplace": lap})
    return {"run_dir": str(run_dir), "table": table, **metrics}
