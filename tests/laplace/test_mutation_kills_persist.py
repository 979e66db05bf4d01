"""``LaplacePosterior.save`` / ``laplace.load``: format tag, structure options, metadata, refusals (tests/MUTATION.md,
fourth pass)."""

from __future__ import annotations

import json
import re

import pytest
import torch

import bayespeft.laplace as L

F64 = torch.float64


def _fitted(ref, structure="kfac", **kw):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X = torch.randn(10, 4, dtype=F64)
    return model, L.fit(model, ref.loader(X, torch.randint(0, 3, (10,)), 5), structure=structure, **kw)


def test_metadata_file_carries_the_format_tag_and_version(ref, tmp_path):
    _, post = _fitted(ref, "diag")
    post.save(tmp_path)
    meta = json.loads((tmp_path / "laplace.json").read_text())
    assert meta["format"] == "bayespeft.laplace" and meta["version"] == 1


@pytest.mark.parametrize("structure,opts", [("kfac", {"bias": "separate"}), ("lowrank_kfac", {"n_kfac": 1, "lr_threshold": 2})])
def test_structure_options_curvature_subset_and_noise_survive_a_round_trip(ref, tmp_path, structure, opts):
    model, post = _fitted(ref, structure, subset="last_layer", curvature="fisher", **opts)
    post.sigma_noise = 0.7  # changed after fitting
    post.save(tmp_path)
    back = L.load(tmp_path, model)
    assert back.structure.options() == post.structure.options()
    assert (back.curvature, back.subset_desc, back.sigma_noise, back.sigma_fit) == ("fisher", "'last_layer'", 0.7, 1.0)
    torch.testing.assert_close(back.covariance(), post.covariance(), rtol=1e-12, atol=1e-14)


def test_a_foreign_json_and_a_model_of_other_shapes_are_refused(ref, tmp_path):
    model, post = _fitted(ref, "diag")
    post.save(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "laplace.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"laplace.json is not a bayespeft Laplace posterior$"):
        L.load(tmp_path / "other", model)
    wider = ref.MLP(hidden=6).double()
    with pytest.raises(ValueError, match=re.escape("the model has no parameter 'body.0.weight' of shape [5, 4]; load "
                                                   "needs the model the posterior was fitted on")):
        L.load(tmp_path, wider)
    renamed = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"^the model has no parameter 'body.0.weight' of shape \[5, 4\]"):
        L.load(tmp_path, renamed)
