"""``run_chains``: SG-MCMC chains over a model's trainable parameters, streamed into a :class:`SampleStore`.

For each chain ``c`` (sequentially): start from the model's trainable values (``init="map"``), MAP + jitter, or a
prior draw; walk ``epochs`` passes over ``train_loader``, one sampler step per batch, with the configured schedule;
after step ``t`` (1-based) keep a sample when ``t > burn_in`` (``burn_in = round(burn_in_epochs · len(loader))``
steps), ``(t - burn_in) % thin == 0`` and the schedule is in a sampling phase for that step (cyclical: not an
exploration step). For each kept sample the probe diagnostics of :mod:`bayespeft.sgmcmc.probe` are recorded.

Divergence: every ``divergence_check_every`` steps and before every kept sample, the accumulated finiteness flag of
``log_prob`` and of the parameters is read (one device sync). A chain with NaN/Inf is stopped, marked diverged in the
store and in the result; its already-saved samples stay; the other chains run normally. The model is put in eval
mode while sampling (dropout off: ``log_prob`` is a deterministic function of θ) and its parameters are never
modified (the sampler works on copies).

The steps, each a function below: :func:`step_counts` (run length and burn-in), :func:`chain_schedule`,
:func:`initial_params` (per-chain start), :class:`ChainWalker` (one chain: step, keep, check, store) and
:func:`convergence` (diagnostic arrays and verdict over the store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ..batch import to_device
from ..evalmode import eval_mode, unfused_attention
from ..metrics.diagnostics import verdict
from ..progress import progress
from .base import Sampler, SGMCMCState
from .config import SamplerConfig
from .model import model_log_prob, trainable_params
from .probe import ProbeDiagnostics, probe_batch
from .registry import build
from .resume import capture_rng, chain_state, read_info, restore_chain_state, restore_rng
from .schedules import Schedule, build_schedule
from .store import FINISHED, SampleStore
from .vectorized import (ChainStreams, PrecomputedLogProb, StackedGradient, sequential_reason, step_together,
                         try_first_step)

log = logging.getLogger(__name__)


@dataclass
class ChainReport:
    chain: int
    seed: int
    steps: int
    n_samples: int
    diverged: bool = False
    diverged_at: int | None = None
    reason: str | None = None


@dataclass
class ChainsResult:
    store: SampleStore
    chains: list[ChainReport]
    verdict: Any = None  # bayespeft.metrics.diagnostics.ConvergenceVerdict, or None with < 4 draws
    diagnostics: dict[str, Any] = field(default_factory=dict)  # name -> array (chains, draws[, ...])

    @property
    def diverged(self) -> list[int]:
        return [r.chain for r in self.chains if r.diverged]


DIVERGED = "non-finite log_prob or parameters (NaN/Inf)"


def step_counts(cfg: SamplerConfig, steps_per_epoch: int) -> tuple[int, int]:
    """``(total, burn_in)`` sampler steps: ``epochs · steps_per_epoch`` and ``round(burn_in_epochs · steps_per_epoch)``."""
    total = cfg.epochs * steps_per_epoch
    burn_in = round(cfg.burn_in_epochs * steps_per_epoch)
    if burn_in >= total:
        raise ValueError(f"burn-in ({burn_in} steps) must be shorter than the run ({total} steps)")
    return total, burn_in


def chain_schedule(cfg: SamplerConfig, total: int) -> Schedule:
    """The step-size schedule of ``cfg`` over ``total`` steps (with its polynomial / cyclical options)."""
    if cfg.schedule == "polynomial":
        kw: dict[str, Any] = {"b": cfg.poly_b, "gamma": cfg.poly_gamma}
    elif cfg.schedule == "cyclical":
        kw = {"cycles": cfg.cycles, "exploration_fraction": cfg.exploration_fraction}
    else:
        kw = {}
    return build_schedule(cfg.schedule, cfg.lr, total, **kw)


def initial_params(cfg: SamplerConfig, map_params: dict[str, torch.Tensor], chain: int) -> dict[str, torch.Tensor]:
    """Start of chain ``chain``: the MAP (``init="map"``), MAP + ``init_jitter``·N(0, I), or a prior draw."""
    if cfg.init == "map":
        return map_params
    g = torch.Generator().manual_seed(cfg.seed + chain + 7919)
    noise = {k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device) for k, v in map_params.items()}
    if cfg.init == "jitter":
        return {k: v + cfg.init_jitter * noise[k] for k, v in map_params.items()}
    return {k: cfg.prior_std * noise[k] + (v if cfg.prior_center == "init" else 0.0) for k, v in map_params.items()}


@dataclass
class ChainWalker:
    """Runs one chain at a time: ``epochs`` passes over ``loader``, keeping, checking and storing samples."""

    sampler: Sampler
    schedule: Schedule
    cfg: SamplerConfig
    loader: Any
    store: SampleStore
    probe: ProbeDiagnostics
    device: torch.device
    total: int
    burn_in: int
    show_progress: bool | None = None

    def keep(self, step: int, t: int) -> bool:
        """Keep the sample after step ``step`` (taken at schedule index ``t = step - 1``)?"""
        return step > self.burn_in and (step - self.burn_in) % self.cfg.thin == 0 and self.schedule.sampling(t)

    def check_due(self, step: int, keep: bool) -> bool:
        """Read the finiteness flag (one device sync) before a kept sample, periodically and at the end."""
        return keep or step % self.cfg.divergence_check_every == 0 or step == self.total

    def expected_draws(self) -> int:
        """Samples one chain keeps when it runs to the end without diverging."""
        return sum(self.keep(step, step - 1) for step in range(1, self.total + 1))

    def save(self, chain: int, state: SGMCMCState, status: str, rep: ChainReport, epoch: int, consumed: int,
             epoch_rng: dict[str, Any], now: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        """Write the chain's resume state: sampler state, position (epoch, batches consumed in it), the RNGs at the
        start of that epoch and now (``now``: that snapshot, a function returning it, or ``None`` for the global
        RNGs as they are). The parameters are not written again: a resume point is the chain's start
        (parameters: :func:`initial_params`) or right after a kept sample (parameters: that sample)."""
        info = {"chain": chain, "seed": rep.seed, "status": status, "draws": rep.n_samples, "epoch": epoch,
                "consumed": consumed, "diverged_at": rep.diverged_at, "reason": rep.reason}
        now = capture_rng(self.loader) if now is None else now() if callable(now) else now
        tensors, meta = chain_state(state, info, {"epoch": epoch_rng, "now": now})
        self.store.save_chain_state(chain, tensors, meta)

    def after_step(self, chain: int, state: SGMCMCState, rep: ChainReport, t: int, ok: torch.Tensor, epoch: int,
                   consumed: int, epoch_rng: dict[str, Any],
                   now: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                   diagnostics: dict[str, Any] | None = None) -> torch.Tensor:
        """After the step taken at schedule index ``t``: update the finiteness flag ``ok`` (returned), stop the chain
        (``rep.diverged``) if a due check fails, else keep the sample if due (store, probe, resume state).
        ``diagnostics``: the probe's values for this state when already computed (vectorised chains)."""
        ok = ok & torch.isfinite(state.log_prob)
        keep = self.keep(state.step, t)
        if keep:
            ok &= torch.isfinite(torch.stack(torch._foreach_norm(state.leaves))).all()
        if self.check_due(state.step, keep) and not bool(ok):
            rep.diverged, rep.diverged_at, rep.reason = True, state.step, DIVERGED
            self.store.mark_diverged(chain, state.step, DIVERGED)
            return ok
        if keep:
            params = {k: v.detach() for k, v in state.params.items()}
            diag = self.probe(params) if diagnostics is None else diagnostics
            self.store.add(chain, params, step=state.step, diagnostics=diag)
            rep.n_samples += 1
            self.save(chain, state, "running", rep, epoch, consumed, epoch_rng, now)
        return ok

    def probe_kept(self, states: list[SGMCMCState], t: int) -> list[dict[str, Any] | None]:
        """Probe diagnostics of chains in lockstep, in one batched forward when their samples are kept at this step
        (the chains share the schedule, so either all keep or none); ``None`` each otherwise."""
        if not states or not self.keep(states[0].step, t):
            return [None] * len(states)
        return self.probe.many([{k: v.detach() for k, v in s.params.items()} for s in states])

    def run_together(self, chains: list[int], theta0s: dict[int, dict[str, torch.Tensor]], model: nn.Module,
                     stepper: Sampler, pre: PrecomputedLogProb, grad: StackedGradient) -> list[ChainReport]:
        """Run ``chains`` in lockstep from ``theta0s``: one batched gradient per step (:mod:`.vectorized`), then each
        chain's own sampler update (``stepper``: the sampler built on ``pre``) and the bookkeeping of :meth:`run`."""
        streams = ChainStreams(self.loader, chains, self.cfg.epochs)
        states = {c: stepper.init(theta0s[c], seed=self.cfg.seed + c) for c in chains}
        reps = {c: ChainReport(chain=c, seed=self.cfg.seed + c, steps=0, n_samples=0) for c in chains}
        ok = {c: torch.ones((), dtype=torch.bool, device=self.device) for c in chains}
        where = {c: (0, 0) for c in chains}  # (epoch, batches consumed in it)
        epoch_rng = {c: streams.now(c) for c in chains}
        for c in chains:
            self.save(c, states[c], "running", reps[c], 0, 0, epoch_rng[c], streams.now(c))
        bar = iter(progress(range(self.total), desc=f"{self.cfg.sampler} chains {chains} (vectorised)",
                            total=self.total, enabled=self.show_progress))
        with unfused_attention(model):
            for epoch in range(self.cfg.epochs):
                for c in chains:
                    if not reps[c].diverged:
                        epoch_rng[c] = streams.epoch(c)
                for consumed in range(1, len(self.loader) + 1):
                    active = [c for c in chains if not reps[c].diverged]
                    if not active:
                        break
                    next(bar, None)
                    batches = [to_device(streams.next(c), self.device) for c in active]
                    t = states[active[0]].step
                    stepped = step_together(stepper, pre, grad, [states[c] for c in active], batches)
                    diags = self.probe_kept(stepped, t)
                    for i, (c, state) in enumerate(zip(active, stepped)):
                        states[c], where[c] = state, (epoch, consumed)
                        ok[c] = self.after_step(c, states[c], reps[c], t, ok[c], epoch, consumed, epoch_rng[c],
                                                partial(streams.now, c), diags[i])
        for c in chains:
            reps[c].steps = states[c].step
            if not reps[c].diverged:  # a finished sequential chain's loop ends with the stopping next()
                streams.end_epoch(c)
            self.save(c, states[c], "diverged" if reps[c].diverged else "done", reps[c], *where[c], epoch_rng[c],
                      streams.now(c))
        streams.finish(chains[-1])  # the global RNGs end where the last sequential chain would leave them
        return [reps[c] for c in chains]

    def run(self, chain: int, theta0: dict[str, torch.Tensor], saved: dict[str, Any] | None = None) -> ChainReport:
        """Run chain ``chain`` from ``theta0``, or continue it from ``saved`` (a :func:`.resume.read_info` dict with
        its ``"tensors"``): the sampler state is restored, the epoch's RNGs are put back, the batches of that epoch
        it had consumed are drawn again (same order, same augmentation) and skipped, then the RNGs are set to what
        they were right after the saved step."""
        seed = self.cfg.seed + chain
        state: SGMCMCState = self.sampler.init(theta0, seed=seed)
        rep = ChainReport(chain=chain, seed=seed, steps=0, n_samples=0)
        first_epoch, skip = 0, 0
        if saved is not None:
            last = self.store.indices(chain)[-1] if saved["draws"] else None
            restore_chain_state(state, saved["tensors"], saved["step"],
                                None if last is None else self.store.load(last, device=self.device))
            rep.n_samples, first_epoch, skip = saved["draws"], saved["epoch"], saved["consumed"]
            restore_rng(saved["rngs"]["epoch"], self.loader)
        ok = torch.ones((), dtype=torch.bool, device=self.device)
        bar = iter(progress(range(state.step, self.total), desc=f"{self.cfg.sampler} chain {chain}",
                            total=self.total - state.step, enabled=self.show_progress))
        epoch, consumed, epoch_rng = first_epoch, skip, capture_rng(self.loader)
        if saved is None:
            self.save(chain, state, "running", rep, epoch, consumed, epoch_rng)
        for epoch in range(first_epoch, self.cfg.epochs):
            if epoch > first_epoch:
                epoch_rng = capture_rng(self.loader)
            batches, consumed = iter(self.loader), 0
            if epoch == first_epoch and skip:
                for _ in range(skip):
                    next(batches)
                consumed = skip
                restore_rng(saved["rngs"]["now"], self.loader)
            for batch in batches:
                next(bar, None)
                consumed += 1
                t = state.step
                state = self.sampler.step(state, to_device(batch, self.device))
                ok = self.after_step(chain, state, rep, t, ok, epoch, consumed, epoch_rng)
                if rep.diverged:
                    break
            if rep.diverged:
                break
        rep.steps = state.step
        self.save(chain, state, "diverged" if rep.diverged else "done", rep, epoch, consumed, epoch_rng)
        return rep


def convergence(store: SampleStore, cfg: SamplerConfig) -> tuple[dict[str, Any], Any]:
    """Diagnostic arrays of every non-diverged chain in ``store`` and their verdict (None with < 4 draws)."""
    arrays = store.diagnostic_arrays()
    if arrays and next(iter(arrays.values())).shape[1] >= 4:
        return arrays, verdict(arrays, cfg.rhat_strict, cfg.rhat_lenient, cfg.min_ess_per_chain)
    return arrays, None


def run_chains(model: nn.Module, train_loader, cfg: SamplerConfig, n_chains: int | None = None, *,
               store: SampleStore | str, probe: Any = None, n_data: int | None = None,
               chain_ids: list[int] | None = None, show_progress: bool | None = None,
               resume: bool = False) -> ChainsResult:
    """Run ``n_chains`` (default ``cfg.n_chains``) chains; return per-chain reports, diagnostics and the verdict.

    ``n_data`` defaults to ``len(train_loader.dataset)``; ``probe`` (one batch) defaults to the first
    ``cfg.probe_size`` training examples. ``chain_ids`` (default ``range(n_chains)``) names the chains to run, so
    chains can be run by separate calls / processes into one store; chain ``c`` uses seed ``cfg.seed + c``.
    The diagnostics and verdict cover every non-diverged chain in the store.

    ``resume``: continue an interrupted run in ``store`` (same model, loader and ``cfg``): finished chains are
    skipped, the others continue from their last resume state (samples kept after it are dropped and drawn again),
    chains that never started start with the RNGs the previous chain ended with. The samples are bit-identical to
    an uninterrupted run's (on the same device, with ``num_workers = 0``).
    """
    n_chains = cfg.n_chains if n_chains is None else int(n_chains)
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    chain_ids = list(range(n_chains)) if chain_ids is None else [int(c) for c in chain_ids]
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    total, burn_in = step_counts(cfg, len(train_loader))
    n_data = len(train_loader.dataset) if n_data is None else int(n_data)
    schedule = chain_schedule(cfg, total)
    log_prob = model_log_prob(model, n_data, prior_std=cfg.prior_std, prior_center=cfg.prior_center)
    sampler = build(cfg.sampler, log_prob, lr=schedule, temperature=cfg.temperature, seed=cfg.seed, **cfg.options)
    map_params = {k: v.detach().clone() for k, v in trainable_params(model).items()}
    probe_fn = ProbeDiagnostics(model, probe if probe is not None else probe_batch(train_loader, cfg.probe_size),
                                n_projections=cfg.n_projections, seed=cfg.seed)
    walker = ChainWalker(sampler, schedule, cfg, train_loader, store, probe_fn, next(model.parameters()).device,
                         total, burn_in, show_progress)
    # chains asked of this store: range(n_chains) and any chain run into it (also by other calls / processes)
    asked = sorted(set(store.metadata.get("plan", {}).get("chains", [])) | set(range(n_chains)) | set(chain_ids))
    store.update_metadata({"sampler": cfg.model_dump(), "plan": {
        "chains": asked, "draws_per_chain": walker.expected_draws(), "steps_per_chain": total}})
    saved = resume_states(store, chain_ids) if resume else {c: None for c in chain_ids}
    if not resume and any(store.indices(c) for c in chain_ids):
        raise ValueError(f"the sample store {store.root} already holds samples of chain(s) "
                         f"{[c for c in chain_ids if store.indices(c)]}; pass resume=True to continue them")
    reports = []
    with eval_mode(model):
        together = vectorize_plan(cfg, model, train_loader, log_prob, schedule, map_params, chain_ids, resume,
                                  walker.device)
        if together is not None:
            stepper, pre, grad = together
            theta0s = {c: initial_params(cfg, map_params, c) for c in chain_ids}
            reports = walker.run_together(chain_ids, theta0s, model, stepper, pre, grad)
        for c in chain_ids if together is None else []:
            st = saved[c]
            if st is not None and st["status"] in FINISHED:
                reports.append(ChainReport(c, st["seed"], st["step"], st["draws"], st["status"] == "diverged",
                                           st.get("diverged_at"), st.get("reason")))
                restore_rng(st["rngs"]["now"], train_loader)  # the next chain starts where this one ended
                continue
            reports.append(walker.run(c, initial_params(cfg, map_params, c), st))
    arrays, v = convergence(store, cfg)
    return ChainsResult(store=store, chains=reports, verdict=v, diagnostics=arrays)


def vectorize_plan(cfg: SamplerConfig, model: nn.Module, loader: Any, log_prob: Any, schedule: Schedule,
                   map_params: dict[str, torch.Tensor], chain_ids: list[int], resume: bool,
                   device: torch.device) -> tuple[Sampler, PrecomputedLogProb, StackedGradient] | None:
    """``(stepper, pre, grad)`` for :meth:`ChainWalker.run_together`, or ``None`` (one chain at a time; the reason is
    logged, as a warning when ``cfg.vectorize_chains`` is true, or is ``"auto"`` and ``vmap`` cannot run the model)."""
    reason = sequential_reason(cfg.vectorize_chains, cfg.sampler, len(chain_ids), resume)
    together, tried = None, reason is None
    if reason is None:
        pre = PrecomputedLogProb()
        stepper = build(cfg.sampler, pre, lr=schedule, temperature=cfg.temperature, seed=cfg.seed, **cfg.options)
        grad = StackedGradient(log_prob)
        theta0s = [initial_params(cfg, map_params, c) for c in chain_ids[:2]]
        reason = try_first_step(grad, stepper, model, theta0s, loader, device)
        if reason is not None and cfg.vectorize_chains is True:
            raise ValueError(f"sgmcmc.vectorize_chains is true but {reason}; set it to 'auto' or false")
        together = None if reason is not None else (stepper, pre, grad)
    if reason is not None:
        # a warning where vectorised chains were demanded, or allowed ("auto") and the model could not run them
        loud = cfg.vectorize_chains is True or (cfg.vectorize_chains == "auto" and tried)
        (log.warning if loud else log.info)("SG-MCMC chains run one at a time: %s", reason)
    else:
        log.info("SG-MCMC chains %s run as one vectorised computation", chain_ids)
    return together


def resume_states(store: SampleStore, chain_ids: list[int]) -> dict[int, dict[str, Any] | None]:
    """Each chain's saved resume state (``None``: never started), with the store cut back to match them: draws a
    chain kept after its last resume state (a crash between the two writes) are dropped and will be drawn again."""
    saved: dict[int, dict[str, Any] | None] = {}
    for c in chain_ids:
        loaded = store.load_chain_state(c)
        saved[c] = None if loaded is None else {**read_info(*loaded), "tensors": loaded[0]}
    keep = {c: len(store.indices(c)) for c in store.chains() if c not in saved}
    keep.update({c: (0 if st is None else int(st["draws"])) for c, st in saved.items()})
    store.truncate(keep)
    return saved
