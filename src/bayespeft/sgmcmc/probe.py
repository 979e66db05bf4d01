"""Probe diagnostics: per-sample scalars of a network on a fixed probe set, recorded with every kept SG-MCMC sample.

Raw parameters of a network are not identifiable (permutations, rescalings), so per-parameter R-hat means little;
the chains are compared through these scalars instead (their R-hat/ESS come from :mod:`bayespeft.metrics.diagnostics`,
which works on the recorded arrays only):

* ``loglik``: mean log-likelihood ``(1/n) Σ_i log p(y_i|x_i, θ)`` on the probe set (nats per example);
* ``param_norm``: ``‖θ‖₂`` over the trainable parameters;
* ``proj_k`` (k < K): ``⟨d_k, θ⟩ / sqrt(P)`` for fixed directions ``d_k ~ N(0, I_P)`` seeded by ``(seed, k)``;
* ``true_class_prob``: ``p(y_i | x_i, θ)`` for every probe point i (vector of length n_probe).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..batch import split_batch, to_device
from ..evalmode import eval_mode

__all__ = ["ProbeDiagnostics", "probe_batch"]


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


class ProbeDiagnostics:
    """Compute the per-sample scalars for ``params`` (dict of trainable tensors) of ``model`` on a fixed probe set.

    ``probe``: one batch in the :mod:`bayespeft.batch` convention (kept on the model's device). The model runs in
    eval mode (its mode is restored after) with ``params`` substituted by ``torch.func.functional_call``.
    """

    def __init__(self, model: nn.Module, probe: Any, n_projections: int = 4, seed: int = 0) -> None:
        self.model = model
        device = next(model.parameters()).device
        self.inputs, self.labels = split_batch(to_device(probe, device))
        self.n_projections, self.seed = int(n_projections), int(seed)
        self._dirs: Tensor | None = None

    def _directions(self, n: int, like: Tensor) -> Tensor | None:
        if self.n_projections == 0:
            return None
        if self._dirs is None or self._dirs.shape[1] != n:
            rows = []
            for k in range(self.n_projections):
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
                rows.append(torch.randn(n, generator=g, dtype=torch.float32))
            self._dirs = torch.stack(rows).to(like.device) / math.sqrt(n)
        return self._dirs

    def _logits(self, params: Mapping[str, Tensor]) -> Tensor:
        if isinstance(self.inputs, Mapping):
            return functional_call(self.model, dict(params), args=(), kwargs=dict(self.inputs))
        return functional_call(self.model, dict(params), (self.inputs,))

    def __call__(self, params: Mapping[str, Tensor]) -> dict[str, Any]:
        with torch.no_grad(), eval_mode(self.model):  # (a context, not a decorator: mutmut skips decorated functions)
            logits = self._logits(params)
            return self._summaries(logits, params)

    def many(self, params_list: list[Mapping[str, Tensor]]) -> list[dict[str, Any]]:
        """``[self(p) for p in params_list]`` with one ``vmap``-ed forward over the stacked parameter sets (several
        chains' samples kept at the same step); one forward per set if the model cannot run under ``vmap``."""
        if len(params_list) < 2:
            return [self(p) for p in params_list]
        with torch.no_grad():
            stacked = {k: torch.stack([p[k] for p in params_list]) for k in params_list[0]}
            try:
                with eval_mode(self.model):
                    logits = vmap(self._logits, randomness="error")(stacked)
            except Exception:  # noqa: BLE001 - e.g. an operation without a batching rule: one set at a time
                return [self(p) for p in params_list]
            return [self._summaries(logits[c], p) for c, p in enumerate(params_list)]

    def _summaries(self, logits: Tensor, params: Mapping[str, Tensor]) -> dict[str, Any]:
        logp = logits.float().log_softmax(-1).gather(-1, self.labels.view(-1, 1)).squeeze(-1)
        flat = torch.cat([p.detach().reshape(-1).float() for p in params.values()])
        out: dict[str, Any] = {"loglik": logp.mean(), "param_norm": torch.linalg.vector_norm(flat)}
        dirs = self._directions(flat.numel(), flat)
        if dirs is not None:
            proj = dirs @ flat
            for k in range(self.n_projections):
                out[f"proj_{k}"] = proj[k]
        vals = torch.stack([out[k] for k in out]).cpu().tolist()  # one sync
        res = dict(zip(out, vals))
        res["true_class_prob"] = logp.exp().cpu().tolist()
        return res
