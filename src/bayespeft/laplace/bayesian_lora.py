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

Arguments that exist only for compatibility are marked so in each docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from bayespeft.laplace.factors import small_linalg
from bayespeft.laplace.kfac import collect_kfac
from bayespeft.laplace.predictive import mc_link_probs, probit_probs

__all__ = [
    "KFAC_t",
    "calculate_kronecker_factors",
    "cholesky_decompose_small_factors",
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


def _psd_cholesky(k: Tensor) -> Tensor:
    """Lower Cholesky factor of a PSD matrix (float64), adding jitter ``10^j · 1e-10 · mean(diag)`` only on failure."""
    k = k.to(torch.float64)
    k = 0.5 * (k + k.mT)
    scale = float(k.diagonal().mean().clamp_min(1e-300))
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    jitter = 0.0
    for step in range(12):
        with small_linalg():
            chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
        if int(info) == 0:
            return chol
        jitter = scale * 1e-10 * 10.0**step
    raise ValueError(f"could not Cholesky-decompose a {tuple(k.shape)} Kronecker factor (not PSD even with jitter)")


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
                f = _psd_cholesky(f)
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





def _eig_roots(r: Tensor) -> tuple[Tensor, Tensor]:
    """For a root ``R`` (d, k): eigenvalues ``λ`` (k,) of ``RᵀR`` and ``Q = R U`` (d, k), so ``R Rᵀ = Q Qᵀ``, ``QᵀQ = diag(λ)``."""
    with small_linalg():
        lam, u = torch.linalg.eigh(r.mT @ r)
    return lam.clamp_min(0.0), r @ u


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
    With roots ``A = R_A R_Aᵀ``, ``S = R_S R_Sᵀ`` the determinant is ``Σ_ij log(1 + s2 λ_i μ_j)`` over the
    eigenvalues of ``R_AᵀR_A`` and ``R_SᵀR_S`` (cost ``O(k³)``, never a Kronecker product).

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
    s2 = _s2_tensor(s2)
    s2d = s2.to(torch.float64)
    logdet = torch.zeros((), dtype=torch.float64)
    sq_norm = torch.zeros((), dtype=torch.float64)
    for name, (a, s) in factors.items():
        ra, rs = _check_root(name, "A", a), _check_root(name, "S", s)
        lam, _ = _eig_roots(ra)
        mu, _ = _eig_roots(rs)
        logdet = logdet + torch.log1p(s2d * mu[:, None] * lam[None, :]).sum()
        for p in _layer_params(model, name, ra.shape[0]):
            sq_norm = sq_norm + p.detach().to(torch.float64).pow(2).sum()
    ll = torch.as_tensor(LL, dtype=torch.float64) if not torch.is_tensor(LL) else LL.to(torch.float64)
    return ll.reshape(()) - 0.5 * sq_norm / s2d - 0.5 * logdet


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
    t = mask.shape[-1]
    last = t - 1 - torch.flip(mask.to(torch.long), dims=[-1]).argmax(-1)  # last position with mask == 1
    return logits[torch.arange(logits.shape[0], device=logits.device), last.to(logits.device)]


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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

    with _eval_mode(model), torch.enable_grad():
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

    Per layer, ``Σ_l = (I/s2 + W Wᵀ)^{-1}`` with ``W = R_S ⊗ R_A`` (roots of ``S``, ``A``), by Woodbury

    .. math::  J Σ_l J^\top = s_2 J J^\top - s_2^2 (J W)(I + s_2 W^\top W)^{-1}(J W)^\top,

    evaluated in the eigenbases of ``R_SᵀR_S`` and ``R_AᵀR_A``, where ``(I + s2 WᵀW)`` is diagonal
    (``1 + s2 μ_j λ_i``): no ``(r·k)²`` matrix is formed or inverted. Layers without factors contribute nothing
    (their parameters stay at the MAP).

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
        ra, rs = _check_root(name, "A", a), _check_root(name, "S", s)
        g = _layer_jacobian(jacobian, name, ra.shape[0], rs.shape[0]).to(device=ra.device, dtype=torch.float64)
        if g.shape[1] != n_logits:
            raise ValueError(f"n_logits={n_logits} but the Jacobian of {name!r} has {g.shape[1]} logits")
        lam, qa = _eig_roots(ra)
        mu, qs = _eig_roots(rs)
        g = g.to(qa.device)
        proj = torch.einsum("oj,bcoi,ik->bcjk", qs, g, qa)  # (B, C, k_S, k_A)
        term1 = s2 * torch.einsum("bcoi,beoi->bce", g, g)
        weight = s2.pow(2) / (1.0 + s2 * mu[:, None] * lam[None, :])
        term2 = torch.einsum("bcjk,jk,bejk->bce", proj, weight, proj)
        layer = term1 - term2
        var = layer if var is None else var + layer
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
