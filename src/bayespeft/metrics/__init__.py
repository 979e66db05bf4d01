"""Metrics on predicted probabilities (never logits): accuracy, NLL, Brier, calibration errors, F1, ...

Inputs everywhere: ``probs`` (N, C) class probabilities and ``labels`` (N,) class indices, numpy or torch.
Conventions (bin edges, 0/0, tie rules, Brier scaling) are stated in :mod:`.calibration` and
:mod:`.classification`. MCMC diagnostics live in :mod:`bayespeft.metrics.diagnostics` (import it directly).
"""

from .calibration import (
    ReliabilityData,
    adaptive_calibration_error,
    calibration_error,
    reliability_diagram_data,
    reliability_from_top_label,
)
from .classification import (
    accuracy,
    brier,
    confusion_matrix,
    nll,
    per_class_accuracy,
    precision_recall_f1,
)
from .reliability import plot_reliability_comparison, plot_reliability_diagram
from .summary import classification_metrics

__all__ = [
    "ReliabilityData",
    "accuracy",
    "adaptive_calibration_error",
    "brier",
    "calibration_error",
    "classification_metrics",
    "confusion_matrix",
    "nll",
    "per_class_accuracy",
    "plot_reliability_comparison",
    "plot_reliability_diagram",
    "precision_recall_f1",
    "reliability_diagram_data",
    "reliability_from_top_label",
]


def __getattr__(name: str):
    """MCMC diagnostics (arviz-stats) are imported lazily: ``from bayespeft.metrics import rhat``."""
    if name in {"rhat", "ess", "summarize", "verdict", "ConvergenceVerdict", "plot_traces", "plot_autocorr"}:
        from . import diagnostics

        return getattr(diagnostics, name)
    raise AttributeError(name)
