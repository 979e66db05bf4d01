"""Post-hoc Laplace approximations over the trainable parameters of any model (diag, KFAC, low-rank KFAC, full).

>>> post = bayespeft.laplace.fit(model, train_loader, structure="kfac", subset="all")   # doctest: +SKIP
>>> post.optimize_prior("marglik"); probs = post.predict(batch)                          # doctest: +SKIP

Structures live one per file and register in :data:`STRUCTURES`; importing them here registers them.
"""

from bayespeft.laplace import diag, full, kfac, lowrank_kfac  # noqa: F401  (registers the structures)
from bayespeft.laplace.base import STRUCTURES, Structure
from bayespeft.laplace.config import LaplaceConfig, LayerwiseConfig
from bayespeft.laplace.fit import fit
from bayespeft.laplace.groups import ParamGroup, discover_groups, select_groups
from bayespeft.laplace.kfac import KronFactors, collect_kfac
from bayespeft.laplace.layerwise import LayerwiseLaplace
from bayespeft.laplace.layerwise_study import layerwise_study
from bayespeft.laplace.persist import load
from bayespeft.laplace.posterior import LaplacePosterior
from bayespeft.laplace.subset import select_parameters

__all__ = [
    "STRUCTURES", "KronFactors", "LaplaceConfig", "LaplacePosterior", "LayerwiseConfig", "LayerwiseLaplace", "ParamGroup", "Structure",
    "collect_kfac", "discover_groups", "fit", "layerwise_study", "load", "select_groups", "select_parameters",
]
