"""Per-example output-space quantities shared by every curvature structure and by the GLM predictive.

Notation (one batch): ``f`` logits ``(B, C)``; for an ``nn.Linear`` applied at ``T`` positions per example
(a sequence, or ``T = 1``), input activations ``a`` ``(B, T, d_in)`` and output ``h = W a + b`` ``(B, T, d_out)``.

Curvature through cotangents. Both curvatures are written as ``Σ_k J^T v_k v_k^T J`` with ``K`` cotangents
``v_k`` ``(B, C)`` per example (one backward pass each):

* GGN, classification: ``Λ = diag(p) − p pᵀ`` with ``p = softmax(f)``; ``Λ = R Rᵀ`` with
  ``R = diag(√p) − p √pᵀ`` (exact since ``Σ p = 1``), so ``v_k = R[:, k]``, ``K = C`` (exact sum over classes).
* GGN, regression (Gaussian, noise ``σ``): ``Λ = I/σ²``, ``v_k = e_k/σ``, ``K = D``.
* Fisher with sampled labels: ``v = ∇_f(−log p(ŷ|f))`` with ``ŷ ~ Cat(softmax(f))`` (``v = p − onehot(ŷ)``) or
  ``ŷ ~ N(f, σ²)`` (``v = −ε/σ``, ``ε ~ N(0, 1)``); one sample per example, ``K = 1``; draws use ``generator``.

For a Linear layer the per-example, per-cotangent weight gradient is ``Σ_t g_t a_tᵀ`` with
``g = ∂⟨f, v_k⟩/∂h`` ``(B, T, d_out)``; :class:`LinearTaps` captures ``a`` and ``g`` with hooks, never
materialising parameter gradients. Other parameter types use ``torch.func`` (``vmap(jacrev)`` per example).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from bayespeft.batch import forward_batch
from bayespeft.evalmode import unfused_attention
from bayespeft.seed import multinomial1, randn

Likelihood = Literal["classification", "regression"]
Curvature = Literal["ggn", "fisher"]
ForwardFn = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]


def regression_targets(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Labels reshaped to the ``(B, D)`` shape of the predictions (``(B,)`` targets allowed when ``D = 1``)."""
    return labels.to(logits.dtype).reshape(logits.shape)


def nll_terms(logits: torch.Tensor, labels: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """Summed data term at the MAP: classification ``Σ −log softmax(f)_y``; regression ``½ Σ (y − f)²`` (σ-free)."""
    logits = logits.detach()
    if likelihood == "classification":
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return torch.nn.functional.cross_entropy(logits, labels.long(), reduction="sum")
    return 0.5 * (regression_targets(logits, labels) - logits).square().sum()


def cotangents(
    logits: torch.Tensor,
    labels: torch.Tensor,
    likelihood: Likelihood,
    curvature: Curvature | Literal["jacobian"],
    sigma_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cotangents ``V`` ``(K, B, C)`` with ``Σ_k v_k v_kᵀ`` = the per-example curvature in logit space.

    ``curvature="jacobian"`` gives ``V = I`` (``K = C``): the rows of the per-example Jacobian, for the GLM predictive.
    """
    f = logits.detach()
    B, C = f.shape
    if curvature == "jacobian":
        return torch.eye(C, dtype=f.dtype, device=f.device)[:, None, :].expand(C, B, C)
    if likelihood == "classification":
        p = torch.softmax(f.double(), dim=-1)
        if curvature == "ggn":
            sp = p.sqrt()
            R = torch.diag_embed(sp) - p[:, :, None] * sp[:, None, :]  # (B, C, K) with R Rᵀ = diag p − p pᵀ
            return R.permute(2, 0, 1).to(f.dtype).contiguous()
        y = multinomial1(p, generator)
        return (p - torch.nn.functional.one_hot(y, C).to(p.dtype)).to(f.dtype)[None]
    if curvature == "ggn":
        return (torch.eye(C, dtype=f.dtype, device=f.device) / sigma_noise)[:, None, :].expand(C, B, C).contiguous()
    eps = randn(*f.shape, generator=generator, dtype=torch.float64, device=f.device).to(f.dtype)
    return (-eps / sigma_noise)[None]


class LinearTaps:
    """Context manager recording inputs and outputs of ``nn.Linear`` modules during a forward pass.

    Inside the context run the forward; then :meth:`activations` gives ``a`` ``(B, T, d_in)`` per module and
    :meth:`output_grads` gives ``g = ∂⟨f, v_k⟩/∂h`` ``(K, B, T, d_out)`` for cotangents ``V`` ``(K, B, C)``
    (the ``K`` backward passes batched by :func:`batched_grads`; parameter gradients are not computed). A module
    called several times in one forward contributes all its calls, concatenated along ``T``. A module called once returns views of the
    recorded tensors (no copies); modules fed the very same input tensor (e.g. the q/k/v projections of one
    attention block) share it, which :meth:`input_key` exposes so that callers can reuse per-input work.
    """

    def __init__(self, modules: Mapping[str, nn.Linear]) -> None:
        self.modules = dict(modules)
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._raw_inputs: dict[str, list[tuple[torch.Tensor, int]]] = {}  # (object passed in, its version)
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            self._raw_inputs[name].append((x, x._version))
            self._inputs[name].append(x.detach().reshape(x.shape[0], -1, x.shape[-1]))
            self._outputs[name].append(out)

        return hook

    def __enter__(self) -> LinearTaps:
        self.reset()
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        for name in self.modules:
            self._inputs[name], self._raw_inputs[name], self._outputs[name] = [], [], []

    def activations(self, name: str) -> torch.Tensor:
        xs = self._inputs[name]
        if not xs:
            raise RuntimeError(f"module {name!r} was not called in the forward pass")
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)

    def input_key(self, name: str) -> tuple[tuple[int, int], ...]:
        """Identity of the module's input tensors in this forward: equal keys mean identical :meth:`activations`.

        Keys are ``(id, version)`` of each call's input object (an in-place change between calls breaks equality);
        the objects stay referenced by the taps, so their ids cannot be reused while the taps hold them.
        """
        return tuple((id(x), v) for x, v in self._raw_inputs[name])

    def output_grads(self, logits: torch.Tensor, V: torch.Tensor) -> dict[str, torch.Tensor]:
        names = [n for n in self.modules if self._outputs[n]]
        outs = [o for n in names for o in self._outputs[n]]
        if any(not o.requires_grad for o in outs):
            raise RuntimeError("a tapped Linear output does not require grad; is torch.no_grad() active?")
        K = V.shape[0]
        stacked = batched_grads(logits, outs, V)  # one (K, *o.shape) per tapped output
        result: dict[str, torch.Tensor] = {}
        i = 0
        for n in names:
            m = len(self._outputs[n])
            chunks = [stacked[i + j].reshape(K, o.shape[0], -1, o.shape[-1]) for j, o in enumerate(self._outputs[n])]
            result[n] = chunks[0] if m == 1 else torch.cat(chunks, dim=2)
            i += m
        return result


#: elements of the stacked output gradients one batched backward may hold (``2**25`` float32 = 128 MiB); more
#: cotangents are split into several batched passes
BATCHED_GRAD_ELEMENTS = 2**25


def batched_grads(logits: torch.Tensor, outs: Sequence[torch.Tensor], V: torch.Tensor) -> list[torch.Tensor]:
    """``[∂⟨f, v_k⟩/∂o stacked over k]`` ``(K, *o.shape)`` for each ``o`` in ``outs``, cotangents ``V`` ``(K, B, C)``.

    ``K`` backward passes as few vmapped ones (``autograd.grad(..., is_grads_batched=True)``: one graph traversal
    for a chunk of cotangents, the same arithmetic as one pass per ``k``), chunked so that a chunk's stacked output
    gradients stay under :data:`BATCHED_GRAD_ELEMENTS`. A graph with an operation that has no batching rule falls
    back to one ``autograd.grad`` per ``k``. Outputs the logits do not depend on get zeros.
    """
    K = V.shape[0]
    step = max(1, min(K, BATCHED_GRAD_ELEMENTS // max(1, sum(o.numel() for o in outs))))
    parts: list[list[torch.Tensor]] = []
    for start in range(0, K, step):
        Vc = V[start : start + step]
        gs = None
        if len(Vc) > 1:
            try:  # the graph is kept: a batched pass that fails half-way leaves it usable for the fallback
                with warnings.catch_warnings():  # vmap's own per-op fallback is correct, only slower: no user warning
                    warnings.filterwarnings("ignore", message=".*performance drop.*")
                    gs = torch.autograd.grad(logits, outs, Vc, retain_graph=True, allow_unused=True,
                                             is_grads_batched=True)
            except RuntimeError:  # some operation in the graph has no batching rule
                gs = None
        if gs is None:
            last = start + step >= K
            keep = [not (last and k == len(Vc) - 1) for k in range(len(Vc))]
            per_k = [torch.autograd.grad(logits, outs, v, retain_graph=r, allow_unused=True) for v, r in zip(Vc, keep)]
            gs = [None if g[0] is None else torch.stack(g) for g in zip(*per_k)]
        parts.append([torch.zeros((len(Vc), *o.shape), dtype=o.dtype, device=o.device) if g is None else g.detach()
                      for g, o in zip(gs, outs)])
    return [p[0] if len(parts) == 1 else torch.cat(p) for p in zip(*parts)]


def linear_owners(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Map parameter name -> (module name, "weight"|"bias") for parameters owned by ``nn.Linear`` modules."""
    modules = dict(model.named_modules())
    out = {}
    for n in names:
        mname, _, leaf = n.rpartition(".")
        m = modules.get(mname)
        if isinstance(m, nn.Linear) and leaf in ("weight", "bias"):
            out[n] = (mname, leaf)
    return out


class _Wrapped(nn.Module):
    def __init__(self, inner: nn.Module, forward_fn: ForwardFn) -> None:
        super().__init__()
        self.inner = inner
        self.forward_fn = forward_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.forward_fn(self.inner, batch)[0]


def _one_example(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in batch.items()}
    return type(batch)(v.unsqueeze(0) for v in batch)


def func_jacobians(
    model: nn.Module, batch: Any, params: Sequence[tuple[str, torch.Tensor]], forward_fn: ForwardFn
) -> dict[str, torch.Tensor]:
    """Per-example Jacobians ``∂f_n/∂θ`` as ``{name: (B, C, *shape)}`` via ``torch.func.vmap(jacrev)``."""
    from torch.func import functional_call, jacrev, vmap

    wrapped = _Wrapped(model, forward_fn)
    values = {f"inner.{n}": p.detach() for n, p in params}

    def f(pvals: dict[str, torch.Tensor], example: Any) -> torch.Tensor:
        return functional_call(wrapped, pvals, (_one_example(example),), strict=False)[0]

    if isinstance(batch, Mapping):
        batch = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    with unfused_attention(model):  # no vmap rule for fused CPU attention: a slow per-example loop otherwise
        J = vmap(jacrev(f), in_dims=(None, 0))(values, batch)
    return {n: J[f"inner.{n}"] for n, _ in params}


def per_example_grads(
    model: nn.Module,
    batch: Any,
    params: Sequence[tuple[str, torch.Tensor]],
    cotangent_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    forward_fn: ForwardFn = forward_batch,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``(logits (B, C), labels, {name: (K, B, *shape)})``: per-example gradients of ``⟨f_n, v_{k,n}⟩``.

    ``cotangent_fn(logits, labels) -> V (K, B, C)``. Parameters of ``nn.Linear`` modules go through
    :class:`LinearTaps` (one backward per ``k``); any other parameter through :func:`func_jacobians`.
    """
    names = [n for n, _ in params]
    owners = linear_owners(model, names)
    all_modules = dict(model.named_modules())
    lin_modules = {m: all_modules[m] for m, _ in owners.values()}
    other = [(n, p) for n, p in params if n not in owners]
    with LinearTaps(lin_modules) as taps:
        logits, labels = forward_fn(model, batch)
        V = cotangents_checked(cotangent_fn(logits, labels), logits)
        grads: dict[str, torch.Tensor] = {}
        if lin_modules:
            g = taps.output_grads(logits, V)
            for n, (m, leaf) in owners.items():
                if leaf == "weight":
                    grads[n] = torch.einsum("kbto,bti->kboi", g[m], taps.activations(m).to(g[m].dtype))
                else:
                    grads[n] = g[m].sum(2)
    if other:
        J = func_jacobians(model, batch, other, forward_fn)
        for n, Jn in J.items():
            grads[n] = torch.einsum("kbc,bc...->kb...", V.to(Jn.dtype), Jn)
    # curvature is a constant of the posterior: never let it carry the network's autograd graph
    return logits.detach(), labels, {n: grads[n].detach() for n in names}


def cotangents_checked(V: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if V.ndim != 3 or V.shape[1:] != logits.shape:
        raise ValueError(f"cotangents must have shape (K, B, C) = (K, {tuple(logits.shape)}), got {tuple(V.shape)}")
    return V


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(logits) or logits.ndim != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"the model must return logits/predictions of shape (B, C) or (B, D); got {shape}")
    return logits

