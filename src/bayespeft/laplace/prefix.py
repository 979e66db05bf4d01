"""Cached-prefix Monte Carlo: run only the part of the forward pass that a sampled parameter group can change.

Write the network as ``f(x) = tail(u_{L-1} ∘ … ∘ u_0(embed(x)))`` with units ``u_i`` (the blocks of the block stack,
or the stages of a CIFAR ResNet; :func:`bayespeft.laplace.groups.block_stacks`). When the sampled parameters ``θ_S``
are first used after unit ``k-1`` has finished, ``h_k = u_{k-1} ∘ … ∘ u_0(embed(x))`` is the same for every
sample ``θ_S^{(s)}``, so per batch it is computed once (the MAP forward) and each sample costs only
``tail ∘ u_{L-1} ∘ … ∘ u_k`` (plus the cheap embedding): ``(L - k)/L`` of a full forward, ``≈ (L+1)/2L`` averaged
over one group per block.

How: the MAP forward records ``h_k`` (output of ``u_{k-1}``); during a sample's forward ``u_{k-1}.forward`` returns
the recorded output and ``u_0..u_{k-2}`` return their input unchanged (their work is skipped), through temporary
instance attributes removed afterwards. ``k`` is found by running the forward once with hooks: the number of units
whose forward has completed when a module owning a parameter of ``S`` is first called. Guards (any failure ->
the naive full forward, with the reason in the ``path`` :meth:`PrefixCache.entry` returns): a block stack exists, each unit is called
exactly once, ``k ≥ 1``, and the spliced forward at the MAP reproduces the MAP logits (``rtol=1e-4``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from bayespeft.laplace.capture import ForwardFn
from bayespeft.laplace.groups import base_prefix, block_stacks


def units_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified name, module)]`` of the blocks (one stack) or stages (several stacks), in order."""
    net, prefix = base_prefix(model)
    stacks = block_stacks(net)
    mods = dict(net.named_modules())
    if len(stacks) == 1:
        return [(f"{prefix}{stacks[0]}.{i}", m) for i, m in enumerate(mods[stacks[0]])]
    return [(prefix + s, mods[s]) for s in stacks]


class PrefixCache:
    """Cached-prefix forward passes of ``model`` for one or several parameter sets (see the module docstring).

    Use: ``k, path = cache.entry(names, batch)`` once per parameter set (``k=None``: naive path; ``path`` says which
    ran and why), then per batch ``logits, outs = cache.map_forward(batch, ks)`` (one MAP forward recording
    the outputs of units ``k-1`` for every ``k`` in ``ks``) and, with a sample's parameters written into the model,
    ``with cache.replay(k, outs[k]): forward_fn(model, batch)``.
    """

    def __init__(self, model: nn.Module, forward_fn: ForwardFn) -> None:
        self.model, self.forward_fn = model, forward_fn
        self.units = units_of(model)
        #: bytes of the largest module output seen by the last :meth:`entries` detection forward (memory estimates)
        self.max_output_bytes: int = 0

    # ---- detection ----------------------------------------------------------------------------------------------
    def entry(self, names: Sequence[str], batch: Any) -> tuple[int | None, str]:
        """``(k, path)`` for the parameters ``names`` (checked on ``batch`` at the MAP); ``k=None``: the naive path."""
        return self.entries([names], batch)[0]

    @torch.no_grad()
    def entries(self, sets: Sequence[Sequence[str]], batch: Any) -> list[tuple[int | None, str]]:
        """:meth:`entry` for several parameter sets at the cost of one detection forward, one recording forward and
        one spliced (partial) forward per distinct ``k``."""
        if not self.units:
            handles = self._size_hooks()
            try:
                self.forward_fn(self.model, batch)
            finally:
                for h in handles:
                    h.remove()
            return [(None, "naive (no block stack found)")] * len(sets)
        modules = dict(self.model.named_modules())
        calls = [0] * len(self.units)
        state: dict[str, Any] = {"done": 0}
        first: list[int | None] = [None] * len(sets)
        handles = []

        def unit_hook(i: int):
            def hook(module, args, out):
                calls[i] += 1
                state["done"] += 1

            return hook

        def owner_hook(members: list[int]):
            def hook(module, args):
                for j in members:
                    if first[j] is None:
                        first[j] = state["done"]

            return hook

        users: dict[str, list[int]] = {}
        for j, names in enumerate(sets):
            for owner in {n.rpartition(".")[0] for n in names}:
                users.setdefault(owner, []).append(j)
        try:
            for i, (_, u) in enumerate(self.units):
                handles.append(u.register_forward_hook(unit_hook(i)))
            for owner, members in users.items():
                if owner in modules:
                    handles.append(modules[owner].register_forward_pre_hook(owner_hook(members)))
            handles += self._size_hooks()
            logits = self.forward_fn(self.model, batch)[0]
        finally:
            for h in handles:
                h.remove()
        if any(c != 1 for c in calls):
            return [(None, f"naive (units called {calls} times in one forward)")] * len(sets)
        ks = sorted({k for k in first if k})
        _, outs = self.map_forward(batch, ks)
        scale = float(logits.abs().max().clamp_min(1.0))
        valid = {}
        for k in ks:
            with self.replay(k, outs[k]):
                spliced = self.forward_fn(self.model, batch)[0]
            valid[k] = torch.allclose(spliced, logits, rtol=1e-4, atol=1e-5 * scale)
        result: list[tuple[int | None, str]] = []
        for k in first:
            if k is None:
                result.append((None, "naive (never used)"))
            elif k == 0:
                result.append((None, "naive (the parameters are used before the first block)"))
            elif not valid[k]:
                result.append((None, "naive (the spliced forward does not reproduce the MAP logits)"))
            else:
                result.append((k, f"cached-prefix (units 0..{k - 1} of {len(self.units)} replayed, the rest run per sample)"))
        return result

    def _size_hooks(self) -> list[Any]:
        """Hooks recording the largest module output (bytes) in :attr:`max_output_bytes` (reset here)."""
        self.max_output_bytes = 0

        def hook(module, args, out):
            if isinstance(out, (tuple, list)):
                out = next((o for o in out if torch.is_tensor(o)), None)
            if torch.is_tensor(out):
                self.max_output_bytes = max(self.max_output_bytes, out.numel() * out.element_size())

        return [m.register_forward_hook(hook) for m in self.model.modules()]

    # ---- per batch ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def map_forward(self, batch: Any, ks: Sequence[int | None] = ()) -> tuple[torch.Tensor, dict[int, Any]]:
        """MAP logits ``(B, C)`` and ``{k: output of unit k-1}`` for the (non-``None``) entries ``ks``."""
        outs: dict[int, Any] = {}
        handles = []
        for k in sorted({k for k in ks if k is not None}):
            handles.append(self.units[k - 1][1].register_forward_hook(lambda m, a, out, k=k: outs.__setitem__(k, out)))
        try:
            logits = self.forward_fn(self.model, batch)[0]
        finally:
            for h in handles:
                h.remove()
        return logits, outs

    @contextmanager
    def replay(self, k: int | None, recorded: Any) -> Iterator[None]:
        """Inside: units ``0..k-2`` pass their input through, unit ``k-1`` returns ``recorded`` (``k=None``: no-op)."""
        if k is None:
            yield
            return
        patched = [u for _, u in self.units[:k]]

        def passthrough(*args: Any, **kwargs: Any) -> Any:
            return args[0] if args else None

        try:
            for u in patched[:-1]:
                u.forward = passthrough
            patched[-1].forward = lambda *args, **kwargs: recorded
            yield
        finally:
            for u in patched:
                if "forward" in u.__dict__:
                    del u.forward
