"""MCMC convergence diagnostics on arrays of draws: R-hat / ESS (arviz-stats), summaries, verdict, plots.

Pure functions of arrays: nothing here runs a network (the per-sample probe scalars of a network, e.g. ``loglik``,
``param_norm``, ``proj_k``, ``true_class_prob``, are computed by :mod:`bayespeft.sgmcmc.probe`).

Arrays are laid out ``(chains, draws)`` (or ``(chains, draws, *shape)``, each trailing element its own quantity).
R-hat is the rank-normalised split R-hat (max of bulk and folded/tail; Vehtari et al. 2021, arXiv:1903.08008) and
ESS the bulk and tail (min of the 5% and 95% quantile ESS) effective sample sizes, both computed by
``arviz_stats.base.array_stats`` (``rhat(method="rank")``, ``ess(method="bulk"|"tail", prob=(0.05, 0.95))``).
**Single chain:** arviz's rank R-hat needs >= 2 chains, so the chain is cut into its two halves, which arviz then
splits again (4 half-length pieces): the between-chain check becomes a within-chain stationarity check.
The verdict reports pass/fail exactly as measured; a NaN (too few draws) counts as a failure, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

TAIL_PROB = (0.05, 0.95)


def _stats():
    from arviz_stats.base import array_stats

    return array_stats


def _as_chains(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"expected an array (chains, draws[, ...]), got shape {x.shape}")
    return x


def rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat of ``x`` (chains, draws[, ...]) -> shape ``x.shape[2:]`` (float for 2-D input)."""
    x = _as_chains(x)
    if x.shape[0] == 1:
        half = x.shape[1] // 2
        x = np.stack([x[0, :half], x[0, half:2 * half]])
    return _stats().rhat(x, chain_axis=0, draw_axis=1, method="rank")


def ess(x: np.ndarray, method: Literal["bulk", "tail"] = "bulk") -> np.ndarray:
    """Total bulk or tail ESS (over all chains) of ``x`` (chains, draws[, ...]) -> shape ``x.shape[2:]``."""
    x = _as_chains(x)
    if method not in ("bulk", "tail"):
        raise ValueError(f"method must be 'bulk' or 'tail', got {method!r}")
    kw = {"prob": TAIL_PROB} if method == "tail" else {}
    return _stats().ess(x, chain_axis=0, draw_axis=1, method=method, **kw)


def _flatten(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split vector-valued quantities into scalar ones named ``name[i]``; each value is (chains, draws)."""
    out = {}
    for k, v in arrays.items():
        v = _as_chains(v)
        if v.ndim == 2:
            out[k] = v
        else:
            flat = v.reshape(v.shape[0], v.shape[1], -1)
            for i in range(flat.shape[2]):
                out[f"{k}[{i}]"] = flat[:, :, i]
    return out


def summarize(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{quantity: {"rhat", "ess_bulk", "ess_tail", "mean", "sd"}}`` for every scalar quantity."""
    out = {}
    for k, v in _flatten(arrays).items():
        out[k] = {"rhat": float(rhat(v)), "ess_bulk": float(ess(v, "bulk")), "ess_tail": float(ess(v, "tail")),
                  "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan")}
    return out


@dataclass
class ConvergenceVerdict:
    """Pass/fail of R-hat and ESS thresholds, exactly as measured (never overridden).

    strict: ``max R-hat <= rhat_strict`` and ``min(ESS_bulk, ESS_tail) / n_chains >= min_ess_per_chain``.
    lenient: the same with ``rhat_lenient``. ``constant`` lists quantities skipped because all draws were equal.
    """

    n_chains: int
    n_draws: int
    rhat_max: float
    rhat_worst: str
    ess_per_chain_min: float
    ess_worst: str
    rhat_strict: float
    rhat_lenient: float
    min_ess_per_chain: float
    strict: bool
    lenient: bool
    single_chain_split: bool
    constant: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        word = "PASS (strict)" if self.strict else "PASS (lenient only)" if self.lenient else "FAIL"
        return (f"{word}: max R-hat {self.rhat_max:.4f} ({self.rhat_worst}; strict <= {self.rhat_strict}, lenient <= "
                f"{self.rhat_lenient}), min ESS/chain {self.ess_per_chain_min:.1f} ({self.ess_worst}; need >= "
                f"{self.min_ess_per_chain:g}), {self.n_chains} chain(s) x {self.n_draws} draws"
                + (" [single chain: split R-hat]" if self.single_chain_split else ""))


def verdict(arrays: Mapping[str, np.ndarray], rhat_strict: float = 1.01, rhat_lenient: float = 1.05,
            min_ess_per_chain: float = 100.0) -> ConvergenceVerdict:
    """Evaluate every scalar quantity of ``arrays`` and report the worst R-hat and the worst ESS per chain."""
    flat = _flatten(arrays)
    if not flat:
        raise ValueError("no diagnostic arrays to evaluate")
    n_chains, n_draws = next(iter(flat.values())).shape[:2]
    worst_r, r_max, worst_e, e_min, constant = "", -math.inf, "", math.inf, []
    for k, v in flat.items():
        if np.all(v == v.flat[0]):
            constant.append(k)
            continue
        r = float(rhat(v))
        e = min(float(ess(v, "bulk")), float(ess(v, "tail"))) / n_chains
        r = math.inf if math.isnan(r) else r  # too few draws: cannot pass
        e = 0.0 if math.isnan(e) else e
        if r > r_max:
            worst_r, r_max = k, r
        if e < e_min:
            worst_e, e_min = k, e
    if not math.isfinite(e_min):  # every quantity constant
        r_max, e_min = math.inf, 0.0
    ess_ok = e_min >= min_ess_per_chain
    return ConvergenceVerdict(
        n_chains=int(n_chains), n_draws=int(n_draws), rhat_max=r_max, rhat_worst=worst_r, ess_per_chain_min=e_min,
        ess_worst=worst_e, rhat_strict=rhat_strict, rhat_lenient=rhat_lenient, min_ess_per_chain=min_ess_per_chain,
        strict=bool(r_max <= rhat_strict and ess_ok), lenient=bool(r_max <= rhat_lenient and ess_ok),
        single_chain_split=n_chains == 1, constant=constant)


# ---- plots -----------------------------------------------------------------------------------------------------
def _pick(arrays: Mapping[str, np.ndarray], names: Iterable[str] | None, max_plots: int) -> dict[str, np.ndarray]:
    flat = _flatten(arrays)
    keys = list(names) if names is not None else list(flat)[:max_plots]
    missing = [k for k in keys if k not in flat]
    if missing:
        raise KeyError(f"unknown diagnostic(s) {missing}; available: {sorted(flat)[:20]}")
    return {k: flat[k] for k in keys}


def plot_traces(arrays: Mapping[str, np.ndarray], path: str | Path, names: Iterable[str] | None = None,
                max_plots: int = 8) -> Path:
    """Trace plot (one panel per quantity, one line per chain) written as PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = _pick(arrays, names, max_plots)
    fig, axes = plt.subplots(len(sel), 1, figsize=(7, 1.8 * len(sel)), squeeze=False)
    for ax, (k, v) in zip(axes[:, 0], sel.items()):
        for c in range(v.shape[0]):
            ax.plot(v[c], lw=0.8, label=f"chain {c}")
        ax.set_ylabel(k, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("kept draw")
    return _save(fig, path)


def plot_autocorr(arrays: Mapping[str, np.ndarray], path: str | Path, names: Iterable[str] | None = None,
                  max_plots: int = 8, max_lag: int = 50) -> Path:
    """Autocorrelation (``array_stats.autocorr``, FFT) per chain up to ``max_lag``, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = _pick(arrays, names, max_plots)
    fig, axes = plt.subplots(len(sel), 1, figsize=(7, 1.8 * len(sel)), squeeze=False)
    for ax, (k, v) in zip(axes[:, 0], sel.items()):
        ac = _stats().autocorr(v, axis=-1)
        for c in range(v.shape[0]):
            ax.plot(ac[c, : max_lag + 1], lw=0.8, label=f"chain {c}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(k, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("lag (kept draws)")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
