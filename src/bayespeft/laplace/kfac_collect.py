"""Kronecker-factored curvature (KFAC) collection for ``nn.Linear`` layers — the public collector.

For a Linear layer ``h_t = W a_t + b`` used at positions ``t = 1..T`` of example ``n`` (``T = 1`` for an MLP), with
``ã = [a; 1]`` when the bias is folded in (default) and ``g_{k,n,t} = ∂⟨f_n, v_{k,n}⟩/∂h_t`` for the curvature
cotangents ``v_k`` (see :mod:`bayespeft.laplace.capture`; ``K = C`` for the exact GGN, ``K = 1`` for the sampled
Fisher), the collected factors are SUMS over the dataset::

    A = Σ_{n,t} ã_{n,t} ã_{n,t}ᵀ            (d_in(+1), d_in(+1))
    G = Σ_{k,n,t} g_{k,n,t} g_{k,n,t}ᵀ      (d_out, d_out)
    n_rows = Σ_n T_n                         (number of positions),   n_examples = N

and the curvature of the row-major vectorisation of ``[W, b]`` (the dataset sum ``N · E[per-example curvature]``)
is approximated by the "KFAC-expand" rule (Eschenhagen et al. 2023, arXiv:2311.00636)::

    H ≈ G ⊗ A / n_rows        ( = N · E[g gᵀ] ⊗ E[a aᵀ] for T = 1 )

This is the convention of laplace-torch 0.3 (``AsdlGGN``/``CurvlinopsGGN`` ``kron``: ``A`` averaged, ``G``
summed, i.e. our ``A / n_rows`` and ``G``). It is exact for a single example with ``T = 1`` and for a linear layer
whose ``T`` positions feed disjoint outputs of a Gaussian likelihood. With ``exclude_bias=True`` the bias is not
folded into ``A``; its separate block is ``G ⊗ [n_rows] / n_rows = G`` (laplace-torch's split).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bayespeft.batch import forward_batch
from bayespeft.evalmode import model_mode
from bayespeft.laplace.capture import (
    Curvature,
    ForwardFn,
    Likelihood,
    LinearTaps,
    check_logits,
    cotangents,
)
from bayespeft.laplace.factors import lowrank_update
from bayespeft.progress import progress as progress_bar


@dataclass
class KronFactors:
    """Kronecker factors of one ``nn.Linear`` (sums over the dataset; see the module docstring).

    ``A``: ``(d_A, d_A)`` dense, or ``(d_A, k)`` low-rank root with ``A ≈ A Aᵀ`` when ``A_lowrank``;
    ``d_A = d_in + 1`` when ``bias_in_A`` (last coordinate is the constant 1). ``G`` likewise ``(d_out, ·)``.
    Curvature of row-major ``vec([W, b])``: ``H ≈ dense(G) ⊗ dense(A) / n_rows``.
    """

    A: torch.Tensor
    G: torch.Tensor
    n_examples: int
    n_rows: int
    bias_in_A: bool
    A_lowrank: bool = False
    G_lowrank: bool = False

    def dense_A(self) -> torch.Tensor:
        return self.A @ self.A.T if self.A_lowrank else self.A

    def dense_G(self) -> torch.Tensor:
        return self.G @ self.G.T if self.G_lowrank else self.G


class _Factor:
    """Running sum ``Σ Xᵀ X`` kept dense, or as a rank-``k`` root when ``d > lr_threshold`` and ``k`` is set."""

    def __init__(self, d: int, n_kfac: int | None, lr_threshold: int) -> None:
        self.d = d
        self.lowrank = n_kfac is not None and d > lr_threshold
        self.k = n_kfac
        self.value: torch.Tensor | None = None

    def add(self, X: torch.Tensor) -> None:
        """Add ``Xᵀ X`` for ``X`` ``(rows, d)``."""
        if self.lowrank:
            self.value = lowrank_update(self.value, X, self.k)  # type: ignore[arg-type]
        else:
            self.add_blocks(X.transpose(0, 1) @ X, None, 0, X)

    def add_blocks(self, XtX: torch.Tensor | None, colsum: torch.Tensor | None, rows: int, like: torch.Tensor) -> None:
        """Dense factors: add ``[X, 1]ᵀ [X, 1] = [[XᵀX, Xᵀ1], [1ᵀX, rows]]`` from its blocks, without forming ``[X, 1]``.

        ``XtX`` ``(d_x, d_x)`` or None (no weight columns); ``colsum`` ``(d_x,)`` = ``Xᵀ 1`` when the factor carries the
        trailing constant-1 coordinate (then ``d = d_x + 1``), else None. The sum takes ``like``'s dtype and device.
        """
        if self.value is None:
            self.value = torch.zeros(self.d, self.d, dtype=like.dtype, device=like.device)
        d_x = self.d - (colsum is not None or XtX is None)
        if XtX is not None:
            self.value[:d_x, :d_x] += XtX
        if colsum is not None:
            self.value[:d_x, d_x] += colsum
            self.value[d_x, :d_x] += colsum
        if XtX is None or colsum is not None:
            self.value[d_x, d_x] += rows


class KfacCollector:
    """Accumulate KFAC factors batch by batch (used by :func:`collect_kfac` and the ``kfac`` structures).

    ``bias_in_A[name]``: fold the bias into ``A``. ``weight_in[name]=False`` means only the bias is modelled, so
    ``A`` is the ``1 × 1`` factor ``[n_rows]``.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Linear],
        *,
        bias_in_A: Mapping[str, bool],
        weight_in: Mapping[str, bool] | None = None,
        n_kfac: int | None = None,
        lr_threshold: int = 512,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.modules = dict(modules)
        self.bias_in_A = dict(bias_in_A)
        self.weight_in = dict(weight_in) if weight_in is not None else {n: True for n in modules}
        self.dtype = dtype
        self._A: dict[str, _Factor] = {}
        self._G: dict[str, _Factor] = {}
        for n, m in self.modules.items():
            d_a = (m.in_features if self.weight_in[n] else 0) + int(self.bias_in_A[n])
            self._A[n] = _Factor(d_a, n_kfac, lr_threshold)
            self._G[n] = _Factor(m.out_features, n_kfac, lr_threshold)
        self.n_examples = 0
        self.n_rows: dict[str, int] = {n: 0 for n in modules}

    def _dtype(self, t: torch.Tensor) -> torch.dtype:
        return self.dtype or torch.promote_types(t.dtype, torch.float32)

    def augmented(self, name: str, a: torch.Tensor) -> torch.Tensor:
        """``(B, T, d_in) -> (B, T, d_A)`` with the weight columns (if modelled) and a trailing 1 (if bias in A)."""
        parts = [a] if self.weight_in[name] else []
        if self.bias_in_A[name]:
            parts.append(torch.ones_like(a[..., :1]))
        return torch.cat(parts, dim=-1) if parts else a[..., :0]

    def step(
        self,
        model: nn.Module,
        batch: Any,
        forward_fn: ForwardFn,
        cotangent_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward + ``K`` output-gradient passes; returns ``(logits, labels)`` (detached)."""
        with LinearTaps(self.modules) as taps:
            logits, labels = forward_fn(model, batch)
            check_logits(logits)
            V = cotangent_fn(logits, labels)
            grads = taps.output_grads(logits, V)
            grams: dict[Any, tuple[torch.Tensor, torch.Tensor | None]] = {}  # per input tensor: (XᵀX, Xᵀ1)
            for n in self.modules:
                if n not in grads:
                    raise RuntimeError(f"Linear module {n!r} was not used by the forward pass")
                g = grads[n]
                dt = self._dtype(g)
                a = taps.activations(n)
                rows = a.shape[0] * a.shape[1]
                if self._A[n].lowrank:
                    X = self.augmented(n, a.to(dt))
                    self._A[n].add(X.reshape(-1, X.shape[-1]))
                elif self.weight_in[n]:
                    # modules fed the same tensor (q/k/v of one attention block) share the Gram matrix
                    key = (taps.input_key(n), dt)
                    XtX, colsum = grams.get(key, (None, None))
                    X = a.reshape(-1, a.shape[-1]).to(dt)
                    if XtX is None:
                        XtX = X.transpose(0, 1) @ X
                    if self.bias_in_A[n] and colsum is None:
                        colsum = X.sum(0)
                    grams[key] = (XtX, colsum)
                    self._A[n].add_blocks(XtX, colsum if self.bias_in_A[n] else None, rows, XtX)
                else:
                    self._A[n].add_blocks(None, None, rows, g.new_empty(0, dtype=dt))
                self._G[n].add(g.to(dt).reshape(-1, g.shape[-1]))
                self.n_rows[n] += rows
        self.n_examples += int(logits.shape[0])
        return logits.detach(), labels

    def factors(self) -> dict[str, KronFactors]:
        out = {}
        for n in self.modules:
            A, G = self._A[n], self._G[n]
            if A.value is None or G.value is None:
                raise ValueError("no data was collected: the loader is empty")
            out[n] = KronFactors(
                A=A.value, G=G.value, n_examples=self.n_examples, n_rows=self.n_rows[n],
                bias_in_A=self.bias_in_A[n], A_lowrank=A.lowrank, G_lowrank=G.lowrank,
            )
        return out


def collect_kfac(
    model: nn.Module,
    loader: Iterable[Any],
    modules: dict[str, nn.Linear],
    *,
    forward_fn: ForwardFn | None = None,
    curvature: Curvature = "fisher",
    n_kfac: int | None = None,
    lr_threshold: int = 512,
    exclude_bias: bool = False,
    train_mode: bool = False,
    progress: bool | None = False,
    generator: torch.Generator | None = None,
    likelihood: Likelihood = "classification",
    sigma_noise: float = 1.0,
) -> dict[str, KronFactors]:
    """Collect KFAC factors (dataset SUMS, see module docstring) for the given ``nn.Linear`` modules.

    Args:
        model: called through ``forward_fn``; set to eval mode (dropout off) unless ``train_mode``; its mode is
            restored afterwards.
        loader: iterable of batches (``bayespeft.batch`` convention, or whatever ``forward_fn`` accepts).
        modules: ``{qualified name: nn.Linear}``; other layer types raise ``TypeError``.
        forward_fn: ``(model, batch) -> (logits (B, C), labels)``; default :func:`bayespeft.batch.forward_batch`.
        curvature: ``"fisher"`` (one sampled label per example, drawn with ``generator``; one backward per batch)
            or ``"ggn"`` (exact, ``C`` output-gradient passes per batch).
        n_kfac, lr_threshold: factors with dimension ``> lr_threshold`` are kept as rank-``n_kfac`` roots
            (incremental SVD) when ``n_kfac`` is set.
        exclude_bias: do not fold the bias into ``A`` (``A`` is ``d_in × d_in``; the bias block is ``G``).
        likelihood, sigma_noise: ``"classification"`` (softmax) or ``"regression"`` (Gaussian, noise ``σ``).

    Returns:
        ``{name: KronFactors}``; ``KronFactors.n_examples`` is ``N`` and ``n_rows`` the number of positions.
    """
    if not modules:
        raise ValueError("collect_kfac needs at least one module")
    for name, m in modules.items():
        if not isinstance(m, nn.Linear):
            raise TypeError(f"KFAC supports nn.Linear layers only; {name!r} is {type(m).__name__}")
    if curvature not in ("fisher", "ggn"):
        raise ValueError(f"curvature must be 'fisher' or 'ggn', got {curvature!r}")
    forward_fn = forward_fn or forward_batch
    bias_in = {n: (m.bias is not None and not exclude_bias) for n, m in modules.items()}
    first = next(iter(modules.values()))
    collector = KfacCollector(
        modules, bias_in_A=bias_in, n_kfac=n_kfac, lr_threshold=lr_threshold,
        dtype=torch.promote_types(first.weight.dtype, torch.float32),
    )

    def cot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cotangents(logits, labels, likelihood, curvature, sigma_noise, generator)

    with model_mode(model, train_mode), torch.enable_grad():
        for batch in progress_bar(loader, desc="KFAC", enabled=progress):
            collector.step(model, batch, forward_fn, cot)
    if collector.n_examples == 0:
        raise ValueError("collect_kfac got an empty loader (no batches)")
    return collector.factors()
