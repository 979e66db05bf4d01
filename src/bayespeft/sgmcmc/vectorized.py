r"""Many chains as one batched computation: ``K`` chains' gradients in one ``torch.func.vmap`` call per step.

For the elementwise samplers (:data:`VECTORIZABLE`: sgld, psgld, asgld, sghmc) a step of chain ``c`` is

.. math::  (g_c, v_c) = (\nabla_\theta, 1)\,\log p(\theta_c, B_{c,t}), \qquad
           \text{state}_c \leftarrow \text{update}(\text{state}_c, g_c, \xi_c)

where ``update`` acts entry by entry and ``ξ_c`` comes from chain ``c``'s own generator (seed ``cfg.seed + c``). Here
the ``K`` gradient evaluations run as one: the parameters are stacked ``{name: (K, *shape)}``, the ``K`` batches
``{key: (K, B, ...)}``, ``vmap(log_prob)`` runs the model once over both (``functional_call`` with batched
parameters) and one ordinary backward of ``Σ_c log p(θ_c, B_c)`` gives every chain's gradient (chain ``c``'s term
depends on its own slice only; this is cheaper than ``vmap(grad(log_prob))``, whose per-op functorch wrapping cost
~30 % more on the micro ViT). Each chain's update is then the sampler's own ``step`` with those gradients
(:class:`PrecomputedLogProb`), so the algorithms are not written twice and every chain draws exactly the noise of
its sequential run.

Data order: chain ``c`` of a sequential :func:`~.runner.run_chains` reads the train loader where chain ``c - 1``
left it (shuffling and augmentation RNGs continue). :class:`ChainStreams` reproduces that: a pass over the loader
without the model finds each chain's starting RNG state, then each chain draws its own batches with the RNGs swapped
in and out around every draw. A batched chain therefore sees the same batches, the same noise and the same
schedule as its sequential run; only the floating-point rounding of the batched gradient differs (float-close
trajectories, not bit-identical; if a chain diverges, the later chains' sequential data order would have been
shifted, the batched one is not). The per-chain resume files are written as in the sequential runner.

Not vectorised (the runner falls back to one chain at a time and logs why): SAM samplers (``sam_sgld``,
``sam_sgld_r1``: one global gradient norm per chain, not an elementwise update), ``resume`` (continues chains one at
a time), a single chain, or a model/batch that ``vmap`` cannot run (the first step is tried before the run starts).
Batches of different shapes across chains (e.g. dynamic padding) fall back to per-chain gradients for that step.
Attention: timm's fused ``scaled_dot_product_attention`` has no ``vmap`` batching rule for its CPU backward (a slow
per-chain loop), so modules with a ``fused_attn`` switch use timm's explicit attention while batched (same maths).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..evalmode import unfused_attention
from .base import Sampler, SGMCMCState
from .options import VECTORIZABLE  # elementwise samplers (torch-free: configs check it)
from .resume import capture_rng, restore_rng

log = logging.getLogger(__name__)


def sequential_reason(setting: bool | str, sampler: str, n_chains: int, resume: bool) -> str | None:
    """Why ``run_chains`` runs these chains one at a time (``None``: vectorise). ``setting``: ``vectorize_chains``."""
    if setting is False or setting == "false":
        return "sgmcmc.vectorize_chains is false"
    if sampler not in VECTORIZABLE:
        return (f"sampler {sampler!r} is not elementwise (SAM variants use one global gradient norm per chain); "
                f"vectorised chains need one of {sorted(VECTORIZABLE)}")
    if n_chains < 2:
        return "a single chain"
    if resume:
        return "resume continues the chains one at a time"
    return None


class PrecomputedLogProb:
    """A ``log_prob`` whose value and gradient at the current parameters were computed elsewhere.

    ``set(value, grads)`` then ``__call__(params, batch)`` returns ``value + Σ_i ⟨θ_i − sg(θ_i), g_i⟩`` (``sg`` =
    stop-gradient): numerically ``value``, gradient exactly ``g``. The sampler's ``step`` takes it like any
    ``log_prob``, so a batched gradient feeds the unchanged update code; :func:`~.base.value_and_grad` takes
    ``(value, g)`` from :meth:`precomputed_value_and_grad` directly (the same numbers, no autograd pass per chain).
    """

    def __init__(self) -> None:
        self.value: Tensor | None = None
        self.grads: list[Tensor] = []

    def set(self, value: Tensor, grads: list[Tensor]) -> None:
        self.value, self.grads = value, grads

    def precomputed_value_and_grad(self, params: Any, leaves: list[Tensor], batch: Any) -> tuple[Tensor, list[Tensor]]:
        """What :func:`~.base.value_and_grad` would compute through :meth:`__call__`, without the autograd pass."""
        return self.value, list(self.grads)

    def __call__(self, params: Any, batch: Any) -> Tensor:
        leaves, _ = tree_flatten(params)
        out = self.value
        for p, g in zip(leaves, self.grads):
            out = out + ((p - p.detach()) * g).sum()
        return out


def stack_batches(batches: list[Any]) -> Any | None:
    """``K`` batches of the same structure -> one batch with a leading chain dimension; ``None`` if shapes differ
    or a leaf is not a tensor."""
    leaves = [tree_flatten(b) for b in batches]
    spec = leaves[0][1]
    if any(s != spec for _, s in leaves):
        return None
    cols = list(zip(*[ls for ls, _ in leaves]))
    if not all(torch.is_tensor(x) and x.shape == col[0].shape for col in cols for x in col):
        return None
    return tree_unflatten([torch.stack(col) for col in cols], spec)


class StackedGradient:
    """``(values (K,), grads [(K, *shape)])`` of ``log_prob`` for ``K`` parameter sets and ``K`` batches at once.

    ``log_prob`` must be ``vmap``-able: a :class:`~.model.ModelLogProb` is called with ``foreach=False``.
    """

    def __init__(self, log_prob: Any) -> None:
        fn = partial(log_prob, foreach=False) if hasattr(log_prob, "log_prior") else log_prob
        self.log_prob = log_prob
        self.batched = vmap(fn, in_dims=(0, 0), randomness="error")

    def __call__(self, states: list[SGMCMCState], batches: list[Any]) -> tuple[Tensor, list[list[Tensor]]]:
        stacked_batch = stack_batches(batches)
        if stacked_batch is None:  # shapes differ across chains: per-chain gradients for this step
            vals, grads = [], []
            for s, b in zip(states, batches):
                with torch.enable_grad():
                    v = self.log_prob(s.params, b)
                    grads.append(list(torch.autograd.grad(v, s.leaves, materialize_grads=True)))
                vals.append(v.detach())
            return torch.stack(vals), grads
        leaves = [torch.stack([s.leaves[i].detach() for s in states]).requires_grad_(True)
                  for i in range(len(states[0].leaves))]
        with torch.enable_grad():  # vmapped forward, one ordinary backward: chain c's value depends on leaves[:][c] only
            v = self.batched(tree_unflatten(leaves, states[0].spec), stacked_batch)
            g_leaves = torch.autograd.grad(v.sum(), leaves, materialize_grads=True)
        return v.detach(), [[gl[c] for gl in g_leaves] for c in range(len(states))]


def step_together(stepper: Sampler, pre: PrecomputedLogProb, grad: StackedGradient, states: list[SGMCMCState],
                  batches: list[Any]) -> list[SGMCMCState]:
    """One step of every chain: the batched gradient, then each chain's own update (``stepper`` = the sampler built
    on ``pre``) with its own noise generator."""
    values, grads = grad(states, batches)
    out = []
    for i, (state, batch) in enumerate(zip(states, batches)):
        pre.set(values[i], grads[i])
        out.append(stepper.step(state, batch))
    return out


class ChainStreams:
    """Each chain's own pass over ``loader``, in the order a sequential run would give it (see module docstring).

    ``epoch(c)`` / ``next(c)`` / ``end_epoch(c)`` run with chain ``c``'s RNG snapshot put in place and taken back after;
    ``now(c)`` is that snapshot (for the resume files); ``finish(c)`` leaves the global RNGs as chain ``c`` left them.
    """

    def __init__(self, loader: Any, chains: list[int], epochs: int) -> None:
        self.loader = loader
        self.snap: dict[int, dict[str, Any]] = {}
        self.iters: dict[int, Iterator[Any]] = {}
        first = capture_rng(loader)
        for i, c in enumerate(chains):
            self.snap[c] = capture_rng(loader)
            if i < len(chains) - 1:  # advance the RNGs by one chain's worth of data (no model)
                for _ in range(epochs):
                    for _ in loader:
                        pass
        restore_rng(first, loader)

    def end_epoch(self, c: int) -> None:
        """End chain ``c``'s current pass as a ``for`` loop does: with the ``next()`` that raises ``StopIteration``.
        That call can draw from the RNGs (``RandomSampler`` draws one more permutation when it runs out, which a pass
        ending on a full batch reaches only there), so the next epoch starts from the same state as a sequential
        chain's."""
        it = self.iters.pop(c, None)
        if it is None:
            return
        restore_rng(self.snap[c], self.loader)
        for _ in it:  # no batches are left: only the stopping next()
            pass
        self.snap[c] = capture_rng(self.loader)

    def epoch(self, c: int) -> dict[str, Any]:
        """Start chain ``c``'s next epoch (ending the previous one); returns the RNG snapshot at its start."""
        self.end_epoch(c)
        restore_rng(self.snap[c], self.loader)
        at_start = self.snap[c]
        self.iters[c] = iter(self.loader)
        self.snap[c] = capture_rng(self.loader)
        return at_start

    def next(self, c: int) -> Any:
        restore_rng(self.snap[c], self.loader)
        batch = next(self.iters[c])
        self.snap[c] = capture_rng(self.loader)
        return batch

    def now(self, c: int) -> dict[str, Any]:
        """A copy of chain ``c``'s current RNG snapshot (safe to store next to its epoch-start snapshot)."""
        snap = self.snap[c]
        return {"tensors": {k: v.clone() for k, v in snap["tensors"].items()}, "json": snap["json"]}

    def finish(self, c: int) -> None:
        restore_rng(self.snap[c], self.loader)


def try_first_step(grad: StackedGradient, sampler: Sampler, model: nn.Module, theta0s: list[dict[str, Tensor]],
                   loader: Any, device: torch.device) -> str | None:
    """Run the batched gradient once on throw-away states and the first batch; the error text if it fails."""
    from ..batch import to_device

    rng = capture_rng(loader)  # drawing the batch must not move the data order
    try:
        batch = to_device(next(iter(loader)), device)
        states = [sampler.init(t, seed=0) for t in theta0s[:2]]
        with unfused_attention(model):
            grad(states, [batch, batch])
    except Exception as e:  # noqa: BLE001 - any failure means: run the chains one at a time
        return f"torch.func.vmap cannot run this model/batch ({type(e).__name__}: {str(e)[:200]})"
    finally:
        restore_rng(rng, loader)
    return None
