"""The Laplace posterior object: evidence, prior tuning, predictive, sampling, persistence.

Model: likelihood ``p(D|θ)`` (softmax classification, or Gaussian regression with noise ``σ``), prior
``N(0, P0⁻¹)`` with ``P0 = diag(δ)`` (one ``δ`` per group = owning module, or one scalar). At the MAP ``θ*``::

    P = H / T · (σ_fit² / σ²)_{regression} + P0        (H = N · average per-example curvature, from ``fit``)

Laplace log marginal likelihood (tempered as in laplace-torch: the data term is divided by ``T``)::

    log Z ≈ log p(D|θ*)/T + log N(θ*; 0, P0⁻¹) + (d/2) log 2π − ½ log det P
          = log p(D|θ*)/T − ½ θ*ᵀ P0 θ* + ½ log det P0 − ½ log det P

(the 2π terms cancel with the prior normaliser). Classification ``log p(D|θ*) = −Σ_n CE(f_n, y_n)``;
regression ``log p(D|θ*)/T = −½ Σ (y − f)² / (σ² T) − N D log(σ √(2π))`` (laplace-torch's convention).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from bayespeft.batch import to_device
from bayespeft.evalmode import eval_mode
from bayespeft.laplace.base import Structure, check_delta
from bayespeft.laplace.capture import ForwardFn, Likelihood
from bayespeft.laplace.predictive import as_batch, chunks, mc_link_probs, probit_probs
from bayespeft.laplace.subset import live_parameters
from bayespeft.progress import progress as progress_bar


class LaplacePosterior:
    """Gaussian posterior ``N(θ*, P⁻¹)`` over a parameter subset; parameters outside it stay at the MAP."""

    def __init__(
        self,
        model: nn.Module,
        structure: Structure,
        *,
        likelihood: Likelihood,
        curvature: str,
        subset_desc: str,
        prior_precision: float | Sequence[float] | torch.Tensor,
        temperature: float,
        sigma_noise: float,
        n_data: int,
        n_outputs: int,
        loss: float,
        mean: torch.Tensor,
        forward_fn: ForwardFn,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if sigma_noise <= 0:
            raise ValueError(f"sigma_noise must be > 0, got {sigma_noise}")
        self.model, self.structure = model, structure
        self.likelihood, self.curvature, self.subset_desc = likelihood, curvature, subset_desc
        self.temperature, self.sigma_fit, self.sigma_noise = float(temperature), float(sigma_noise), float(sigma_noise)
        self.n_data, self.n_outputs, self.loss = int(n_data), int(n_outputs), float(loss)
        self.mean = mean.detach().to(structure.dtype)
        self.forward_fn = forward_fn
        self.prior_precision = prior_precision  # validated by the setter

    # ---- prior ------------------------------------------------------------------------------------------------
    @property
    def prior_precision(self) -> torch.Tensor:
        """``(1,)`` scalar or ``(G,)`` one per group (see :attr:`groups`)."""
        return self._prior

    @prior_precision.setter
    def prior_precision(self, value: float | Sequence[float] | torch.Tensor) -> None:
        self._prior = self._as_delta(value).detach()

    @property
    def groups(self) -> list[str]:
        """Prior-precision groups: owning-module names of the subset's parameters."""
        return self.structure.groups

    def _as_delta(self, value: Any) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=self.structure.dtype, device=self.structure.device).reshape(-1)
        check_delta(t, len(self.groups), self.groups)
        if not bool((t > 0).all()):
            raise ValueError(f"prior precision must be > 0, got {t.tolist()[:8]}")
        return t

    def _delta(self, prior: Any | None) -> torch.Tensor:
        d = self._prior if prior is None else (prior if torch.is_tensor(prior) and prior.requires_grad else self._as_delta(prior))
        return check_delta(d.reshape(-1), len(self.groups), self.groups)

    def _scale(self, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        s = torch.as_tensor(1.0 / self.temperature, dtype=self.structure.dtype, device=self.structure.device)
        if self.likelihood == "regression":
            sig = torch.as_tensor(self.sigma_noise if sigma is None else sigma, dtype=s.dtype, device=s.device)
            s = s * self.sigma_fit**2 / sig.square()
        return s

    # ---- evidence ---------------------------------------------------------------------------------------------
    def log_likelihood(self, sigma_noise: torch.Tensor | float | None = None) -> torch.Tensor:
        """Tempered data log-likelihood at the MAP (see module docstring)."""
        dt, dev = self.structure.dtype, self.structure.device
        if self.likelihood == "classification":
            return torch.as_tensor(-self.loss / self.temperature, dtype=dt, device=dev)
        sig = torch.as_tensor(self.sigma_noise if sigma_noise is None else sigma_noise, dtype=dt, device=dev)
        return -self.loss / (sig.square() * self.temperature) - self.n_data * self.n_outputs * torch.log(sig * math.sqrt(2 * math.pi))

    def log_marginal_likelihood(self, prior_precision: Any | None = None, sigma_noise: Any | None = None) -> torch.Tensor:
        """``log p(D|θ*)/T − ½ θ*ᵀ P0 θ* + ½ log det P0 − ½ log det P`` (differentiable torch scalar).

        A scalar prior precision (one value for all groups) uses :meth:`Structure.logdet_precision_shared` (for
        ``full``: ``O(d)`` from cached eigenvalues); one value per group uses :meth:`Structure.logdet_precision`.
        """
        raw = self._prior if prior_precision is None else prior_precision
        shared = torch.as_tensor(raw).numel() == 1
        delta = self._delta(prior_precision)
        dvec = self.structure.delta_vector(delta)
        scatter = (self.mean.square() * dvec).sum()
        logdet_prior = (self.structure.group_sizes * delta.log()).sum()
        scale = self._scale(sigma_noise)
        if shared:
            logdet_post = self.structure.logdet_precision_shared(delta[:1], scale)
        else:
            logdet_post = self.structure.logdet_precision(delta, scale)
        return self.log_likelihood(sigma_noise) - 0.5 * (scatter - logdet_prior + logdet_post)

    def optimize_prior(
        self,
        method: Literal["marglik", "gridsearch"] = "marglik",
        *,
        layerwise: bool = False,
        n_steps: int = 100,
        lr: float = 0.1,
        optimizer: Literal["adam", "lbfgs"] = "adam",
        tune_sigma: bool = False,
        val_loader: Iterable[Any] | None = None,
        grid: Sequence[float] | None = None,
        progress: bool | None = None,
        pred_method: Literal["glm", "mc"] | None = None,
        **predict_kwargs: Any,
    ) -> torch.Tensor:
        """Tune the prior precision in place and return it.

        ``"marglik"``: maximise :meth:`log_marginal_likelihood` over ``log δ`` (scalar, or per group when
        ``layerwise``; regression can also tune ``log σ`` with ``tune_sigma``) with Adam (``n_steps``, ``lr``) or
        LBFGS. ``"gridsearch"``: the scalar ``δ`` in ``grid`` (default ``logspace(-4, 4, 21)``) with the lowest
        validation NLL under :meth:`predict_loader` (``predict_kwargs`` -- ``link``, ``n_samples``, ``chunk_size``,
        ``generator`` -- are passed on, ``pred_method`` as :meth:`predict`'s ``method``: score δ under the predictive
        you will use, as laplace-torch's ``pred_type``); needs ``val_loader``.
        """
        if method == "gridsearch":
            if pred_method is not None:
                predict_kwargs = {**predict_kwargs, "method": pred_method}
            return self._gridsearch(val_loader, grid, progress, predict_kwargs)
        if method != "marglik":
            raise ValueError(f"method must be 'marglik' or 'gridsearch', got {method!r}")
        if pred_method is not None or predict_kwargs:
            unused = (["pred_method"] if pred_method is not None else []) + sorted(predict_kwargs)
            raise ValueError(f"optimize_prior('marglik') takes no predictive options ({', '.join(unused)}); they "
                             "apply to method='gridsearch'")
        init = self._prior.expand(len(self.groups)) if layerwise else self._prior[:1] if self._prior.numel() == 1 else self._prior
        log_delta = init.clone().log().requires_grad_(True)
        params = [log_delta]
        log_sigma = None
        if tune_sigma:
            if self.likelihood != "regression":
                raise ValueError("tune_sigma applies to likelihood='regression' only")
            log_sigma = torch.tensor(math.log(self.sigma_noise), dtype=log_delta.dtype, device=log_delta.device, requires_grad=True)
            params.append(log_sigma)

        def objective() -> torch.Tensor:
            sig = None if log_sigma is None else log_sigma.exp()
            return -self.log_marginal_likelihood(log_delta.exp(), sig)

        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=lr, max_iter=n_steps, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            opt.step(closure)
        elif optimizer == "adam":
            opt = torch.optim.Adam(params, lr=lr)
            for _ in progress_bar(range(n_steps), desc="prior (marglik)", enabled=progress):
                opt.zero_grad()
                objective().backward()
                opt.step()
        else:
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
        self.prior_precision = log_delta.detach().exp()
        if log_sigma is not None:
            self.sigma_noise = float(log_sigma.detach().exp())
        return self.prior_precision

    def _gridsearch(self, val_loader, grid, progress, predict_kwargs) -> torch.Tensor:
        if val_loader is None:
            raise ValueError("optimize_prior(method='gridsearch') needs val_loader")
        grid = list(grid) if grid is not None else torch.logspace(-4, 4, 21).tolist()
        best, best_nll = None, math.inf
        for delta in progress_bar(grid, desc="prior (grid)", enabled=progress):
            self.prior_precision = delta
            out, labels = self.predict_loader(val_loader, progress=False, **predict_kwargs)
            if self.likelihood == "classification":
                nll = -torch.log(out.gather(1, labels.long().view(-1, 1)).clamp_min(1e-12)).mean()
            else:
                mean, var = out
                y = labels.to(mean.dtype).reshape(mean.shape)
                nll = 0.5 * ((y - mean).square() / var + var.log() + math.log(2 * math.pi)).sum(-1).mean()
            if float(nll) < best_nll:
                best, best_nll = delta, float(nll)
        self.prior_precision = best
        return self.prior_precision

    # ---- predictive -------------------------------------------------------------------------------------------
    def predict(
        self,
        batch_or_inputs: Any,
        method: Literal["glm", "mc"] = "glm",
        link: Literal["probit", "mc"] = "probit",
        n_samples: int = 100,
        chunk_size: int | None = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Posterior predictive for one batch (or bare inputs).

        ``method="glm"``: linearised model, logits ``N(f(x), J Σ Jᵀ)`` (``(C, C)`` per example, computed in chunks of
        ``chunk_size`` examples), mapped to probabilities by ``link`` (probit or ``n_samples`` logit draws).
        ``method="mc"``: ``n_samples`` parameter draws ``θ_s ~ N(θ*, Σ)``, forward each, average softmax.
        Returns probabilities ``(B, C)``; regression returns ``(mean (B, D), variance (B, D))`` with the noise
        ``σ²`` included in the variance. ``generator``: a CPU one (default: torch's global) gives the same draws on
        every device; one on the model's accelerator draws there (:func:`bayespeft.seed.randn`).
        """
        if method not in ("glm", "mc"):
            raise ValueError(f"method must be 'glm' or 'mc', got {method!r}")
        if link not in ("probit", "mc"):
            raise ValueError(f"link must be 'probit' or 'mc', got {link!r}")
        batch = to_device(as_batch(batch_or_inputs), self.structure.device)
        with eval_mode(self.model):
            if method == "glm":
                return self._predict_glm(batch, link, n_samples, chunk_size, generator)
            return self._predict_mc(batch, n_samples, generator)

    def _predict_glm(self, batch, link, n_samples, chunk_size, generator):
        delta, scale = self._prior.expand(len(self.groups)), self._scale()
        outs = []
        with torch.enable_grad():
            for part in chunks(batch, chunk_size):
                f, cov = self.structure.glm_cov(self.model, part, self.forward_fn, delta, scale)
                f = f.to(cov.dtype)
                if self.likelihood == "regression":
                    outs.append((f, cov.diagonal(dim1=-2, dim2=-1) + self.sigma_noise**2))
                elif link == "probit":
                    outs.append(probit_probs(f, cov))
                else:
                    outs.append(mc_link_probs(f, cov, n_samples, generator))
        if self.likelihood == "regression":
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        return torch.cat(outs)

    @torch.no_grad()
    def _predict_mc(self, batch, n_samples, generator):
        thetas = self.sample(n_samples, generator=generator)
        params = self._live_params()
        acc, acc2 = None, None
        try:
            for s in range(n_samples):
                self._write(params, thetas[s])
                f = self.forward_fn(self.model, batch)[0].to(thetas.dtype)
                out = torch.softmax(f, -1) if self.likelihood == "classification" else f
                acc = out if acc is None else acc + out
                if self.likelihood == "regression":
                    acc2 = out.square() if acc2 is None else acc2 + out.square()
        finally:
            self._write(params, self.mean)
        mean = acc / n_samples
        if self.likelihood == "classification":
            return mean
        return mean, (acc2 / n_samples - mean.square()).clamp_min(0) + self.sigma_noise**2

    def predict_loader(self, loader: Iterable[Any], progress: bool | None = None, **kwargs: Any):
        """:meth:`predict` over a loader; returns ``(probs (N, C), labels (N,))`` (regression: ``((mean, var), labels)``)."""
        outs, labels = [], []
        for batch in progress_bar(loader, desc="Laplace predict", enabled=progress):
            batch = as_batch(batch)
            outs.append(self.predict(batch, **kwargs))
            labels.append((batch["labels"] if isinstance(batch, dict) else batch[1]).detach().cpu())
        if not outs:
            raise ValueError("predict_loader got an empty loader")
        y = torch.cat(labels)
        if self.likelihood == "regression":
            return (torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu()), y
        return torch.cat(outs).cpu(), y

    # ---- samples ----------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, as_dict: bool = False) -> torch.Tensor | list[dict[str, torch.Tensor]]:
        """``n`` parameter vectors ``(n, d)`` from ``N(θ*, P⁻¹)`` (θ order = :attr:`param_names`), or ``n`` dicts.
        ``generator`` on the CPU or the posterior's device, as in :meth:`predict`."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        dev = self.structure.sample(n, self._prior.expand(len(self.groups)), self._scale(), generator)
        thetas = self.mean + dev
        if not as_dict:
            return thetas
        return [self.structure.unflatten(t) for t in thetas]

    @property
    def param_names(self) -> list[str]:
        return self.structure.names

    def _live_params(self) -> list[torch.Tensor]:
        return [p for _, p in live_parameters(self.model, self.structure.names)]

    def _write(self, params: list[torch.Tensor], theta: torch.Tensor) -> None:
        for p, v in zip(params, self.structure.unflatten(theta).values()):
            p.copy_(v.to(p.dtype))

    def covariance(self) -> torch.Tensor:
        """Dense ``Σ = P⁻¹`` ``(d, d)`` (small subsets / tests)."""
        P = self.structure.precision_matrix(self._prior.expand(len(self.groups)), self._scale())
        return torch.linalg.inv(P)

    def precision(self) -> torch.Tensor:
        """Dense ``P`` ``(d, d)`` (small subsets / tests)."""
        return self.structure.precision_matrix(self._prior.expand(len(self.groups)), self._scale())

    def save(self, path: Any) -> None:
        """Write ``path/laplace.safetensors`` (tensors) and ``path/laplace.json`` (metadata); no pickle."""
        from bayespeft.laplace.persist import save_posterior

        save_posterior(self, path)

    def __repr__(self) -> str:
        return (
            f"LaplacePosterior(structure={self.structure.name!r}, d={self.structure.d}, subset={self.subset_desc}, "
            f"likelihood={self.likelihood!r}, curvature={self.curvature!r}, n_data={self.n_data}, "
            f"prior_precision={self._prior.tolist()[:4]}, temperature={self.temperature})"
        )

    def restrict(self, names: Sequence[str], prior_precision: Any | None = None) -> LaplacePosterior:
        """The posterior over the parameters ``names`` only (all others at the MAP), without another data pass.

        Its precision is the ``names`` block of this one's (:meth:`Structure.restrict`), which for a GGN/Fisher is
        what ``fit(subset=names)`` on the same data collects; the MAP log-likelihood, ``N`` and ``T`` are shared.
        ``prior_precision``: default this posterior's (scalar kept; per group: the restricted groups' values).
        """
        sub = self.structure.restrict(names)
        if prior_precision is None:
            prior_precision = self._prior if self._prior.numel() == 1 else self.structure.sub_delta(sub, self._prior)
        post = LaplacePosterior(
            self.model, sub, likelihood=self.likelihood, curvature=self.curvature,
            subset_desc=f"restriction of {self.subset_desc} to {len(sub.names)} parameters",
            prior_precision=prior_precision, temperature=self.temperature, sigma_noise=self.sigma_fit,
            n_data=self.n_data, n_outputs=self.n_outputs, loss=self.loss, mean=self.mean[self.structure.index_of(names)],
            forward_fn=self.forward_fn,
        )
        post.sigma_noise = self.sigma_noise
        return post


def warn_if_moved(post: LaplacePosterior) -> None:
    """Warn when the model's subset parameters differ from the stored MAP (predictions linearise at the model)."""
    current = torch.cat([p.detach().reshape(-1).to(post.mean.dtype) for p in post._live_params()])
    if not torch.allclose(current, post.mean, rtol=1e-5, atol=1e-6):
        warnings.warn("the model's parameters differ from the posterior mean saved with it", RuntimeWarning, stacklevel=3)
