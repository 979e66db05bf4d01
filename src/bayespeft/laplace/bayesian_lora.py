r"""Drop-in replacement for the ``bayesian-lora`` package (0.0.6): switch by changing one import.

``from bayesian_lora import calculate_kronecker_factors, ...`` becomes
``from bayespeft.laplace.bayesian_lora import calculate_kronecker_factors, ...``. The functions keep the names,
arguments, argument order, return types and shapes of bayesian-lora (Yang et al., 2024, "Bayesian low-rank
adaptation for large language models", ICLR, https://openreview.net/forum?id=FJiUyzOF1m), so downstream code keeps
working, but compute the standard Laplace quantities. The Kronecker factors come from the shared collector
:func:`bayespeft.laplace.kfac.collect_kfac`.

Model. For every targeted ``nn.Linear`` layer ``l`` with weight ``W_l`` (out x in; with a bias, ``[W_l | b_l]``,
bias column last), the likelihood curvature is approximated by K-FAC,

.. math::  F_l \approx S_l \otimes A_l \quad (\text{row-major } \mathrm{vec}(W_l)), \qquad
           A_l = \tfrac1R \textstyle\sum_{n,t} a_{nt} a_{nt}^\top, \quad
           S_l = \textstyle\sum_{n,t} g_{nt} g_{nt}^\top,

where ``a_nt`` is the layer input of example ``n`` at position ``t`` (with a trailing 1 for the bias), ``g_nt`` the
gradient of ``-log p(ŷ_n | x_n)`` (``ŷ_n`` sampled from the model: Fisher) w.r.t. the layer output at position
``t``, and ``R = Σ_n T_n`` the number of positions (``R = N`` examples for ``(B, d)`` inputs). This is the
"KFAC-expand" rule (Eschenhagen et al., 2023) and laplace-torch's ``kron`` scaling: ``S ⊗ A`` approximates the
curvature of the *summed* negative log-likelihood, and with the isotropic prior ``p(θ) = N(0, s2·I)`` the
posterior precision of layer ``l`` is ``P_l = I/s2 + S_l ⊗ A_l`` (layers independent).

Factor format (``KFAC_t``): ``{module_name: (A, S)}``. ``calculate_kronecker_factors`` returns dense Gram matrices
``(d, d)``, or, for a side ``d >= lr_threshold`` when ``n_kfac`` is given, a low-rank root ``(d, k)``, ``k < d``,
with ``R Rᵀ ≈`` the factor. ``cholesky_decompose_small_factors`` replaces every dense factor by its lower Cholesky
factor; ``model_evidence`` and ``variance`` take factors in that "root" form (as in bayesian-lora), i.e.
every factor is ``R`` with ``R Rᵀ`` = the factor: square lower-triangular, or tall low-rank.

Differences from bayesian-lora 0.0.6 (each checked in its source and in ``tests/laplace/test_bayesian_lora*.py``):

1. Tokens. bayesian-lora keeps only ``x[:, -1]`` of every layer input and output gradient (the last token). With
   sequence inputs ``(B, T, d)`` this ignores all other tokens; with plain ``(B, d)`` inputs it even selects the last
   *feature* and crashes (``IndexError``). Here every token of every example contributes (``(B, d)`` inputs work).
2. Dropout. bayesian-lora calls ``model.train()`` (and leaves the model in train mode), so dropout (incl. LoRA
   dropout) randomises the factors. Here the model is in eval mode while collecting and its mode is restored after.
3. Scaling. bayesian-lora uses a batch-*mean* loss and divides dense factors by the number of batches but not the
   low-rank ones, so ``A ⊗ S`` is the per-example average Fisher for dense factors and ``N/B`` times larger
   (B = batch size) for low-rank ones: the Laplace posterior depends on the batch size and on ``lr_threshold``.
   Here ``S ⊗ A`` is the curvature of the summed log-likelihood for every factor (formula above), whatever the
   batch size, and partial final batches are handled exactly (no ``drop_last`` needed).
4. Evidence. bayesian-lora's ``model_evidence`` returns ``LL + Σ‖θ_i‖/s2 + ½ Σ log det M - ½ r·d·log s2`` (norms not
   squared and added, log-determinant added, one layer's width). Here it is the standard Laplace evidence
   ``log p(D|θ*) - ½ θᵀP0θ + ½ log det P0 - ½ log det P`` = ``LL - ‖θ‖²/(2 s2) - ½ Σ_l log det(I + s2 S_l ⊗ A_l)``.
5. Predictive. The package ships no predictive; its example (``examples/example_usage.py``) averages sampled
   *logits* (older versions; the mean is just ``f_mu``) or passes averaged probabilities to ``cross_entropy`` as if
   they were logits (later versions). :func:`linearized_predictive` averages *probabilities* (MC) or uses the
   probit approximation.
6. Which layers. Only ``nn.Linear`` modules whose weight is trainable are targeted (bayesian-lora also hooks frozen
   layers such as PEFT's ``base_layer`` under the default keyword ``[""]``, after which ``variance`` fails); as in
   bayesian-lora a layer's bias is folded into ``A`` unless ``exclude_bias``. No match raises ``ValueError``.
   ``lr_threshold`` keeps bayesian-lora's meaning (low-rank when ``d >= lr_threshold``).
7. Robustness. ``variance`` matches factors to Jacobian entries by exact name (``f"{name}.weight"``), not by
   substring, uses the factor shapes instead of ``n_lora``/``n_kfac``, works for any factor shapes (dense/dense,
   low-rank on either side, biases), and needs neither ``inputs.input_ids`` nor a LoRA naming scheme.
   ``jacobian_mean``'s default output callback works (bayesian-lora's references an undefined ``cfg``) and takes the
   last *non-padding* position from ``attention_mask`` (right or left padding).
8. Side effects. bayesian-lora's hooks stay on the model when a forward fails, and its full backward hooks leave a
   flag on every hooked module after removal, so later ``register_backward_hook`` calls (e.g. laplace-torch's ASDL
   backend) raise ``RuntimeError``. The collector here uses forward hooks and ``autograd.grad`` only, removed in all
   cases.

Arguments that exist only for compatibility are marked so in each docstring. ``stable_cholesky`` is bayesian-lora's
own jittered Cholesky (same signature, same jitter schedule), and ``model_evidence``/``variance`` use the KFAC
structure's block algebra (:class:`bayespeft.laplace.kfac.KronEig`), so there is one KFAC posterior in the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from bayespeft.batch import last_token_index
from bayespeft.evalmode import eval_mode, unfused_attention
from bayespeft.laplace.factors import eig_factor, small_linalg
from bayespeft.laplace.kfac import KronEig, collect_kfac
from bayespeft.laplace.linalg import jittered_cholesky, relative_jitters
from bayespeft.laplace.predictive import mc_link_probs, probit_probs

__all__ = [
    "KFAC_t",
    "calculate_kronecker_factors",
    "cholesky_decompose_small_factors",
    "stable_cholesky",
    "model_evidence",
    "jacobian_mean",
    "variance",
    "linearized_predictive",
]

KFAC_t = dict[str, tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------------------------------------------
# factor collection
# --------------------------------------------------------------------------------------------------------------


def _target_modules(model: nn.Module, keywords: list[str]) -> dict[str, nn.Linear]:
    if isinstance(keywords, str) or not all(isinstance(k, str) for k in keywords):
        raise TypeError(f"target_module_keywords must be a list of strings (e.g. ['lora']), got {keywords!r}")
    found = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and mod.weight.requires_grad and any(kw in name for kw in keywords)
    }
    if not found:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(
            f"no trainable nn.Linear module name contains any of {keywords!r}; "
            f"nn.Linear modules include {linear} (only modules with requires_grad weights are targeted)"
        )
    return found


def _convert(factor: Tensor, lowrank: bool, scale: float) -> Tensor:
    """Collected sum (dense Gram, or root ``L`` with ``L Lᵀ`` ≈ Gram) -> our factor times ``scale``.

    A "low-rank" root with at least as many columns as rows is exact and stored dense, so that in our format a
    square factor is always a (symmetric) Gram matrix and a root is always tall (``k < d``).
    """
    if lowrank:
        if factor.shape[1] < factor.shape[0]:
            return factor * math.sqrt(scale)
        factor = factor @ factor.mT
    return factor * scale


def calculate_kronecker_factors(
    model: nn.Module,
    forward_call: Callable[[nn.Module, Any], Tensor],
    loader: Any,
    n_kfac: int | None = None,
    lr_threshold: int = 512,
    target_module_keywords: list[str] = [""],  # noqa: B006 - same default as bayesian-lora; never mutated
    exclude_bias: bool = False,
    use_tqdm: bool = False,
    *,
    curvature: Literal["fisher", "ggn"] = "fisher",
    generator: torch.Generator | None = None,
) -> KFAC_t:
    r"""K-FAC factors ``{name: (A, S)}`` of every targeted ``nn.Linear`` layer: ``S ⊗ A ≈`` curvature of the summed NLL.

    ``A = (1/R) Σ_{n,t} ã ãᵀ`` (mean over the ``R = Σ_n T_n`` positions, bias coordinate last), ``S = Σ_{n,t} g gᵀ``
    (sum), the "KFAC-expand" convention of :func:`bayespeft.laplace.kfac.collect_kfac` and laplace-torch; for ``T = 1``,
    ``S ⊗ A = N · E[g gᵀ] ⊗ E[ã ãᵀ]``. Collected by :func:`bayespeft.laplace.kfac.collect_kfac`.

    Args:
        model: any ``nn.Module`` (e.g. a PEFT model). It is put in eval mode (dropout off) while collecting, and
            its previous mode is restored (bayesian-lora leaves it in train mode).
        forward_call: ``forward_call(model, batch) -> logits (B, C)`` of a categorical likelihood (logits, not
            probabilities: bayesian-lora's example passes softmax outputs, which get a second softmax).
        loader: iterable of batches (a partial last batch is handled exactly).
        n_kfac: rank of low-rank factors; ``None`` keeps every factor dense.
        lr_threshold: a factor of side ``d >= lr_threshold`` is stored as a low-rank root ``(d, n_kfac)`` when
            ``n_kfac`` is given and ``n_kfac < d`` (incremental SVD over batches, as in bayesian-lora).
        target_module_keywords: an ``nn.Linear`` with a trainable weight is targeted if its qualified name contains
            any keyword (``[""]``: all of them; ``["lora"]``: the LoRA ``A``/``B`` matrices of a PEFT model).
        exclude_bias: leave biases out (``A`` is then ``in x in``); otherwise a layer's bias is folded into ``A``.
        use_tqdm: show a progress bar.
        curvature: keyword-only extension. ``"fisher"`` (bayesian-lora's choice): one label per example sampled
            from the model's predictive, ``g`` from ``∇ -log p(ŷ|x)``; ``"ggn"``: the exact GGN (= exact Fisher for
            softmax cross-entropy; ``C`` backward passes per batch), no sampling.
        generator: keyword-only extension; random generator of the sampled labels (default: torch's global one).

    Returns:
        ``{module_name: (A, S)}``: ``A`` is ``(in[+1], in[+1])`` dense or ``(in[+1], k)`` low-rank root, ``S`` is
        ``(out, out)`` or ``(out, k)``, ``k <= n_kfac``, ``k < d``.
    """
    if n_kfac is not None and (not isinstance(n_kfac, int) or n_kfac < 1):
        raise ValueError(f"n_kfac must be a positive integer or None, got {n_kfac!r}")
    if not isinstance(lr_threshold, int) or lr_threshold < 1:
        raise ValueError(f"lr_threshold must be a positive integer, got {lr_threshold!r}")
    modules = _target_modules(model, target_module_keywords)

    def forward_fn(m: nn.Module, batch: Any) -> tuple[Tensor, None]:
        return forward_call(m, batch), None

    collected = collect_kfac(
        model, loader, modules, forward_fn=forward_fn, curvature=curvature, n_kfac=n_kfac,
        # bayesian-lora makes a factor low-rank when d >= lr_threshold; the collector when d > lr_threshold
        lr_threshold=lr_threshold - 1, exclude_bias=exclude_bias, train_mode=False, progress=use_tqdm,
        generator=generator,
    )
    factors: KFAC_t = {}
    for name, kf in collected.items():
        a = _convert(kf.A, kf.A_lowrank, 1.0 / kf.n_rows)
        s = _convert(kf.G, kf.G_lowrank, 1.0)
        factors[name] = (a, s)
    return factors


# --------------------------------------------------------------------------------------------------------------
# factor roots
# --------------------------------------------------------------------------------------------------------------


def _is_lower_triangular(x: Tensor) -> bool:
    return bool(torch.equal(x, torch.tril(x)))


def _psd_cholesky(k: Tensor, name: str) -> Tensor:
    """Lower Cholesky factor of a PSD factor (float64), adding jitter ``10^j · 1e-10 · mean(diag)`` only on failure."""
    k = k.to(torch.float64)
    k = 0.5 * (k + k.mT)
    with small_linalg(k.shape[-1]):
        return jittered_cholesky(k, relative_jitters(k, first=1e-10, factor=10.0, tries=11),
                                 what=f"Kronecker factor of {name!r}", fix="the factor is not positive semi-definite")


def stable_cholesky(K: Tensor, mult_eps: float = 1e-8, abs_eps: float = 1e-8, max_tries: int = 1000) -> Tensor:
    r"""bayesian-lora's ``stable_cholesky`` (same signature and result): lower ``L`` of ``K`` ``(..., d, d)`` + jitter.

    Try ``i = 0, 1, …, max_tries-1`` and return the Cholesky factor of the first shifted matrix that factorises,

    .. math::  L L^\top = K + \mathrm{diag}(m_i \operatorname{diag}(K) + a_i), \qquad
               m_i = \text{mult\_eps} \cdot 1.1^i, \quad a_i = \text{abs\_eps} \cdot 1.1^i,

    i.e. bayesian-lora's ``K * (1 + m_i I) + a_i I``: jitter is added even when ``K`` is positive definite. A batch
    of matrices shares ``i``. Raises ``ValueError`` when no try succeeds (as bayesian-lora).
    """
    diag = K.diagonal(dim1=-2, dim2=-1)
    schedule = (mult_eps * 1.1**i * diag + abs_eps * 1.1**i for i in range(max_tries))
    return jittered_cholesky(K, schedule, what="stable_cholesky input")


def cholesky_decompose_small_factors(factors: KFAC_t, lr_threshold: int, device: str | torch.device, dtype: torch.dtype) -> KFAC_t:
    """Replace every dense (square, symmetric) factor by its lower Cholesky factor ``L`` (``L Lᵀ`` = factor).

    Like bayesian-lora, updates ``factors`` in place and returns it, moved to ``device``/``dtype``; low-rank
    roots ``(d, k)`` are only moved. Differences: the decision is made by shape, not by ``size(0) < lr_threshold``,
    so dense factors at or above the threshold (``n_kfac=None``) are decomposed too (bayesian-lora leaves them
    dense and ``variance`` then misreads them); jitter, if needed at all, is relative to the factor's scale.
    A factor that is already lower-triangular and not symmetric is kept (calling twice is harmless, except on
    diagonal factors, which are indistinguishable from dense ones).

    Args:
        factors: ``{name: (A, S)}`` from :func:`calculate_kronecker_factors`.
        lr_threshold: compatibility only (unused; see above).
        device: device of the returned factors.
        dtype: dtype of the returned factors.
    """
    del lr_threshold  # compatibility only
    for name, pair in list(factors.items()):
        roots = []
        for f in pair:
            if f.ndim != 2:
                raise ValueError(f"Kronecker factor of {name!r} must be a matrix, got shape {tuple(f.shape)}")
            if f.shape[0] == f.shape[1] and torch.allclose(f, f.mT, rtol=1e-5, atol=0.0):
                f = _psd_cholesky(f, name)
            elif f.shape[0] == f.shape[1] and not _is_lower_triangular(f):
                raise ValueError(f"square Kronecker factor of {name!r} is neither symmetric (dense) nor lower-triangular (Cholesky)")
            roots.append(f.to(device=device, dtype=dtype))
        factors[name] = (roots[0], roots[1])
    return factors


def _check_root(name: str, which: str, r: Tensor) -> Tensor:
    if r.ndim != 2:
        raise ValueError(f"factor {which} of {name!r} must be a matrix, got shape {tuple(r.shape)}")
    if r.shape[0] == r.shape[1] and not _is_lower_triangular(r):
        raise ValueError(
            f"factor {which} of {name!r} is a square non-triangular matrix, i.e. a dense Gram matrix; "
            "call cholesky_decompose_small_factors(factors, ...) first (model_evidence and variance take roots R, R Rᵀ = factor)"
        )
    return r.to(torch.float64)





def _kron_block(name: str, a: Tensor, s: Tensor) -> KronEig:
    """The block's posterior eigenbasis from roots ``R_A``, ``R_S`` (``A = R_A R_Aᵀ``): ``S ⊗ A`` with ``n_rows = 1``."""
    ra, rs = _check_root(name, "A", a), _check_root(name, "S", s)
    QA, lA = eig_factor(ra, lowrank=True)  # left singular vectors of the root: the eigenbasis of R Rᵀ
    QG, lG = eig_factor(rs, lowrank=True)
    return KronEig(QG, lG, QA, lA, n_rows=1.0, name=f"posterior precision of {name!r}")


def _s2_tensor(s2: Tensor | float) -> Tensor:
    s2 = torch.as_tensor(s2, dtype=torch.float64) if not torch.is_tensor(s2) else s2
    if s2.numel() != 1 or bool((s2.detach() <= 0).any()):
        raise ValueError(f"s2 (prior variance) must be one positive number, got {s2}")
    return s2.reshape(())


# --------------------------------------------------------------------------------------------------------------
# evidence
# --------------------------------------------------------------------------------------------------------------


def _layer_params(model: nn.Module, name: str, d_in: int) -> list[Tensor]:
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"factors name module {name!r}, which the model does not have") from None
    weight = mod.weight
    has_bias = d_in == weight.shape[1] + 1
    if not has_bias and d_in != weight.shape[1]:
        raise ValueError(f"factor A of {name!r} has side {d_in}, but the layer has {weight.shape[1]} inputs (expected {weight.shape[1]} or {weight.shape[1] + 1} with bias)")
    if has_bias and getattr(mod, "bias", None) is None:
        raise ValueError(f"factor A of {name!r} includes a bias coordinate but the layer has no bias")
    return [weight, mod.bias] if has_bias else [weight]


def model_evidence(model: nn.Module, LL: Tensor | float, factors: KFAC_t, n_lora: int, n_kfac: int, s2: Tensor | float) -> Tensor:
    r"""Laplace log marginal likelihood (model evidence) under the prior ``N(0, s2·I)`` on the factored layers.

    .. math::  \log p(D) \approx \log p(D|θ^*) - \tfrac{1}{2 s_2}\|θ^*\|^2
               - \tfrac12 \sum_l \log\det(I + s_2\, S_l \otimes A_l)

    which is ``log p(D|θ*) - ½ θᵀP0θ + ½ log det P0 - ½ log det P`` with ``P0 = I/s2``, ``P = P0 + ⊕_l S_l ⊗ A_l``.
    ``log det P`` is the KFAC structure's own block log-determinant (:class:`bayespeft.laplace.kfac.KronEig`, with
    ``n_rows = 1``, ``δ = 1/s2``) from the singular values of the roots ``R_A``, ``R_S`` (``A = R_A R_Aᵀ``): the
    eigenvalues ``λ_i μ_j + 1/s2`` in the roots' span, ``1/s2`` elsewhere; never a Kronecker product.

    Args:
        model: the model the factors were computed on; ``θ*`` are the current weights (and biases, when ``A`` has
            a bias coordinate) of the modules named in ``factors``.
        LL: ``log p(D|θ*)``, the *summed* log-likelihood of the data the factors were computed on (a scalar).
        factors: roots from :func:`cholesky_decompose_small_factors`.
        n_lora, n_kfac: compatibility only (shapes are read from the factors).
        s2: prior variance (positive scalar; a tensor with ``requires_grad`` gives gradients for tuning it).

    Returns:
        scalar tensor (float64), to be *maximised* over ``s2``.
    """
    del n_lora, n_kfac  # compatibility only
    s2 = _s2_tensor(s2).to(torch.float64)
    delta, one = 1.0 / s2, torch.ones((), dtype=torch.float64)
    logdet_post = torch.zeros((), dtype=torch.float64)  # log det P
    n_params, sq_norm = 0, torch.zeros((), dtype=torch.float64)
    for name, (a, s) in factors.items():
        block = _kron_block(name, a, s)
        logdet_post = logdet_post + block.logdet(delta.to(block.QA.device), one.to(block.QA.device)).cpu()
        n_params += block.numel
        for p in _layer_params(model, name, block.QA.shape[0]):
            sq_norm = sq_norm + p.detach().to(torch.float64).pow(2).sum().cpu()
    ll = torch.as_tensor(LL, dtype=torch.float64) if not torch.is_tensor(LL) else LL.to(torch.float64)
    logdet_prior = n_params * torch.log(delta)  # log det P0, P0 = I/s2
    return ll.reshape(()) - 0.5 * sq_norm / s2 + 0.5 * logdet_prior - 0.5 * logdet_post


# --------------------------------------------------------------------------------------------------------------
# linearised predictive
# --------------------------------------------------------------------------------------------------------------


def _last_position_logits(outputs: Any, batch_inputs: Mapping[str, Tensor], is_s2s: bool) -> Tensor:
    logits = outputs.logits if hasattr(outputs, "logits") else outputs
    if is_s2s or logits.ndim == 2:
        return logits
    mask = batch_inputs.get("attention_mask") if isinstance(batch_inputs, Mapping) else None
    if mask is None:
        return logits[:, -1]
    last = last_token_index(mask)
    return logits[torch.arange(logits.shape[0], device=logits.device), last.to(logits.device)]


def jacobian_mean(
    model: nn.Module,
    batch_inputs: Mapping[str, Tensor],
    target_ids: Tensor | None = None,
    is_s2s: bool = False,
    output_callback: Callable[[Any], Tensor] | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Jacobians of the output logits w.r.t. every trainable parameter, and the logits (the linearised mean).

    Args:
        model: called as ``model(**batch_inputs)``; evaluated in eval mode (its mode is restored after).
        batch_inputs: the model inputs, e.g. a tokenizer's ``BatchEncoding``.
        target_ids: class token ids to select from the logits (e.g. the ids of " A", " B", " C", " D").
        is_s2s: the model's logits are already ``(B, vocab)`` (no sequence axis).
        output_callback: ``outputs -> logits (B, C)``; overrides ``target_ids``/``is_s2s``. Default: ``outputs.logits``
            (or the output tensor) at the last non-padding position (from ``attention_mask``; last position without
            one), then ``[:, target_ids]``.

    Returns:
        ``(jacobian, f_mu)``: ``jacobian[name]`` has shape ``(B, C, *param.shape)`` for every parameter with
        ``requires_grad`` (no LoRA naming needed), ``f_mu`` is ``(B, C)`` (detached).
    """
    if output_callback is None:

        def output_callback(outputs: Any) -> Tensor:
            logits = _last_position_logits(outputs, batch_inputs, is_s2s)
            return logits if target_ids is None else logits[:, torch.as_tensor(target_ids).reshape(-1).to(logits.device)]

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameter (requires_grad=True) to take Jacobians of")

    def f(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = output_callback(functional_call(model, p, args=(), kwargs=dict(batch_inputs)))
        if out.ndim != 2:
            raise ValueError(f"output_callback must return logits of shape (B, C), got {tuple(out.shape)}")
        return out, out

    with eval_mode(model), unfused_attention(model), torch.enable_grad():  # jacrev vmaps over the output rows
        jac, f_mu = jacrev(f, has_aux=True)(params)
    return jac, f_mu.detach()


def _layer_jacobian(jacobian: Mapping[str, Tensor], name: str, d_in: int, d_out: int) -> Tensor:
    wkey, bkey = f"{name}.weight", f"{name}.bias"
    if wkey not in jacobian:
        near = [k for k in jacobian if name in k][:4]
        raise ValueError(f"no Jacobian entry {wkey!r} for the Kronecker factors of {name!r} (entries containing it: {near})")
    g = jacobian[wkey]
    if g.ndim != 4 or g.shape[-2] != d_out:
        raise ValueError(f"Jacobian {wkey!r} has shape {tuple(g.shape)}; expected (B, C, {d_out}, in) to match factor S")
    if d_in == g.shape[-1] + 1:
        if bkey not in jacobian:
            raise ValueError(
                f"factor A of {name!r} includes a bias but the Jacobian has no {bkey!r} (make the bias trainable, or "
                "compute the factors with exclude_bias=True)"
            )
        g = torch.cat([g, jacobian[bkey].unsqueeze(-1)], dim=-1)
    elif d_in != g.shape[-1]:
        raise ValueError(f"factor A of {name!r} has side {d_in}, but Jacobian {wkey!r} has {g.shape[-1]} inputs")
    return g


def variance(
    inputs: Any,
    jacobian: Mapping[str, Tensor],
    factors: KFAC_t,
    s2: Tensor | float,
    n_logits: int,
    n_lora: int,
    n_kfac: int,
    device: str | torch.device,
) -> Tensor:
    r"""Covariance ``J Σ Jᵀ`` of the linearised logits, ``(B, n_logits, n_logits)``.

    Per layer, ``Σ_l = (I/s2 + S_l ⊗ A_l)^{-1}`` with ``S_l = R_S R_Sᵀ``, ``A_l = R_A R_Aᵀ``; ``J Σ_l Jᵀ`` is the KFAC
    structure's own block covariance (:meth:`bayespeft.laplace.kfac.KronEig.cov_from_jacobian`, ``n_rows = 1``,
    ``δ = 1/s2``), evaluated in the eigenbases of the roots (equivalently, by Woodbury,
    ``s2 J Jᵀ - s2² (J W)(I + s2 WᵀW)^{-1}(J W)ᵀ`` with ``W = R_S ⊗ R_A``, bayesian-lora's formula): no ``(r·k)²``
    matrix is formed or inverted. Layers without factors contribute nothing (their parameters stay at the MAP).

    Args:
        inputs: compatibility only (unused; bayesian-lora read the batch size from ``inputs.input_ids``).
        jacobian: from :func:`jacobian_mean`; entry ``f"{name}.weight"`` (``(B, C, out, in)``) and, when ``A`` has a
            bias coordinate, ``f"{name}.bias"`` for every factor ``name``.
        factors: roots from :func:`cholesky_decompose_small_factors`.
        s2: prior variance.
        n_logits: number of logits ``C``; checked against the Jacobian.
        n_lora, n_kfac: compatibility only (shapes are read from the factors).
        device: device of the result.

    Returns:
        float32 tensor ``(B, n_logits, n_logits)`` on ``device`` (computed in float64).
    """
    del inputs, n_lora, n_kfac  # compatibility only
    s2 = _s2_tensor(s2).to(torch.float64)
    var: Tensor | None = None
    for name, (a, s) in factors.items():
        block = _kron_block(name, a, s)
        g = _layer_jacobian(jacobian, name, block.QA.shape[0], block.QG.shape[0])
        if g.shape[1] != n_logits:
            raise ValueError(f"n_logits={n_logits} but the Jacobian of {name!r} has {g.shape[1]} logits")
        dev = block.QA.device
        layer = block.cov_from_jacobian(g.to(device=dev, dtype=torch.float64), (1.0 / s2).to(dev), torch.ones((), dtype=torch.float64, device=dev))
        var = layer if var is None else var + layer.to(var.device)
    if var is None:
        raise ValueError("factors is empty")
    return var.to(device=device, dtype=torch.float32)


def linearized_predictive(
    f_mu: Tensor,
    f_var: Tensor,
    method: Literal["mc", "probit"] = "mc",
    n_samples: int = 10_000,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Predictive class probabilities ``E[softmax(f)]``, ``f ~ N(f_mu, f_var)``, shape ``(B, C)``.

    ``"mc"``: average of ``softmax(f_mu + L ε)`` over ``n_samples`` draws (``L Lᵀ = f_var``), i.e. probabilities,
    not logits, are averaged (averaging logits would return ``softmax(f_mu)``, the MAP). ``"probit"``: the
    extended probit approximation ``softmax(f_mu / sqrt(1 + π/8 · diag f_var))``.
    """
    if f_mu.ndim != 2 or f_var.shape != (*f_mu.shape, f_mu.shape[-1]):
        raise ValueError(f"f_mu must be (B, C) and f_var (B, C, C); got {tuple(f_mu.shape)} and {tuple(f_var.shape)}")
    if method == "probit":
        return probit_probs(f_mu, f_var)
    if method != "mc":
        raise ValueError(f"method must be 'mc' or 'probit', got {method!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    mean, cov = f_mu.to(torch.float64), f_var.to(torch.float64)
    total = torch.zeros_like(mean)
    for start in range(0, n_samples, 1024):  # chunks keep memory at O(1024 · B · C)
        m = min(1024, n_samples - start)
        total += m * mc_link_probs(mean, 0.5 * (cov + cov.mT), m, generator)
    return (total / n_samples).to(f_mu.dtype)
