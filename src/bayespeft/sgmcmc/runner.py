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

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..batch import to_device
from ..evalmode import eval_mode
from ..metrics.diagnostics import verdict
from ..progress import progress
from .base import Sampler, SGMCMCState
from .config import SamplerConfig
from .model import model_log_prob, trainable_params
from .probe import ProbeDiagnostics, probe_batch
from .registry import build
from .schedules import Schedule, build_schedule
from .store import SampleStore


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

    def batches(self):
        for _epoch in range(self.cfg.epochs):
            yield from self.loader

    def run(self, chain: int, theta0: dict[str, torch.Tensor]) -> ChainReport:
        seed = self.cfg.seed + chain
        state: SGMCMCState = self.sampler.init(theta0, seed=seed)
        rep = ChainReport(chain=chain, seed=seed, steps=0, n_samples=0)
        ok = torch.ones((), dtype=torch.bool, device=self.device)
        bar = iter(progress(range(self.total), desc=f"{self.cfg.sampler} chain {chain}", total=self.total,
                            enabled=self.show_progress))
        for batch in self.batches():
            next(bar, None)
            t = state.step
            state = self.sampler.step(state, to_device(batch, self.device))
            ok &= torch.isfinite(state.log_prob)
            keep = self.keep(state.step, t)
            if keep:
                ok &= torch.isfinite(torch.stack(torch._foreach_norm(state.leaves))).all()
            if self.check_due(state.step, keep) and not bool(ok):
                rep.diverged, rep.diverged_at, rep.reason = True, state.step, DIVERGED
                self.store.mark_diverged(chain, state.step, DIVERGED)
                break
            if keep:
                params = {k: v.detach() for k, v in state.params.items()}
                self.store.add(chain, params, step=state.step, diagnostics=self.probe(params))
                rep.n_samples += 1
        rep.steps = state.step
        return rep


def convergence(store: SampleStore, cfg: SamplerConfig) -> tuple[dict[str, Any], Any]:
    """Diagnostic arrays of every non-diverged chain in ``store`` and their verdict (None with < 4 draws)."""
    arrays = store.diagnostic_arrays()
    if arrays and next(iter(arrays.values())).shape[1] >= 4:
        return arrays, verdict(arrays, cfg.rhat_strict, cfg.rhat_lenient, cfg.min_ess_per_chain)
    return arrays, None


def run_chains(model: nn.Module, train_loader, cfg: SamplerConfig, n_chains: int | None = None, *,
               store: SampleStore | str, probe: Any = None, n_data: int | None = None,
               chain_ids: list[int] | None = None, show_progress: bool | None = None) -> ChainsResult:
    """Run ``n_chains`` (default ``cfg.n_chains``) chains; return per-chain reports, diagnostics and the verdict.

    ``n_data`` defaults to ``len(train_loader.dataset)``; ``probe`` (one batch) defaults to the first
    ``cfg.probe_size`` training examples. ``chain_ids`` (default ``range(n_chains)``) names the chains to run, so
    chains can be run by separate calls / processes into one store; chain ``c`` uses seed ``cfg.seed + c``.
    The diagnostics and verdict cover every non-diverged chain in the store.
    """
    n_chains = cfg.n_chains if n_chains is None else int(n_chains)
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    chain_ids = list(range(n_chains)) if chain_ids is None else [int(c) for c in chain_ids]
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    store.update_metadata({"sampler": cfg.model_dump()})
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
    with eval_mode(model):
        reports = [walker.run(c, initial_params(cfg, map_params, c)) for c in chain_ids]
    arrays, v = convergence(store, cfg)
    return ChainsResult(store=store, chains=reports, verdict=v, diagnostics=arrays)
