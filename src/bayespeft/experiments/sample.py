"""``bayespeft sample`` / ``bayespeft evaluate --samples``: SG-MCMC over a MAP-trained model, diagnostics, evaluation.

Flow of :func:`sample_run` (every stage is also a library function):

1. build the model/data of the config; warm-start from a MAP ``checkpoint`` (adapter or run directory) or, without
   one, train the MAP first through the same code path as ``bayespeft train`` (:func:`bayespeft.experiments.train.train_model`;
   the samples then live in that training run's directory);
2. :func:`sample_and_evaluate`: run the chains (:func:`~bayespeft.sgmcmc.runner.run_chains`) over the trainable
   parameters into ``<run_dir>/samples`` (a :class:`~bayespeft.sgmcmc.store.SampleStore`), write the diagnostics
   (``diagnostics.json``: R-hat / bulk and tail ESS of every probe scalar, the verdict exactly as measured, diverged
   chains; ``plots/trace.png`` and ``plots/autocorr.png`` unless ``output.reliability_plots`` is off, the config's
   switch for all plots), then evaluate on ``test`` (and ``test_shift``);
3. ``metrics.json`` and one results-CSV row plus one reliability diagram per predictive.

Predictives (probabilities, never logits, are averaged):

* ``map``: the warm-start model;
* ``<sampler>-sample``: one posterior draw, the last kept sample of the first non-diverged chain (chain 0 unless it
  diverged) -- what a single-sample Thompson-style predictor would use;
* ``<sampler>-ensemble``: ``p(y|x, D) ≈ (1/S) Σ_s softmax(f_{θ_s}(x))`` over every kept sample of every
  non-diverged chain. Samples a diverged chain kept before it diverged stay in the store (they are finite) but are
  left out of the ensemble and of the diagnostics.

:func:`evaluate_samples_run` rebuilds the same table from an existing store without sampling (same model, same
loaders, same order of samples: the numbers are identical to the ones :func:`sample_run` reported).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..batch import split_batch, to_device
from ..config import ExperimentConfig
from ..sgmcmc.config import SamplerConfig
from ..sgmcmc.predict import ensemble_predict, predict_sample
from ..sgmcmc.probe import probe_batch
from ..sgmcmc.runner import run_chains
from ..sgmcmc.store import INDEX, SampleStore
from .checkpoint_arg import checkpoint_dir
from .run import (Built, build, check_outputs, evaluate_map, finish_run, load_checkpoint_into, record_predictive,
                  recording, split_loaders, start_run)

#: probe scalars drawn in the trace / autocorrelation plots (the per-point ``true_class_prob`` are summarised only).
PLOTTED = ("loglik", "param_norm", "proj_0", "proj_1", "proj_2", "proj_3")


class NoSamplesError(ValueError):
    """No non-diverged chain kept a sample, so there is no posterior predictive to evaluate."""


def sampler_config(cfg: ExperimentConfig) -> SamplerConfig:
    """The config's ``sgmcmc`` section, or the documented defaults when the section is absent."""
    return cfg.sgmcmc if cfg.sgmcmc is not None else SamplerConfig()


#: evaluation sets up to this many examples are read once and kept (on the model's device) for all S samples.
CACHE_MAX_EXAMPLES = 50_000


def labels_of(batches) -> torch.Tensor:
    """All labels of ``batches`` (a loader or a list of batches) in iteration order, ``(N,)`` long on CPU."""
    return torch.cat([split_batch(b)[1].reshape(-1).cpu() for b in batches])


def eval_batches(loader, device: torch.device):
    """The batches of an evaluation loader, materialised on ``device`` when the set has at most
    :data:`CACHE_MAX_EXAMPLES` examples (an ensemble of S samples then decodes/transforms/copies the data once
    instead of S times; CIFAR's 10k test images take 123 MB); larger sets are streamed (the loader itself)."""
    n = len(getattr(loader, "dataset", ()))
    if 0 < n <= CACHE_MAX_EXAMPLES:
        return [to_device(b, device) for b in loader]
    return loader


def resolve_store(samples: str | Path) -> Path:
    """A sample-store directory (holding ``index.json``) or a run directory with ``samples/`` inside."""
    p = Path(samples)
    for cand in (p, p / "samples"):
        if (cand / INDEX).is_file():
            return cand
    raise FileNotFoundError(f"no SG-MCMC sample store at {p}: expected {p / INDEX} or {p / 'samples' / INDEX} "
                            "(the 'samples' directory written by `bayespeft sample`)")


def chains_summary(store: SampleStore) -> dict[str, Any]:
    """Per-chain sample counts and the diverged chains (step, reason) as recorded in the store."""
    counts = {c: len(store.indices(c)) for c in store.chains()}
    diverged = {int(c): v for c, v in sorted(store.diverged.items(), key=lambda kv: int(kv[0]))}
    return {"samples_per_chain": counts, "diverged": diverged,
            "kept_chains": [c for c in store.chains() if c not in diverged]}


def check_complete(store: SampleStore, resume_hint: str | None = None) -> dict[str, Any]:
    """What the store holds against what was asked (:meth:`SampleStore.completeness`); an incomplete store (a run
    that was interrupted) is also a ``warning:`` line on stderr naming what is missing, kept under ``"warning"``."""
    c = store.completeness()
    if c["complete"] is False:
        run_dir = store.root.parent if store.root.name == "samples" else store.root
        hint = resume_hint or f"bayespeft sample CONFIG --resume {run_dir}"
        missing = [ch for ch in c["chains_asked"] if ch not in c["chains_present"]]
        draws = ", ".join(f"chain {ch}: {c['draws_present'].get(ch, 0)}" for ch in c["chains_asked"])
        c["warning"] = (f"the sample store {store.root} is incomplete (was sampling interrupted?): "
                        f"{len(c['chains_present'])} of {len(c['chains_asked'])} chains present"
                        f"{f' (missing: {missing})' if missing else ''}, {c['draws_per_chain_asked']} draws per chain "
                        f"asked, present: {draws}; unfinished chain(s) {c['unfinished']}. The results below use only "
                        f"the draws present; continue the run with `{hint}`")
        print(f"warning: {c['warning']}", file=sys.stderr)
    return c


# ---- diagnostics ------------------------------------------------------------------------------------------------
def diagnose(store: SampleStore, sc: SamplerConfig, run_dir: Path, plots: bool = True) -> dict[str, Any]:
    """R-hat / ESS of every probe scalar over the non-diverged chains, the verdict, and the trace/ACF plots.

    The verdict is :func:`bayespeft.metrics.diagnostics.verdict` on exactly the arrays summarised here, with the
    thresholds of ``sc``; with fewer than 4 draws per chain no verdict is computed (``verdict: null`` and a reason).
    Writes ``<run_dir>/diagnostics.json`` and (``plots``, >= 2 draws) ``<run_dir>/plots/{trace,autocorr}.png``;
    returns the JSON dict.
    """
    from ..metrics.diagnostics import plot_autocorr, plot_traces, summarize, verdict

    arrays = store.diagnostic_arrays()
    out: dict[str, Any] = {**chains_summary(store), "thresholds": {
        "rhat_strict": sc.rhat_strict, "rhat_lenient": sc.rhat_lenient, "min_ess_per_chain": sc.min_ess_per_chain}}
    if not arrays:
        out.update(verdict=None, verdict_text="not computed: no kept samples in non-diverged chains", summary={})
    else:
        n_chains, n_draws = next(iter(arrays.values())).shape[:2]
        out.update(n_chains=int(n_chains), n_draws=int(n_draws))
        if n_draws >= 4:
            v = verdict(arrays, sc.rhat_strict, sc.rhat_lenient, sc.min_ess_per_chain)
            out.update(verdict=v.as_dict(), verdict_text=str(v), summary=summarize(arrays))
        else:
            out.update(verdict=None, summary={},
                       verdict_text=f"not computed: {n_draws} draw(s) per chain, R-hat/ESS need >= 4")
        names = [k for k in PLOTTED if k in arrays]
        if plots and n_draws >= 2 and names:
            out["plots"] = [str(plot_traces(arrays, run_dir / "plots" / "trace.png", names=names)),
                            str(plot_autocorr(arrays, run_dir / "plots" / "autocorr.png", names=names))]
    if out["diverged"]:
        chains = ", ".join(f"{c} (step {d['step']})" for c, d in out["diverged"].items())
        out["verdict_text"] += f"; diverged chain(s) excluded: {chains}"
    io.write_json(run_dir / "diagnostics.json", out)
    return out


# ---- evaluation -------------------------------------------------------------------------------------------------
def store_status(store: SampleStore) -> dict[str, Any]:
    """The SG-MCMC columns of a results-CSV row: ``samples_planned`` (chains x draws per chain of the store's plan),
    ``complete`` (:meth:`SampleStore.completeness`; None for a store without a plan), and the ``sampler_lr`` and
    ``temperature`` the store was sampled with (None when it does not record its sampler settings)."""
    c = store.completeness()
    planned = None if c["chains_asked"] is None else len(c["chains_asked"]) * c["draws_per_chain_asked"]
    sampler = store.metadata.get("sampler") or {}
    return {"samples_planned": planned, "complete": c["complete"], "sampler_lr": sampler.get("lr"),
            "temperature": sampler.get("temperature")}


def evaluate_store(cfg: ExperimentConfig, built: Built, run_dir: Path, store: SampleStore, label: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Single-sample and ensemble predictives of ``store`` on every evaluation split (CSV rows, reliability PNGs).

    Returns ``{"single": {split: metrics}, "ensemble": {split: metrics}, "single_sample": {chain, draw, step},
    "n_samples": S, "chains": [...]}``. Raises :class:`NoSamplesError` when no non-diverged chain kept a sample.
    """
    info = chains_summary(store)
    kept = info["kept_chains"]
    idx = [i for i in range(len(store)) if store.entries[i]["chain"] in kept]
    if not idx:
        div = ", ".join(f"chain {c} at step {d['step']}" for c, d in info["diverged"].items()) or "none diverged"
        raise NoSamplesError(f"no posterior samples to evaluate in {store.root}: no non-diverged chain kept a sample "
                         f"({div}); lower sgmcmc.lr, or lengthen the run after burn-in (sgmcmc.epochs, "
                         "sgmcmc.burn_in_epochs, sgmcmc.thin, cyclical exploration_fraction)")
    single = store.indices(kept[0])[-1]
    out: dict[str, Any] = {"single_sample": {k: store.entries[single][k] for k in ("chain", "draw", "step")},
                           "n_samples": len(idx), "chains": kept, "single": {}, "ensemble": {}}
    device = next(built.model.parameters()).device
    # the result key of a sample row: which store and which of its samples (re-evaluating them adds no row), and
    # whether the store was complete: rows of an interrupted store are other results, marked complete=False
    status = store_status(store)
    source = {"store": str(Path(store.root).resolve()), "complete": status["complete"],
              "samples_planned": status["samples_planned"]}
    for split, loader in split_loaders(built.loaders).items():
        loader = eval_batches(loader, device)
        labels = labels_of(loader)
        t0 = time.perf_counter()
        probs = predict_sample(built.model, store.load(single), loader)
        ev = {**(extra or {}), "eval_time_s": time.perf_counter() - t0, "n_samples": 1}
        out["single"][split] = record_predictive(cfg, built, run_dir, f"{label}-sample", split, probs, labels, ev,
                                                 settings={**source, "samples": [store.entries[single]["file"]]},
                                                 columns={**status, "samples_planned": None})
        t0 = time.perf_counter()
        probs = ensemble_predict(built.model, store, loader, indices=idx, show_progress=cfg.train.progress,
                                 desc=f"{label} ensemble of {len(idx)} samples on {split}")
        ev = {**(extra or {}), "eval_time_s": time.perf_counter() - t0, "n_samples": len(idx)}
        out["ensemble"][split] = record_predictive(cfg, built, run_dir, f"{label}-ensemble", split, probs, labels, ev,
                                                   settings={**source, "samples": [store.entries[i]["file"] for i in idx]},
                                                   columns=status)
    return out


def sample_and_evaluate(cfg: ExperimentConfig, built: Built, run_dir: str | Path, sc: SamplerConfig | None = None,
                        label: str | None = None, store_dir: str | Path | None = None,
                        show_progress: bool | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the chains of ``sc`` (default: the config's section) from the model's current (MAP) trainable values,
    then diagnose and evaluate. The model must already sit on its device; its parameters are left unchanged.

    Use it on an in-memory trained model (e.g. the quickstart's LoRA run). Returns a JSON-ready dict:
    ``label``, ``splits`` (= the ensemble's ``{split: metrics}``), ``single`` (``{split: metrics}``),
    ``single_sample``, ``n_samples``, ``chains`` (per-chain reports), ``diverged`` (``{chain: {step, reason}}``),
    ``verdict`` (dict or None), ``verdict_text``, ``sample_time_s`` (of this call), ``store``, ``completeness``
    (:func:`check_complete`). ``resume``: continue the interrupted chains of an existing store instead
    (:func:`~bayespeft.sgmcmc.runner.run_chains` with ``resume=True``).
    """
    sc = sc if sc is not None else sampler_config(cfg)
    run_dir = Path(run_dir)
    label = label or sc.sampler
    store = SampleStore(store_dir if store_dir is not None else run_dir / "samples", metadata={"label": label})
    if len(store) and not resume:
        raise ValueError(f"the sample store {store.root} already holds {len(store)} samples; sample into a new "
                         "run directory (or evaluate the existing store with `bayespeft evaluate --samples`)")
    t0 = time.perf_counter()
    # the probe scalars (log-likelihood, per-point true-class probabilities) are taken on fixed *test* points
    probe = probe_batch(built.loaders.test, sc.probe_size)
    res = run_chains(built.model, built.loaders.train, sc, store=store, probe=probe, show_progress=show_progress,
                     resume=resume)
    sample_s = time.perf_counter() - t0
    completeness = check_complete(store)
    diag = diagnose(store, sc, run_dir, plots=cfg.output.reliability_plots)
    evaluated = evaluate_store(cfg, built, run_dir, store, label, {"train_time_s": sample_s, "epochs": sc.epochs})
    return {
        "label": label, "splits": evaluated["ensemble"], "single": evaluated["single"],
        "single_sample": evaluated["single_sample"], "n_samples": evaluated["n_samples"],
        "chains": [vars(r) for r in res.chains], "diverged": diag["diverged"], "verdict": diag["verdict"],
        "verdict_text": diag["verdict_text"], "sample_time_s": sample_s, "store": str(store.root),
        "completeness": completeness, **({"resumed": True} if resume else {}),
    }


def _table(map_metrics: dict[str, Any], label: str, single: dict[str, Any], ensemble: dict[str, Any]) -> list[dict]:
    rows = [{"posterior": "map", "split": s, **m} for s, m in map_metrics.items()]
    rows += [{"posterior": f"{label}-sample", "split": s, **m} for s, m in single.items()]
    rows += [{"posterior": f"{label}-ensemble", "split": s, **m} for s, m in ensemble.items()]
    return rows


def _warm_start(checkpoint: str | Path, store: SampleStore) -> Path:
    """The checkpoint to evaluate ``store`` with: ``checkpoint``, except when it is the sampling run itself and that
    run was warm-started from another run (it then holds no ``checkpoint/``): the warm start the store records."""
    given, recorded = Path(checkpoint), store.metadata.get("checkpoint")
    if recorded and not (given / "checkpoint").is_dir() and given.resolve() == store.root.parent.resolve():
        return Path(recorded)
    return given


def sample_run(cfg: ExperimentConfig, checkpoint: str | Path | None = None, check_base: bool = True,
               resume: str | Path | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """``bayespeft sample``: MAP warm start (``checkpoint``, or train one), chains, diagnostics, MAP vs sample vs
    ensemble table. Returns ``{"run_dir", "table", "verdict" (text), "diverged", "metrics"...}``.

    Without ``checkpoint`` the MAP is trained first (``bayespeft train``'s code path, its rows and checkpoint) and
    the samples go into that same run directory; with one, a new run directory is created (or ``run_dir``, when
    given: a sweep's stage directory). ``metrics.json`` holds
    the MAP metrics (written before sampling starts), then the ``sgmcmc`` results and (when trained here) the
    training summary. If every chain diverged, ``metrics.json`` and ``diagnostics.json`` are still written, then
    :class:`NoSamplesError` says so. ``resume``: the run directory of an interrupted ``bayespeft sample`` of this
    config, continued by :func:`resume_sample_run`.
    """
    sc = sampler_config(cfg)
    cfg = cfg.model_copy(update={"sgmcmc": sc})
    if resume is not None:
        return resume_sample_run(cfg, resume, checkpoint, check_base)
    metrics: dict[str, Any]
    if checkpoint is None:
        from .train import train_model

        trained = train_model(cfg, run_dir)
        built, run_dir = trained.built, trained.run_dir
        metrics = dict(trained.metrics)
        ckpt = run_dir / "checkpoint"
    else:
        check_outputs(cfg)
        checkpoint_dir(checkpoint)  # a wrong --checkpoint fails before the model and data are built
        built = build(cfg)
        load_checkpoint_into(built, checkpoint, check_base, cfg.data)
        run_dir = start_run(cfg, run_dir)
        with recording(run_dir):
            metrics = {"params": built.params, "data": built.data.record(), "map": evaluate_map(cfg, built, run_dir)}
        ckpt = Path(checkpoint)
    metrics["checkpoint"] = str(ckpt)
    io.write_json(run_dir / "metrics.json", {"status": "running", **metrics})  # MAP results survive an interrupted run
    SampleStore(run_dir / "samples", metadata={"checkpoint": str(ckpt), "config": cfg.model_dump(mode="json")})
    return _sample_into(cfg, built, run_dir, metrics, resume=False)


def _sample_into(cfg: ExperimentConfig, built: Built, run_dir: Path, metrics: dict[str, Any], resume: bool) -> dict[str, Any]:
    with recording(run_dir, interrupted_hint=f"continue it with `bayespeft sample CONFIG --resume {run_dir}`"):
        try:
            res = sample_and_evaluate(cfg, built, run_dir, cfg.sgmcmc, show_progress=cfg.train.progress, resume=resume)
        except NoSamplesError:
            store = SampleStore(run_dir / "samples")
            metrics["sgmcmc"] = {"error": "no samples to evaluate", **chains_summary(store)}
            io.write_json(run_dir / "metrics.json", metrics)
            raise
    metrics["sgmcmc"] = res
    metrics = finish_run(cfg, run_dir, metrics)
    return {"run_dir": str(run_dir), "table": _table(metrics["map"], res["label"], res["single"], res["splits"]),
            "verdict": res["verdict_text"], "diverged": res["diverged"], **metrics}


def finished_sample_output(run_dir: str | Path) -> dict[str, Any]:
    """The result :func:`sample_run` returned for the finished run in ``run_dir``, read back from its
    ``metrics.json`` (for a caller stopped between the run's end and its own bookkeeping, e.g. a sweep stage)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    res = metrics["sgmcmc"]
    return {"run_dir": str(run_dir), "table": _table(metrics["map"], res["label"], res["single"], res["splits"]),
            "verdict": res["verdict_text"], "diverged": res["diverged"], **metrics}


#: config keys that do not change what a run computes (a resume may differ in them)
RESUME_IGNORED = ("train.progress", "model.offline")


def config_differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """``"key: run has A, config has B"`` for every dotted key whose value differs between two config dumps."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(recorded) | set(current), key=str):
            key = f"{prefix}{k}"
            if key in RESUME_IGNORED:
                continue
            if k not in recorded or k not in current:
                out.append(f"{key}: {'only in the config' if k in current else 'only in the run'}")
            else:
                out += config_differences(recorded[k], current[k], key + ".")
        return out
    return [] if recorded == current else [f"{prefix[:-1]}: run has {recorded!r}, config has {current!r}"]


def resume_sample_run(cfg: ExperimentConfig, run_dir: str | Path, checkpoint: str | Path | None = None,
                      check_base: bool = True) -> dict[str, Any]:
    """``bayespeft sample CONFIG --resume RUN_DIR``: continue an interrupted sampling run bit-exactly.

    ``run_dir`` must hold the sample store of a ``bayespeft sample`` run of this same config (any difference is an
    error naming the keys); its MAP warm start is the one the run recorded (``checkpoint``, when given, must be it).
    Finished chains are kept, the others continue from their last kept sample (:func:`run_chains` with
    ``resume=True``), then the run is diagnosed and evaluated as an uninterrupted one would be (same samples, same
    table; the MAP rows are those recorded before sampling). A store that is complete and already evaluated leaves
    nothing to do: the result then only has ``run_dir`` and ``nothing_to_do`` (a message).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run directory; pass the directory an interrupted "
                                "`bayespeft sample` printed or created under output.root")
    store_dir = run_dir / "samples"
    if not (store_dir / INDEX).is_file():
        missing = (f"--resume {run_dir}: no SG-MCMC sample store in it ({store_dir / INDEX} is missing), so no "
                   "sampling to continue")
        if (run_dir / "checkpoint" / "bayespeft_meta.json").is_file():  # a finished training run
            raise FileNotFoundError(f"{missing}; it is a finished training run: sample from it with `bayespeft sample "
                                    f"CONFIG --checkpoint {run_dir}`")
        raise FileNotFoundError(
            f"{missing}. If `bayespeft sample` was stopped while training the MAP, finish that with `bayespeft train "
            f"CONFIG --resume {run_dir}`, then sample with `bayespeft sample CONFIG --checkpoint {run_dir}`")
    store = SampleStore(store_dir)
    recorded = store.metadata.get("config")
    if recorded is None or "plan" not in store.metadata:
        raise ValueError(f"--resume {run_dir}: the sample store records no config or no sampling plan (written by an "
                         "older bayespeft, or not by `bayespeft sample`), so it cannot be resumed; evaluate it with "
                         "`bayespeft evaluate --samples` or start a new run without --resume")
    diffs = config_differences(recorded, cfg.model_dump(mode="json"))
    if diffs:
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise ValueError(f"--resume {run_dir}: the run was sampled with a different config: {'; '.join(diffs[:4])}"
                         f"{more}. Resume with the run's own config ({run_dir / 'config.yaml'}), or drop --resume to "
                         "start a new run")
    ckpt = Path(store.metadata["checkpoint"])
    if checkpoint is not None and Path(checkpoint).resolve() != ckpt.resolve():
        raise ValueError(f"--resume {run_dir}: the run was warm-started from {ckpt}, not {checkpoint}; drop "
                         "--checkpoint (a resumed run always uses its own warm start)")
    metrics: dict[str, Any] = {}
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    done = store.completeness()["complete"] and "error" not in metrics.get("sgmcmc", {"error": 1})
    if done:
        counts = {c: len(store.indices(c)) for c in store.chains()}
        return {"run_dir": str(run_dir), "nothing_to_do": (
            f"nothing to resume in {run_dir}: every chain finished (draws per chain: {counts}) and metrics.json holds "
            f"the results; to evaluate the samples again run `bayespeft evaluate CONFIG --checkpoint {ckpt} "
            f"--samples {run_dir}`")}
    check_outputs(cfg, run_dir)
    built = build(cfg)
    load_checkpoint_into(built, ckpt, check_base, cfg.data)
    if "map" not in metrics:  # stopped before the MAP results were written
        metrics = {"params": built.params, "map": evaluate_map(cfg, built, run_dir), "checkpoint": str(ckpt)}
    return _sample_into(cfg, built, run_dir, metrics, resume=True)


def evaluate_samples_run(cfg: ExperimentConfig, checkpoint: str | Path, samples_dir: str | Path,
                         check_base: bool = True) -> dict[str, Any]:
    """``bayespeft evaluate --samples``: MAP vs single sample vs ensemble from an existing store (no sampling).

    ``samples_dir`` is the store (``.../samples``) or the run directory holding it; the store's recorded sampler
    config gives the label and the verdict thresholds. Writes a new run directory (``metrics.json``,
    ``diagnostics.json``, plots, CSV rows). Returns ``{"run_dir", "table", "map": {split: metrics},
    "<label>-sample": {...}, "<label>-ensemble": {...}, "verdict", "diverged", ...}``.
    """
    store = SampleStore(resolve_store(samples_dir))
    completeness = check_complete(store)
    recorded = store.metadata.get("sampler")
    sc = SamplerConfig.model_validate(recorded) if recorded else sampler_config(cfg)
    label = store.metadata.get("label", sc.sampler)
    checkpoint = _warm_start(checkpoint, store)
    check_outputs(cfg)
    built = build(cfg)
    load_checkpoint_into(built, checkpoint, check_base, cfg.data)
    run_dir = start_run(cfg)
    with recording(run_dir):
        map_metrics = evaluate_map(cfg, built, run_dir)
        diag = diagnose(store, sc, run_dir, plots=cfg.output.reliability_plots)
        ev = evaluate_store(cfg, built, run_dir, store, label)
    metrics = {"checkpoint": str(checkpoint), "samples": str(store.root), "params": built.params,
               "data": built.data.record(), "map": map_metrics,
               f"{label}-sample": ev["single"], f"{label}-ensemble": ev["ensemble"],
               "sgmcmc": {"label": label, "single_sample": ev["single_sample"], "n_samples": ev["n_samples"],
                          "diverged": diag["diverged"], "verdict": diag["verdict"], "verdict_text": diag["verdict_text"],
                          "completeness": completeness}}
    metrics = finish_run(cfg, run_dir, metrics)
    return {"run_dir": str(run_dir), "table": _table(map_metrics, label, ev["single"], ev["ensemble"]),
            "verdict": diag["verdict_text"], "diverged": diag["diverged"], **metrics}
