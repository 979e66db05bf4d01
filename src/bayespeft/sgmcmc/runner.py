"""``run_chains``: SG-MCMC chains over a model's trainable parameters, streamed into a :class:`SampleStore`.

For each chain ``c`` (sequentially): start from the model's trainable values (``init="map"``), MAP + jitter, or a
prior draw; walk ``epochs`` passes over ``train_loader``, one sampler step per batch, with the configured schedule;
after step ``t`` (1-based) keep a sample when ``t > burn_in`` (``burn_in = round(burn_in_epochs · len(loader))``
steps), ``(t - burn_in) % thin == 0`` and the schedule is in a sampling phase for that step (cyclical: not an
exploration step). For each kept sample the probe diagnostics of :mod:`bayespeft.metrics.diagnostics` are recorded.

Divergence: every ``divergence_check_every`` steps and before every kept sample, the accumulated finiteness flag of
``log_prob`` and of the parameters is read (one device sync). A chain with NaN/Inf is stopped, marked diverged in the
store and in the result; its already-saved samples stay; the other chains run normally. The model is put in eval
mode while sampling (dropout off: ``log_prob`` is a deterministic function of θ) and its parameters are never
modified (the sampler works on copies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..batch import to_device
from ..progress import progress
from . import build
from .config import SamplerConfig
from .model import model_log_prob, trainable_params
from .schedules import build_schedule
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


def probe_batch(loader, size: int) -> Any:
    """The first ``size`` examples of ``loader`` as one batch (dict or (x, y) pair)."""
    parts = []
    n = 0
    for batch in loader:
        parts.append(batch)
        n += len(batch["labels"] if isinstance(batch, dict) else batch[1])
        if n >= size:
            break
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts])[:size] for k in parts[0]}
    return tuple(torch.cat([p[i] for p in parts])[:size] for i in range(2))


def _init_params(cfg: SamplerConfig, map_params: dict[str, torch.Tensor], chain: int) -> dict[str, torch.Tensor]:
    if cfg.init == "map":
        return map_params
    g = torch.Generator().manual_seed(cfg.seed + chain + 7919)
    noise = {k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device) for k, v in map_params.items()}
    if cfg.init == "jitter":
        return {k: v + cfg.init_jitter * noise[k] for k, v in map_params.items()}
    return {k: cfg.prior_std * noise[k] + (v if cfg.prior_center == "init" else 0.0) for k, v in map_params.items()}


def run_chains(model: nn.Module, train_loader, cfg: SamplerConfig, n_chains: int | None = None, *,
               store: SampleStore | str, probe: Any = None, n_data: int | None = None,
               chain_ids: list[int] | None = None, show_progress: bool | None = None) -> ChainsResult:
    """Run ``n_chains`` (default ``cfg.n_chains``) chains; return per-chain reports, diagnostics and the verdict.

    ``n_data`` defaults to ``len(train_loader.dataset)``; ``probe`` (one batch) defaults to the first
    ``cfg.probe_size`` training examples. ``chain_ids`` (default ``range(n_chains)``) names the chains to run, so
    chains can be run by separate calls / processes into one store; chain ``c`` uses seed ``cfg.seed + c``.
    The diagnostics and verdict cover every non-diverged chain in the store.
    """
    from ..metrics.diagnostics import ProbeDiagnostics, verdict

    n_chains = cfg.n_chains if n_chains is None else int(n_chains)
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    chain_ids = list(range(n_chains)) if chain_ids is None else [int(c) for c in chain_ids]
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    store.update_metadata({"sampler": cfg.model_dump()})
    steps_per_epoch = len(train_loader)
    total = cfg.epochs * steps_per_epoch
    burn_in = round(cfg.burn_in_epochs * steps_per_epoch)
    if burn_in >= total:
        raise ValueError(f"burn-in ({burn_in} steps) must be shorter than the run ({total} steps)")
    n_data = len(train_loader.dataset) if n_data is None else int(n_data)
    kw = {"b": cfg.poly_b, "gamma": cfg.poly_gamma} if cfg.schedule == "polynomial" else (
        {"cycles": cfg.cycles, "exploration_fraction": cfg.exploration_fraction} if cfg.schedule == "cyclical" else {})
    schedule = build_schedule(cfg.schedule, cfg.lr, total, **kw)
    log_prob = model_log_prob(model, n_data, prior_std=cfg.prior_std, prior_center=cfg.prior_center)
    sampler = build(cfg.sampler, log_prob, lr=schedule, temperature=cfg.temperature, seed=cfg.seed, **cfg.options)
    device = next(model.parameters()).device
    map_params = {k: v.detach().clone() for k, v in trainable_params(model).items()}
    probe_fn = ProbeDiagnostics(model, probe if probe is not None else probe_batch(train_loader, cfg.probe_size),
                                n_projections=cfg.n_projections, seed=cfg.seed)
    was_training = model.training
    model.eval()
    reports = []
    try:
        for c in chain_ids:
            state = sampler.init(_init_params(cfg, map_params, c), seed=cfg.seed + c)
            rep = ChainReport(chain=c, seed=cfg.seed + c, steps=0, n_samples=0)
            ok = torch.ones((), dtype=torch.bool, device=device)
            bar = progress(range(total), desc=f"{cfg.sampler} chain {c}", total=total, enabled=show_progress)
            it = iter(bar)
            for _epoch in range(cfg.epochs):
                for batch in train_loader:
                    next(it, None)
                    t = state.step
                    state = sampler.step(state, to_device(batch, device))
                    ok &= torch.isfinite(state.log_prob)
                    keep = state.step > burn_in and (state.step - burn_in) % cfg.thin == 0 and schedule.sampling(t)
                    if keep:
                        ok &= torch.isfinite(torch.stack(torch._foreach_norm(state.leaves))).all()
                    if keep or state.step % cfg.divergence_check_every == 0 or state.step == total:
                        if not bool(ok):
                            rep.diverged, rep.diverged_at = True, state.step
                            rep.reason = "non-finite log_prob or parameters (NaN/Inf)"
                            store.mark_diverged(c, state.step, rep.reason)
                            break
                    if keep:
                        params = {k: v.detach() for k, v in state.params.items()}
                        store.add(c, params, step=state.step, diagnostics=probe_fn(params))
                        rep.n_samples += 1
                if rep.diverged:
                    break
            rep.steps = state.step
            reports.append(rep)
    finally:
        model.train(was_training)
    arrays = store.diagnostic_arrays()
    v = None
    if arrays and next(iter(arrays.values())).shape[1] >= 4:
        v = verdict(arrays, cfg.rhat_strict, cfg.rhat_lenient, cfg.min_ess_per_chain)
    return ChainsResult(store=store, chains=reports, verdict=v, diagnostics=arrays)
