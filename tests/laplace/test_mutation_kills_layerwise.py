"""``LayerwiseLaplace`` construction, defaults and the MC plan (tests/MUTATION.md, fourth pass (b)).

The layer-wise tests always passed the grouping, the structure and the fit options, fitted over all groups, used
float32 models (where a float32 ``δ`` is the structure's own dtype) and never read the refusal messages, the
``naive`` path label or the plan for two draws per forward. References here: the groups of
:func:`discover_groups`, separate :func:`bayespeft.laplace.fit` calls, each set's own posterior's GLM predictive.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest
import torch
from torch import nn

import bayespeft.laplace as bl
import bayespeft.laplace.layerwise as layerwise_mod
from bayespeft.laplace.groups import ParamGroup, discover_groups
from bayespeft.laplace.layerwise import LayerwiseLaplace

_spec = importlib.util.spec_from_file_location("lw_helpers", pathlib.Path(__file__).with_name("test_layerwise.py"))
lwt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lwt)


def mlp(dtype=torch.float64) -> nn.Module:
    """Four Linear layers (8 parameters): groups ``0``, ``2``, ``4``, ``6`` by block and by module."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(),
                         nn.Linear(4, 3)).to(dtype)


def loader(dtype=torch.float64, n: int = 12, seed: int = 0, out: int = 3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g) if out == 3 else torch.randn(n, out, generator=g, dtype=dtype)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=6)


def test_refusals_name_what_is_wrong():
    model, data = mlp(), loader()
    reg = bl.fit(nn.Sequential(nn.Linear(4, 2)).double(), loader(out=2), "diag", likelihood="regression", progress=False)
    msg = "layer-wise Laplace compares classification calibration; the posterior is a regression one"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        LayerwiseLaplace(reg, discover_groups(reg.model, "block"))
    first = bl.fit(model, data, "diag", subset=["0.weight", "0.bias"], progress=False)
    missing = ["2.weight", "2.bias", "4.weight", "4.bias"]  # the first four of the six outside the posterior
    msg = f"parameters {missing} of the groups are not in the posterior; fit over the union of the groups"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        LayerwiseLaplace(first, discover_groups(model, "block"))
    split = [ParamGroup("w", 0, "block", ("0.weight",), 20), ParamGroup("b", 1, "block", ("0.bias",), 5)]
    with pytest.raises(ValueError, match=r"^module '0' has parameters in groups 'w' and 'b'$"):
        LayerwiseLaplace(first, split)


def test_fit_defaults_to_block_groups_and_kfac_over_the_union_of_the_groups():
    model, data = mlp(), loader()
    lw = LayerwiseLaplace.fit(model, data, progress=False)
    assert lw.posterior.structure.name == "kfac"
    assert lw.groups == discover_groups(model, "block")
    assert lw.posterior.param_names == [n for g in lw.groups for n in g.param_names]
    lora = lwt.lora_model()
    by_module = LayerwiseLaplace.fit(lora, lwt.data(lora, n=8), "module", structure="diag", progress=False)
    assert by_module.names == ["blocks.0.attn.qkv", "blocks.1.attn.qkv", "head"]  # "block" names these blocks.0, ...
    assert by_module.posterior.structure.name == "diag"


def test_fit_over_explicit_groups_fits_only_their_parameters_and_forwards_the_fit_options():
    model, data = mlp(), loader()
    groups = [g for g in discover_groups(model, "block") if g.name in ("2", "6")]
    lw = LayerwiseLaplace.fit(model, data, groups, structure="full", prior_precision=2.5, temperature=2.0, progress=False)
    assert lw.groups == groups
    assert lw.posterior.param_names == ["2.weight", "2.bias", "6.weight", "6.bias"]
    assert lw.posterior.structure.name == "full" and lw.posterior.temperature == 2.0
    assert lw.prior_precision == {"2": 2.5, "6": 2.5}
    alone = bl.fit(model, data, "full", subset=["6.weight", "6.bias"], prior_precision=2.5, temperature=2.0, progress=False)
    torch.testing.assert_close(lw.posterior_of("6").precision(), alone.precision(), rtol=1e-10, atol=1e-12)


def test_tune_priors_defaults_to_each_groups_evidence_maximiser():
    model, data = mlp(), loader()
    a, b = (LayerwiseLaplace.fit(model, data, "block", structure="diag", progress=False) for _ in range(2))
    got = a.tune_priors(n_steps=5)
    assert got == b.tune_priors("marglik", n_steps=5)
    assert all(v != 1.0 for v in got.values())  # moved from the fitted value


def test_glm_uses_each_groups_prior_in_the_structures_dtype():
    """float64 model, δ = 0.1 (not a float32 number): each set's posterior holds δ = 0.1 exactly (a float32 δ would be
    0.10000000149...), and the one-pass GLM equals each set's own posterior's GLM predictive to float64 rounding."""
    model, data = mlp(), loader()
    lw = LayerwiseLaplace.fit(model, data, "block", structure="kfac", progress=False)
    lw.tune_priors(0.1)
    sets = [[n] for n in lw.names] + [lw.names]
    res = lw.predict_loader(data, sets, "glm")
    for s, probs in zip(sets, res.probs):
        post = lw.posterior_of(s)
        assert post.prior_precision.dtype == torch.float64 and post.prior_precision.tolist() == [0.1] * len(s)
        ref = torch.cat([post.predict(b, method="glm") for b in data])
        torch.testing.assert_close(probs, ref, rtol=1e-13, atol=1e-15)


def test_mc_plan_labels_paths_and_probes_two_draws_on_two_rows(monkeypatch):
    model, data = mlp(), loader()
    lw = LayerwiseLaplace.fit(model, data, "block", structure="diag", progress=False)
    sets = [["0"], ["2", "6"]]
    assert lw.predict_loader(data, sets, "mc", n_samples=3, path="naive").paths == ["naive (requested)"] * 2
    probed = []
    real = layerwise_mod.choose_mode

    def spy(post, batch, thetas, *args):
        probed.append((int(batch[1].shape[0]), int(thetas.shape[0])))
        return real(post, batch, thetas, *args)

    monkeypatch.setattr(layerwise_mod, "choose_mode", spy)
    two = lw.predict_loader(data, sets, "mc", n_samples=3, sample_batch=2)
    assert probed == [(2, 2), (2, 2)]  # PROBE_ROWS rows of the first batch, the first two draws, once per set
    assert two.paths == ["naive (no block stack found); 2 draws per forward (repeat)"] * 2
    one = lw.predict_loader(data, sets, "mc", n_samples=3)
    for a, b in zip(two.probs, one.probs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
