"""Layer-wise Laplace: one posterior per parameter group from ONE curvature pass, and their predictives.

Groups ``g = 1..L`` (blocks, stages, the head, or adapted modules; :mod:`bayespeft.laplace.groups`) partition the
trainable parameters ``θ = (θ_1, …, θ_L)``. The Laplace posterior over ``θ_g`` alone (everything else at the MAP) has
precision ``P_g = s · H_gg + δ_g I`` where ``H_gg = Σ_n J_{n,g}ᵀ Λ_n J_{n,g}`` is the ``g`` block of the curvature
of the union. So one :func:`~bayespeft.laplace.fit` over the union, restricted to each group
(:meth:`LaplacePosterior.restrict`), gives every group's posterior exactly — for every structure (diag and KFAC are
block-diagonal across layers anyway; for ``full`` the precision's sub-block, not the covariance's, is the group's).

Prior precision per group ``δ_g``: fixed, or the maximiser of the restricted evidence
``log Z_g(δ) = log p(D|θ*)/T − ½ δ ‖θ*_g‖² + ½ d_g log δ − ½ log det P_g(δ)`` (no data pass: the MAP log-likelihood
is shared). A set of groups ``S`` (e.g. the greedy selection, or all groups) uses the restriction to ``∪_{g∈S} θ_g``
with each group's own ``δ_g``; with a block-diagonal structure that is the product of the group posteriors.

Predictives for a set ``S`` (probabilities ``(B, C)``, averaged, never logits):

* ``mc``: ``p = (1/S) Σ_s softmax f(x; θ*_{∖S}, θ_S^{(s)})``, ``θ_S^{(s)} ~ N(θ*_S, P_S⁻¹)``; the same ``n_samples``
  draws (generator seeded with ``seed`` per set) for every batch. The activations entering the first block that
  ``S`` touches are cached per batch (:mod:`bayespeft.laplace.prefix`); only the rest runs per sample, several
  draws stacked in the batch dimension per forward where memory allows (:mod:`bayespeft.laplace.sample_batch`).
  Both are detected and checked against the naive path on the first rows of the first batch.
* ``glm``: logits ``N(f(x), J_S P_S⁻¹ J_Sᵀ)``; one pass of output gradients per batch gives every group's block
  ``J_g P_g⁻¹ J_gᵀ`` (:meth:`Structure.glm_cov_parts`) and a set's covariance is the sum of its groups' blocks
  (block-diagonal structures); ``link`` probit or MC over logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bayespeft.batch import split_batch, to_device
from bayespeft.laplace.fit import fit as laplace_fit
from bayespeft.laplace.groups import GroupBy, ParamGroup, discover_groups, group_of, select_groups
from bayespeft.laplace.posterior import LaplacePosterior
from bayespeft.laplace.predictive import as_batch, chunks, mc_link_probs, probit_probs
from bayespeft.laplace.prefix import PrefixCache
from bayespeft.laplace.sample_batch import (
    Mode, bytes_per_draw, choose_mode, draws_per_forward, first_rows, sample_logits,
)
from bayespeft.progress import progress as progress_bar

Predictive = Literal["mc", "glm"]

#: Examples of the first batch on which the MC paths (cached-prefix entry, batched draws) are detected and checked.
PROBE_ROWS = 2

__all__ = ["LayerwiseLaplace", "SetPredictions", "sample_logits"]

#: Structures without cross-module curvature: a set's GLM covariance is the sum of its groups' blocks.
BLOCK_DIAGONAL = ("diag", "kfac", "lowrank_kfac")


@dataclass
class SetPredictions:
    """Predictions on one loader: ``map_probs`` ``(N, C)``, ``probs[i]`` ``(N, C)`` for the i-th set of groups,
    ``labels`` ``(N,)``, and ``paths[i]``: how set ``i`` was computed (e.g. ``"cached-prefix (...)"``, ``"glm"``)."""

    map_probs: torch.Tensor
    probs: list[torch.Tensor]
    labels: torch.Tensor
    paths: list[str]


class LayerwiseLaplace:
    """Per-group Laplace posteriors restricted from one posterior over the union of ``groups``."""

    def __init__(self, posterior: LaplacePosterior, groups: Sequence[ParamGroup]) -> None:
        self.posterior, self.groups = posterior, list(groups)
        if posterior.likelihood != "classification":
            raise ValueError("layer-wise Laplace compares classification calibration; the posterior is a regression one")
        owner = group_of(self.groups)
        covered = set(posterior.param_names)
        missing = [n for n in owner if n not in covered]
        if missing:
            raise ValueError(f"parameters {missing[:4]} of the groups are not in the posterior; fit over the union of the groups")
        # prior groups of the structure are owning modules: each must sit in one layer group
        self._module_group: dict[str, str] = {}
        for n in posterior.param_names:
            m, g = n.rpartition(".")[0], owner.get(n)
            if self._module_group.setdefault(m, g) != g:
                raise ValueError(f"module {m!r} has parameters in groups {self._module_group[m]!r} and {g!r}")
        init = float(posterior.prior_precision[0])
        self.prior_precision: dict[str, float] = {g.name: init for g in self.groups}

    @classmethod
    def fit(
        cls, model: nn.Module, train_loader: Iterable[Any], groups: GroupBy | Sequence[ParamGroup] = "block",
        structure: str = "kfac", **fit_kwargs: Any,
    ) -> LayerwiseLaplace:
        """One :func:`bayespeft.laplace.fit` over the union of ``groups`` (``"block"``/``"module"``: discovered)."""
        groups = discover_groups(model, groups) if isinstance(groups, str) else list(groups)
        names = [n for g in groups for n in g.param_names]
        return cls(laplace_fit(model, train_loader, structure=structure, subset=names, **fit_kwargs), groups)

    # ---- posteriors ---------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def param_names(self, which: str | Sequence[str]) -> list[str]:
        """Qualified parameter names of the groups ``which`` (``ValueError`` listing the groups if unknown)."""
        return [n for g in select_groups(self.groups, which) for n in g.param_names]

    def _delta_for(self, post: LaplacePosterior) -> torch.Tensor:
        """Per-prior-group (owning module) ``δ`` of ``post`` from the per-layer-group values."""
        vals = [self.prior_precision[self._module_group[m]] for m in post.groups]
        return torch.tensor(vals, dtype=post.structure.dtype, device=post.structure.device)

    def posterior_of(self, which: str | Sequence[str]) -> LaplacePosterior:
        """The posterior over the groups ``which`` (their union), each group with its own prior precision."""
        post = self.posterior.restrict(self.param_names(which))
        post.prior_precision = self._delta_for(post)
        return post

    def tune_priors(self, prior: float | Literal["marglik"] = "marglik", **optimize_kwargs: Any) -> dict[str, float]:
        """Set every group's ``δ_g``: the float ``prior``, or each group's restricted-evidence maximiser (a scalar per
        group, :meth:`LaplacePosterior.optimize_prior` with ``optimize_kwargs``, from the fitted value)."""
        if prior != "marglik":
            value = float(prior)
            if not value > 0:
                raise ValueError(f"prior precision must be > 0 or 'marglik', got {prior!r}")
            self.prior_precision = {g.name: value for g in self.groups}
            return dict(self.prior_precision)
        if self.posterior.structure.name in BLOCK_DIAGONAL and set(optimize_kwargs) <= {"n_steps", "lr"}:
            self._tune_jointly(**optimize_kwargs)
            return dict(self.prior_precision)
        for g in self.groups:
            post = self.posterior.restrict(list(g.param_names))
            self.prior_precision[g.name] = float(post.optimize_prior("marglik", progress=False, **optimize_kwargs)[0])
        return dict(self.prior_precision)

    def _tune_jointly(self, n_steps: int = 100, lr: float = 0.1) -> None:
        """All groups' evidence maximisation in one Adam loop (same steps as ``optimize_prior`` per group).

        With a block-diagonal precision the evidence of the union with one ``δ_g`` per group is
        ``log p(D|θ*)/T + Σ_g c_g(δ_g)`` where ``log Z_g(δ_g) = log p(D|θ*)/T + c_g(δ_g)`` is group ``g``'s restricted
        evidence, so ``∂/∂ log δ_g`` of the sum is exactly that of ``log Z_g``; Adam acts per coordinate, so the joint
        run follows each group's own trajectory while paying one Python loop instead of ``L``.
        """
        post = self.posterior
        names = self.names
        index = torch.tensor([names.index(self._module_group[m]) for m in post.groups], device=post.structure.device)
        # each group starts from its fitted value (that of its first module group), as the per-group path does
        start = post.prior_precision.detach().expand(len(post.groups))
        first = [index.tolist().index(i) for i in range(len(names))]
        log_delta = start[first].log().clone().requires_grad_(True)
        opt = torch.optim.Adam([log_delta], lr=lr)
        for _ in range(n_steps):
            opt.zero_grad()
            (-post.log_marginal_likelihood(log_delta.exp()[index])).backward()
            opt.step()
        self.prior_precision = {n: float(v) for n, v in zip(names, log_delta.detach().exp())}

    def log_marginal_likelihood(self, which: str | Sequence[str]) -> float:
        return float(self.posterior_of(which).log_marginal_likelihood())

    # ---- predictives --------------------------------------------------------------------------------------------
    def predict_loader(
        self, loader: Iterable[Any], sets: Sequence[Sequence[str]], method: Predictive = "mc", *,
        n_samples: int = 30, link: Literal["probit", "mc"] = "probit", seed: int = 0,
        path: Literal["auto", "naive"] = "auto", chunk_size: int | None = 32, sample_batch: int | None = None,
        progress: bool | None = None,
    ) -> SetPredictions:
        """MAP and Bayesian predictive probabilities on ``loader`` for each set of group names in ``sets``.

        MC: ``path="auto"`` uses the cached prefix and runs ``sample_batch`` draws per forward (``None``: one at a
        time on CPU, where stacking draws does not pay; on an accelerator as many as
        :data:`~bayespeft.laplace.sample_batch.SAMPLE_BATCH_BYTES` of activations allow);
        ``"naive"``: full forwards, one draw at a time (the reference). GLM: ``chunk_size`` examples per Jacobian pass.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if sample_batch is not None and (isinstance(sample_batch, bool) or not isinstance(sample_batch, int) or sample_batch < 1):
            raise ValueError(f"sample_batch must be a positive integer or None, got {sample_batch!r}")
        if method not in ("mc", "glm"):
            raise ValueError(f"predictive must be 'mc' or 'glm', got {method!r}")
        if isinstance(sets, str) or any(isinstance(s, str) for s in sets):
            raise TypeError("sets must be a list of lists of group names, e.g. [['blocks.0'], ['head']]")
        for s in sets:
            select_groups(self.groups, s)
        model = self.posterior.model
        was_training = model.training
        model.eval()
        try:
            if method == "glm":
                return self._glm_loader(loader, sets, link, n_samples, seed, chunk_size, progress)
            return self._mc_loader(loader, sets, n_samples, seed, path, sample_batch, progress)
        finally:
            model.train(was_training)

    def _batches(self, loader: Iterable[Any], desc: str, progress: bool | None) -> Iterable[Any]:
        dev = self.posterior.structure.device
        for batch in progress_bar(loader, desc=desc, enabled=progress):
            yield to_device(as_batch(batch), dev)

    def _glm_loader(self, loader, sets, link, n_samples, seed, chunk_size, progress) -> SetPredictions:
        post = self.posterior
        if post.structure.name in BLOCK_DIAGONAL:  # one part per group; a set's covariance is the sum of its blocks
            used = [g for g in self.groups if any(g.name in s for s in sets)]
            parts = [list(g.param_names) for g in used]
            pos = {g.name: i for i, g in enumerate(used)}
            members = [[pos[n] for n in s] for s in sets]
        else:  # e.g. full: cross-group terms, so each set's own restriction
            parts = [self.param_names(s) for s in sets]
            members = [[i] for i in range(len(sets))]
        delta, scale = self._delta_for(post), post._scale()
        gens = [torch.Generator().manual_seed(seed) for _ in sets]
        maps, outs, labels = [], [[] for _ in sets], []
        with torch.enable_grad():
            for batch in self._batches(loader, "layer-wise GLM", progress):
                labels.append(split_batch(batch)[1].detach().cpu())
                for part in chunks(batch, chunk_size):
                    f, covs = post.structure.glm_cov_parts(post.model, part, post.forward_fn, delta, scale, parts)
                    f = f.to(covs.dtype)
                    maps.append(torch.softmax(f, -1).cpu())
                    for i, s in enumerate(sets):
                        cov = covs[members[i]].sum(0)
                        p = probit_probs(f, cov) if link == "probit" else mc_link_probs(f, cov, n_samples, gens[i])
                        outs[i].append(p.cpu())
        return _collect(maps, outs, labels, [f"glm ({link})"] * len(sets))

    @torch.no_grad()
    def _mc_loader(self, loader, sets, n_samples, seed, path, sample_batch, progress) -> SetPredictions:
        posts = [self.posterior_of(list(s)) for s in sets]
        thetas = [p.sample(n_samples, generator=torch.Generator().manual_seed(seed)) for p in posts]
        cache = PrefixCache(self.posterior.model, self.posterior.forward_fn)
        plan: list[tuple[int | None, Mode, int]] | None = None
        paths: list[str] = []
        maps, outs, labels = [], [[] for _ in sets], []
        for batch in self._batches(loader, "layer-wise MC", progress):
            if plan is None:
                plan, paths = self._mc_plan(cache, posts, thetas, batch, path, sample_batch)
            f0, recorded = cache.map_forward(batch, [k for k, _, _ in plan])
            maps.append(torch.softmax(f0.float(), -1).cpu())
            labels.append(split_batch(batch)[1].detach().cpu())
            for i, (post, (k, mode, per)) in enumerate(zip(posts, plan)):
                logits = sample_logits(post, batch, thetas[i], cache, k, recorded.get(k), mode=mode, per_forward=per)
                outs[i].append(torch.softmax(logits.to(thetas[i].dtype), -1).mean(0).cpu())
        if plan is None:
            raise ValueError("predict_loader got an empty loader")
        return _collect(maps, outs, labels, paths)

    def _mc_plan(self, cache, posts, thetas, batch, path, sample_batch) -> tuple[list[tuple[int | None, Mode, int]], list[str]]:
        """Per set ``(k, mode, draws per forward)`` and its path, decided on the first rows of the first batch:
        the cached-prefix entry (:class:`PrefixCache`) and the batching mode (:func:`choose_mode`)."""
        if path != "auto":  # the reference: full forwards, one draw at a time
            return [(None, "loop", 1)] * len(posts), ["naive (requested)"] * len(posts)
        sub = first_rows(batch, PROBE_ROWS)
        found = cache.entries([p.param_names for p in posts], sub)
        _, rec = cache.map_forward(sub, [k for k, _ in found])
        est = bytes_per_draw([cache.max_output_bytes], _rows(sub), _rows(batch))
        # CPU default: one draw per forward (stacking draws does not make CPU matmuls faster; on the benchmark ViT 30
        # stacked draws were 1.5x slower than the loop, out of cache); accelerators: as many as the budget allows
        on_cpu = self.posterior.structure.device.type == "cpu"
        per = sample_batch or (1 if on_cpu else draws_per_forward(thetas[0].shape[0], est))
        plan: list[tuple[int | None, Mode, int]] = []
        paths: list[str] = []
        for post, theta, (k, where) in zip(posts, thetas, found):
            mode, why = choose_mode(post, sub, theta[:2], cache, k, rec.get(k)) if per > 1 else ("loop", "one draw per forward")
            per_set = per if mode != "loop" else 1
            plan.append((k, mode, per_set))
            paths.append(f"{where}; " + (f"{per_set} draws per forward ({why})" if mode != "loop" else why))
        return plan, paths


def _rows(batch: Any) -> int:
    return int(split_batch(batch)[1].shape[0])


def _collect(maps, outs, labels, paths) -> SetPredictions:
    if not maps:
        raise ValueError("predict_loader got an empty loader")
    return SetPredictions(torch.cat(maps), [torch.cat(o) for o in outs], torch.cat(labels), list(paths))
