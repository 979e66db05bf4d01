"""Per-sample logits ``f(x; θ_s)`` of posterior draws, several draws per forward pass where that is valid.

A draw ``θ_S^{(s)}`` changes only the parameters of the sampled set ``S``, owned by modules ``m ∈ M``. Stacking
``S'`` copies of the batch along the batch dimension (rows ``s·B .. (s+1)·B − 1`` belong to draw ``s``) turns
``S'`` forwards of ``B`` examples into one of ``S'·B`` examples: every module outside ``M`` runs as usual on a larger
batch, and each ``m ∈ M`` applies draw ``s``'s parameters to its row block ``s``
(``torch.func.vmap`` over ``functional_call(m, θ_m^{(s)}, x_s)`` with the draws stacked ``(S', *shape)``).

Modes (where the copies start):

* ``"expand"``: with a cached prefix (entry ``k``, :mod:`bayespeft.laplace.prefix`) unit ``k−1`` returns its recorded
  MAP output repeated ``S'`` times and units ``0..k−2`` pass through; the inputs are not repeated, so the embeddings
  run once per ``S'`` draws;
* ``"repeat"``: the whole batch is repeated (needed when later layers take other per-example inputs, e.g. an
  attention mask, or without a cached prefix);
* ``"loop"``: one draw at a time, written into the model's parameters (always valid; the reference and fallback).

:func:`choose_mode` picks, once per parameter set, the first of ``expand``/``repeat`` that runs and gives the loop's
logits on a few examples and two draws (``rtol=1e-4``), else ``loop``. Every mode gives the same per-sample logits
as ``loop`` up to float round-off. The number of draws per forward is bounded by a memory budget
(:func:`draws_per_forward`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from bayespeft.batch import split_batch
from bayespeft.laplace.predictive import chunks

if TYPE_CHECKING:
    from bayespeft.laplace.posterior import LaplacePosterior
    from bayespeft.laplace.prefix import PrefixCache

Mode = Literal["expand", "repeat", "loop"]

#: Default memory budget of one batched forward (activations of all its draws), bytes.
SAMPLE_BATCH_BYTES = 512 * 2**20
#: Peak live activations of a forward ≈ this many times the largest module output.
ACTIVATION_FACTOR = 4


def draws_per_forward(n_samples: int, bytes_per_draw: float | None, budget: int = SAMPLE_BATCH_BYTES) -> int:
    """``S'``: draws per forward so that ``S' · bytes_per_draw ≤ budget`` (at least 1), balanced over the chunks
    (30 draws with room for 20 -> 15 per forward, not 20 + 10)."""
    if not bytes_per_draw or bytes_per_draw <= 0:
        return 1
    fit = max(1, min(n_samples, int(budget // bytes_per_draw)))
    n_chunks = -(-n_samples // fit)
    return -(-n_samples // n_chunks)


def first_rows(batch: Any, n: int) -> Any:
    """The first ``n`` examples of a batch."""
    return next(iter(chunks(batch, n)))


def rows_repeated(obj: Any, n: int, b: int) -> Any:
    """``obj`` with every tensor whose leading dimension is ``b`` repeated ``n`` times along it (copy ``s`` = rows
    ``s·b .. (s+1)·b − 1``), recursively through tuples, lists and mappings; other values unchanged."""
    if torch.is_tensor(obj):
        return obj.repeat(n, *([1] * (obj.ndim - 1))) if obj.ndim and obj.shape[0] == b else obj
    if isinstance(obj, Mapping):
        return {k: rows_repeated(v, n, b) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(rows_repeated(v, n, b) for v in obj)
    return obj


def _n_rows(batch: Any) -> int:
    return int(split_batch(batch)[1].shape[0])


def looped_logits(
    post: LaplacePosterior, batch: Any, thetas: torch.Tensor, cache: PrefixCache | None = None,
    k: int | None = None, recorded: Any = None,
) -> torch.Tensor:
    """``(S, B, C)``: one forward per row of ``thetas`` ``(S, d)``, written into the model (restored afterwards);
    with ``cache`` and entry ``k``, units before ``k`` replay ``recorded``."""
    named = dict(post.model.named_parameters())
    params = [named[n] for n in post.param_names]
    out = []
    try:
        with torch.no_grad():
            for theta in thetas:
                for p, v in zip(params, post.structure.unflatten(theta).values()):
                    p.copy_(v.to(p.dtype))
                with cache.replay(k, recorded) if cache is not None else nullcontext():
                    out.append(post.forward_fn(post.model, batch)[0])
    finally:
        with torch.no_grad():
            for p, v in zip(params, post.structure.unflatten(post.mean).values()):
                p.copy_(v.to(p.dtype))
    return torch.stack(out)


class _Direct(nn.Module):
    """Calls ``module``'s class ``forward`` (not an instance override) so that it can be ``functional_call``-ed."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.m).forward(self.m, *args, **kwargs)


@contextmanager
def per_draw_parameters(model: nn.Module, stacked: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Inside: each module owning a parameter in ``stacked`` (``{name: (S', *shape)}``) maps an input of ``S'·B`` rows
    to row block ``s`` with draw ``s`` (vmap of ``functional_call``). Owners must be leaf modules (``ValueError``)."""
    from torch.func import functional_call, vmap

    mods = dict(model.named_modules())
    owned: dict[str, dict[str, torch.Tensor]] = {}
    for name, v in stacked.items():
        owner, _, leaf = name.rpartition(".")
        owned.setdefault(owner, {})[f"m.{leaf}"] = v
    for owner in owned:
        if owner not in mods or any(True for _ in mods[owner].children()):
            raise ValueError(f"{owner!r} is not a leaf module; its draws cannot be batched")
    patched = []

    def batched(direct: _Direct, params: dict[str, torch.Tensor]):
        n = next(iter(params.values())).shape[0]

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            xs = x.unflatten(0, (n, x.shape[0] // n))
            out = vmap(lambda p, xi: functional_call(direct, p, (xi, *args), kwargs), randomness="error")(params, xs)
            return out.flatten(0, 1)

        return forward

    try:
        for owner, params in owned.items():
            m = mods[owner]
            m.forward = batched(_Direct(m), params)
            patched.append(m)
        yield
    finally:
        for m in patched:
            if "forward" in m.__dict__:
                del m.forward


def batched_logits(
    post: LaplacePosterior, batch: Any, thetas: torch.Tensor, mode: Mode, cache: PrefixCache | None = None,
    k: int | None = None, recorded: Any = None,
) -> torch.Tensor:
    """``(S', B, C)`` per-draw logits of ``thetas`` ``(S', d)`` in one forward (``mode`` ``expand``/``repeat``,
    module docstring); ``loop`` runs :func:`looped_logits`."""
    if mode == "loop":
        return looped_logits(post, batch, thetas, cache, k, recorded)
    if mode == "expand" and (cache is None or k is None):
        raise ValueError("mode 'expand' needs a cached prefix entry k")
    n, b = thetas.shape[0], _n_rows(batch)
    named = dict(post.model.named_parameters())
    stacked = {name: v.to(named[name].dtype) for name, v in post.structure.unflatten(thetas).items()}
    big = batch if mode == "expand" else rows_repeated(batch, n, b)
    replay = cache.replay(k, rows_repeated(recorded, n, b)) if cache is not None and k is not None else nullcontext()
    with torch.no_grad(), per_draw_parameters(post.model, stacked), replay:
        f = post.forward_fn(post.model, big)[0]
    if f.shape[0] != n * b:
        raise ValueError(f"the batched forward returned {f.shape[0]} rows, expected {n} x {b}")
    return f.unflatten(0, (n, b))


def sample_logits(
    post: LaplacePosterior, batch: Any, thetas: torch.Tensor, cache: PrefixCache | None = None,
    k: int | None = None, recorded: Any = None, *, mode: Mode = "loop", per_forward: int = 1,
) -> torch.Tensor:
    """Per-sample logits ``(S, B, C)`` for the rows of ``thetas`` ``(S, d)`` (the posterior's subset at ``θ_s``, all
    else at the MAP), ``per_forward`` draws per forward in ``mode``; the model is left at its MAP."""
    if mode == "loop" or per_forward <= 1:
        return looped_logits(post, batch, thetas, cache, k, recorded)
    return torch.cat([batched_logits(post, batch, t, mode, cache, k, recorded) for t in thetas.split(per_forward)])


@torch.no_grad()
def choose_mode(
    post: LaplacePosterior, batch: Any, thetas: torch.Tensor, cache: PrefixCache | None = None,
    k: int | None = None, recorded: Any = None,
) -> tuple[Mode, str]:
    """``(mode, why)``: the first of ``expand`` (needs ``k``) / ``repeat`` whose logits for ``thetas`` (a few draws)
    on ``batch`` (a few examples; ``recorded`` its prefix) match :func:`looped_logits`, else ``loop``."""
    ref = looped_logits(post, batch, thetas, cache, k, recorded)
    scale = float(ref.abs().max().clamp_min(1.0))
    why = []
    for mode in (["expand"] if k is not None and cache is not None else []) + ["repeat"]:
        try:
            out = batched_logits(post, batch, thetas, mode, cache, k, recorded)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - any failure means: not this mode
            why.append(f"{mode}: {type(e).__name__}")
            continue
        if out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * scale):
            return mode, mode  # type: ignore[return-value]
        why.append(f"{mode}: logits differ")
    return "loop", "one draw per forward (" + "; ".join(why) + ")"


def bytes_per_draw(sizes: Sequence[int], n_examples: int, b: int) -> float | None:
    """Activation bytes of one draw on a batch of ``b`` examples from the largest module output ``max(sizes)``
    (bytes) seen on ``n_examples`` examples: ``ACTIVATION_FACTOR · max(sizes) / n_examples · b``."""
    if not sizes or n_examples <= 0:
        return None
    return ACTIVATION_FACTOR * max(sizes) / n_examples * b
