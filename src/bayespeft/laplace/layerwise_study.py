"""The layer-wise Laplace protocol on plain loaders: which group's uncertainty buys calibration, and how few suffice.

For each group ``g`` (:mod:`bayespeft.laplace.groups`): a Laplace posterior over ``θ_g`` alone, restricted from one
fit over all groups (:class:`~bayespeft.laplace.layerwise.LayerwiseLaplace`), its prior precision tuned by the
restricted evidence or fixed; then on every evaluation split the MAP and Bayesian predictives' ECE / NLL / accuracy /
Brier (:mod:`bayespeft.metrics`; ECE with 15 equal-width bins) and

    ΔECE = ECE_MAP − ECE_Bayes,    ΔNLL = NLL_MAP − NLL_Bayes       (positive: the Bayesian group helps).

Reference rows: all groups at once, and the last layer (the head group) alone. ``greedy=K``: starting from no
Bayesian group, add the group whose union with the chosen ones has the lowest ECE on the selection split (the
validation split; never an evaluation-only split), K times, and report every split's metrics for 1..K groups.
Sets of groups use the restriction to the union of their parameters with each group's own prior precision.

Per-example arrays for interval estimates (bootstrap over test examples) are kept compact: per split and predictive
``p_true`` (probability of the true class, float32), ``confidence`` (top probability, float32), ``correct`` (bool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from bayespeft.laplace.groups import GroupBy, ParamGroup, select_groups
from bayespeft.laplace.layerwise import LayerwiseLaplace, Predictive, SetPredictions
from bayespeft.metrics import accuracy, brier, calibration_error, nll

log = logging.getLogger(__name__)

N_BINS = 15


def summary(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"ece", "nll", "acc", "brier"}`` of probabilities ``(N, C)`` against labels ``(N,)``."""
    return {
        "ece": calibration_error(probs, labels, n_bins=N_BINS), "nll": nll(probs, labels),
        "acc": accuracy(probs, labels), "brier": brier(probs, labels),
    }


def per_example(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """``p_true`` (N,) float32, ``confidence`` (N,) float32, ``correct`` (N,) bool (top class = argmax, ties low)."""
    p = probs.detach().cpu().to(torch.float64)
    y = labels.detach().cpu().long()
    conf, pred = p.max(1)
    return {
        "p_true": p.gather(1, y[:, None]).squeeze(1).numpy().astype(np.float32),
        "confidence": conf.numpy().astype(np.float32), "correct": (pred == y).numpy(),
    }


def _compare(map_probs: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, keep: bool) -> dict[str, Any]:
    m, b = summary(map_probs, labels), summary(probs, labels)
    out = {"map": m, "bayes": b, "delta_ece": m["ece"] - b["ece"], "delta_nll": m["nll"] - b["nll"]}
    if keep:
        out["per_example"] = per_example(probs, labels)
    return out


class LayerwiseStudy:
    """One run of the protocol: ``run()`` returns plain dicts (see :func:`layerwise_study` for the arguments)."""

    def __init__(
        self, lw: LayerwiseLaplace, loaders: Mapping[str, Iterable[Any]], eval_splits: Sequence[str], *,
        predictive: Predictive, link: Literal["probit", "mc"], n_samples: int, seed: int, progress: bool | None,
    ) -> None:
        self.lw, self.loaders, self.eval_splits = lw, loaders, list(eval_splits)
        self.kw = {"method": predictive, "link": link, "n_samples": n_samples, "seed": seed, "progress": progress}

    def predict(self, split: str, sets: Sequence[Sequence[str]]) -> SetPredictions:
        return self.lw.predict_loader(self.loaders[split], sets, **self.kw)

    def rows(self, sets: Sequence[Sequence[str]], keep_examples: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """MAP block ``{split: {metrics, per_example}}`` and one row per set ``{path, splits: {split: ...}}``."""
        maps: dict[str, Any] = {}
        rows: list[dict[str, Any]] = [{"path": None, "splits": {}} for _ in sets]
        for split in self.eval_splits:
            res = self.predict(split, sets)
            maps[split] = {"metrics": summary(res.map_probs, res.labels), "per_example": per_example(res.map_probs, res.labels)}
            for row, probs, path in zip(rows, res.probs, res.paths):
                row["path"] = path
                row["splits"][split] = _compare(res.map_probs, probs, res.labels, keep_examples)
        return maps, rows

    def greedy(self, k: int, select_split: str,
               on_stage: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Forward selection by ECE on ``select_split``; each step's metrics on every evaluation split."""
        remaining, chosen, steps = list(self.lw.names), [], []
        for step in range(1, k + 1):
            candidates = [chosen + [g] for g in remaining]
            if on_stage is not None:
                on_stage(f"greedy step {step}/{k}: {len(candidates)} candidate set(s) scored on {select_split}")
            res = self.predict(select_split, candidates)
            eces = [calibration_error(p, res.labels, n_bins=N_BINS) for p in res.probs]
            best = int(np.argmin(eces))  # ties: the first in depth order
            chosen = candidates[best]
            remaining.remove(chosen[-1])
            _, (row,) = self.rows([chosen], keep_examples=False)
            steps.append({
                "n_groups": step, "added": chosen[-1], "groups": list(chosen), "select_split": select_split,
                "select_ece": float(eces[best]),
                **selection_check(res.map_probs, res.probs[best], res.labels, chosen, select_split),
                "splits": {s: {"map": v["map"], "bayes": v["bayes"], "delta_ece": v["delta_ece"], "delta_nll": v["delta_nll"]}
                           for s, v in row["splits"].items()},
            })
        return steps


#: a greedy step whose selection-split accuracy falls more than this below the MAP's is flagged
ACC_DROP_WARN = 0.05


def selection_check(map_probs: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, chosen: Sequence[str],
                    split: str) -> dict[str, Any]:
    """Accuracy and NLL of the chosen set and of the MAP on the selection split, and a ``warning`` (also logged)
    when the set bought its lower ECE with accuracy (more than :data:`ACC_DROP_WARN` below the MAP's) or NLL (above
    the MAP's): ECE alone rewards a predictor that is uniformly unsure, so a greedy step can pick a collapse."""
    acc, nll_ = accuracy(probs, labels), nll(probs, labels)
    acc0, nll0 = accuracy(map_probs, labels), nll(map_probs, labels)
    out: dict[str, Any] = {"select_acc": acc, "select_nll": nll_, "select_map": {"acc": acc0, "nll": nll0}}
    worse = [f"accuracy {acc0:.3f} -> {acc:.3f}"] if acc < acc0 - ACC_DROP_WARN else []
    worse += [f"NLL {nll0:.3f} -> {nll_:.3f}"] if nll_ > nll0 else []
    if worse:
        out["warning"] = (f"greedy step {len(chosen)} ({'+'.join(chosen)}) lowers the {split} ECE but worsens "
                          f"{' and '.join(worse)} against the MAP; prefer fewer groups or another prior")
        log.warning(out["warning"])
    return out


def layerwise_study(
    model: nn.Module,
    loaders: Mapping[str, Iterable[Any]],
    *,
    groups: GroupBy | Sequence[ParamGroup] = "block",
    only: Sequence[str] | None = None,
    structure: str = "kfac",
    predictive: Predictive = "mc",
    link: Literal["probit", "mc"] = "probit",
    n_samples: int = 30,
    prior: float | Literal["marglik"] = "marglik",
    greedy: int | None = None,
    train_split: str = "train",
    select_split: str = "val",
    seed: int = 0,
    references: bool = True,
    skip: Collection[str] = (),
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_map: Callable[[dict[str, Any]], None] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the layer-wise protocol (module docstring) and return plain dicts.

    Args:
        model: at its MAP, with its adapter applied (the trainable parameters are the candidates).
        loaders: ``{split: loader}``; ``train_split`` fits the curvature; every other split is evaluated.
        groups: ``"block"`` / ``"module"`` or explicit groups; ``only``: evaluate just these group names (the
            posterior is still fitted over all groups, so priors and the reference rows do not depend on it).
        structure, predictive, link, n_samples, seed: Laplace structure; ``"mc"`` (``n_samples`` weight draws,
            seeded) or ``"glm"`` (``link`` probit or MC over logits).
        prior: ``"marglik"`` (per-group restricted evidence) or a fixed prior precision.
        greedy: ``K`` >= 1 for the forward selection by ECE on ``select_split`` (must be a loader).
        skip: group names already done (e.g. by an interrupted run): not evaluated, not in ``groups`` of the result.
        on_row: called with each group row as soon as it is computed (for incremental, atomic saving).
        on_map: called with the MAP block ``{split: {metrics, per_example}}`` whenever it is (re)computed, before
            the rows of that call reach ``on_row`` (e.g. to store the MAP arrays a row's interval is paired with).
        on_stage: called with a one-line description before each stage that reports no row (the reference rows
            of the MC predictive, each greedy step), so a command can say what it is doing between rows.

    Returns ``{"config": {...}, "map": {split: {metrics, per_example}}, "groups": [row, ...],
    "reference": {"all": row, "last_layer": row}, "greedy": [step, ...]}`` where a row is ``{name, depth, kind,
    n_params, prior_precision, log_marglik, path, splits: {split: {map, bayes, delta_ece, delta_nll, per_example}}}``.
    """
    if train_split not in loaders:
        raise ValueError(f"loaders has no {train_split!r} split to fit the curvature on (splits: {sorted(loaders)})")
    eval_splits = [s for s in loaders if s != train_split]
    if not eval_splits:
        raise ValueError(f"loaders has only the {train_split!r} split; give at least one split to evaluate")
    if greedy is not None:
        if isinstance(greedy, bool) or not isinstance(greedy, int) or greedy < 1:
            raise ValueError(f"greedy must be a positive number of groups, got {greedy!r}")
        if select_split not in loaders or select_split == train_split:
            raise ValueError(f"greedy selection needs a {select_split!r} split (not the training split); splits: {sorted(loaders)}")
    lw = LayerwiseLaplace.fit(model, loaders[train_split], groups, structure=structure, progress=progress, **(fit_kwargs or {}))
    if greedy is not None and greedy > len(lw.groups):
        raise ValueError(f"greedy={greedy} but there are only {len(lw.groups)} groups: {lw.names}")
    todo = select_groups(lw.groups, only) if only is not None else list(lw.groups)
    lw.tune_priors(prior)
    study = LayerwiseStudy(lw, loaders, eval_splits, predictive=predictive, link=link, n_samples=n_samples, seed=seed, progress=progress)
    todo = [g for g in todo if g.name not in set(skip)]
    result: dict[str, Any] = {
        "config": {"structure": structure, "predictive": predictive, "link": link, "n_samples": n_samples, "prior": prior,
                   "seed": seed, "train_split": train_split, "eval_splits": eval_splits, "n_bins": N_BINS,
                   "all_groups": [{"name": g.name, "depth": g.depth, "kind": g.kind, "n_params": g.n_params} for g in lw.groups]},
        "groups": [], "reference": {}, "greedy": [],
    }

    def describe(names: Sequence[str], label: str) -> dict[str, Any]:
        gs = select_groups(lw.groups, names)
        return {"name": label, "depth": max(g.depth for g in gs), "kind": gs[0].kind if len(gs) == 1 else "set",
                "n_params": sum(g.n_params for g in gs), "groups": list(names),
                "prior_precision": lw.prior_precision[gs[0].name] if len(gs) == 1 else {g.name: lw.prior_precision[g.name] for g in gs},
                "log_marglik": lw.log_marginal_likelihood(list(names))}

    last = [g for g in lw.groups if g.kind == "head"] or [lw.groups[-1]]
    ref_sets = {"all": lw.names, "last_layer": [g.name for g in last]} if references else {}
    # MC: one predictive call per group (one row at a time, resumable), then the reference rows. GLM: the groups and
    # the reference rows in ONE call, i.e. one pass of output gradients per batch (a set's covariance is the sum of
    # its groups' blocks), rows still reported group by group.
    if predictive == "mc":
        calls = [([g], []) for g in todo] + ([([], list(ref_sets))] if ref_sets else [])
    else:
        calls = [(todo, list(ref_sets))] if todo or ref_sets else []
    for batch, labels in calls:
        if on_stage is not None and not batch:
            on_stage(f"reference rows: {', '.join(labels)} ({predictive} predictive)")
        maps, rows = study.rows([[g.name] for g in batch] + [ref_sets[lab] for lab in labels])
        result["map"] = maps
        if on_map is not None:
            on_map(maps)
        for g, row in zip(batch, rows):
            full = {**describe([g.name], g.name), **row}
            result["groups"].append(full)
            if on_row is not None:
                on_row(full)
        for label, row in zip(labels, rows[len(batch):]):
            result["reference"][label] = {**describe(ref_sets[label], label), **row}
    if "map" not in result:
        result["map"], _ = study.rows([lw.names[:1]], keep_examples=False)
    if greedy is not None:
        result["greedy"] = study.greedy(greedy, select_split, on_stage)
    return result
