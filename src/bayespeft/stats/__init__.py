"""Statistics for reports: intervals over runs and over examples, paired method comparisons, rank correlation.

Library layer (see DESIGN.md's package map): pure functions of numpy arrays (or anything ``numpy.asarray``
takes), no config, no run directory, no torch tensors in or out. scipy.stats does the distributions and the
classic tests; what scipy does not offer (Holm's correction, the paired ΔECE bootstrap, "no interval" results)
is written out here. One topic per module:

* :mod:`.intervals` — :func:`t_interval` (Student-t over runs), :func:`bootstrap_interval` (percentile bootstrap
  over examples, paired resampling of aligned arrays), :func:`delta_ece_interval` (ECE_MAP − ECE_Bayes on the same
  test examples, vectorised over replicates, bins as :mod:`bayespeft.metrics.calibration`).
* :mod:`.compare` — :func:`paired_t_test`, :func:`wilcoxon_test`, :func:`cohens_dz`, :func:`holm`,
  :func:`compare_paired` (all of it for one pair), :func:`compare_methods` (methods matched by seed, Holm over
  the family).
* :mod:`.correlation` — :func:`spearman` (ρ and its p-value).
* :mod:`.summary` — :func:`summarize_over_runs` (mean ± std and t-interval), :func:`summarize_metrics`,
  :func:`format_summary`.

Conventions: every result is a frozen dataclass with ``to_dict()`` (JSON-ready). A quantity that cannot be
computed — a std from one run, a t-test on constant differences, ρ of a constant — is ``None`` with a ``reason``
string, never 0 and never NaN. Non-finite inputs, mismatched lengths and invalid options raise ``ValueError``
with what was wrong. Standard deviations use ddof = 1; levels are confidence levels in (0, 1), 0.95 by default;
p-values are two-sided.
"""

from .compare import (
    EffectSize,
    HolmResult,
    MethodComparison,
    PairedComparison,
    PairedTest,
    cohens_dz,
    compare_methods,
    compare_paired,
    holm,
    paired_t_test,
    wilcoxon_test,
)
from .correlation import Correlation, spearman
from .intervals import BootstrapInterval, TInterval, bootstrap_interval, delta_ece_interval, t_interval
from .summary import format_summary, summarize_metrics, summarize_over_runs

__all__ = [
    "BootstrapInterval",
    "Correlation",
    "EffectSize",
    "HolmResult",
    "MethodComparison",
    "PairedComparison",
    "PairedTest",
    "TInterval",
    "bootstrap_interval",
    "cohens_dz",
    "compare_methods",
    "compare_paired",
    "delta_ece_interval",
    "format_summary",
    "holm",
    "paired_t_test",
    "spearman",
    "summarize_metrics",
    "summarize_over_runs",
    "t_interval",
    "wilcoxon_test",
]
