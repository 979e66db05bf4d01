"""Post-hoc Laplace approximations over the trainable parameters of any model (diag, KFAC, low-rank KFAC, full).

>>> post = bayespeft.laplace.fit(model, train_loader, structure="kfac", subset="all")   # doctest: +SKIP
>>> post.optimize_prior("marglik"); probs = post.predict(batch)                          # doctest: +SKIP

Structures live one per file and register in :data:`STRUCTURES`, which imports a structure's file on first use.
"""

from bayespeft.lazy import attach

# public name -> defining submodule, imported on first access (PEP 562): `import bayespeft.laplace` loads no torch
__getattr__, __dir__, __all__ = attach(__name__, {
    "registry": ["STRUCTURES"],
    "base": ["Structure"],
    "config": ["LaplaceConfig", "LayerwiseConfig"],
    "fit": ["fit"],
    "groups": ["ParamGroup", "discover_groups", "select_groups"],
    "kfac": ["KronFactors", "collect_kfac"],
    "layerwise": ["LayerwiseLaplace"],
    "layerwise_study": ["layerwise_study"],
    "persist": ["load"],
    "posterior": ["LaplacePosterior"],
    "subset": ["select_parameters"],
})
