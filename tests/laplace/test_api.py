"""Object API: subsets, persistence, config, and error messages."""

from __future__ import annotations

import copy
import json
import warnings

import pydantic
import pytest
import torch

import bayespeft.laplace as L
from bayespeft.laplace.base import positive
from bayespeft.registry import UnknownNameError


def test_structures_registered():
    assert L.STRUCTURES.names() == ["diag", "full", "kfac", "lowrank_kfac"]


@pytest.mark.parametrize(
    "subset,expected",
    [
        ("last_layer", ["head.weight", "head.bias"]),
        ("body.0", ["body.0.weight", "body.0.bias"]),
        (["head.bias", "body."], ["body.0.weight", "body.0.bias", "head.bias"]),
        (lambda n, p: n.endswith("weight"), ["body.0.weight", "head.weight"]),
    ],
)
def test_subsets_select_and_restrict_curvature(ref, mlp_data, subset, expected):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag", subset=subset)
    assert post.param_names == expected
    full = L.fit(model, ref.loader(X, y), structure="diag")
    idx = torch.cat([torch.arange(o, o + k) for n, o, k in _offsets(full) if n in expected])
    torch.testing.assert_close(post.structure.H, full.structure.H[idx])


def _offsets(post):
    o = 0
    for n, k in zip(post.structure.names, post.structure.numels):
        yield n, o, k
        o += k


def test_last_layer_uses_head_names_and_frozen_params_are_ignored(ref, mlp_data):
    model, X, y = mlp_data
    model.head_names = ["body.0"]
    model.head.weight.requires_grad_(False)
    assert [n for n, _ in L.select_parameters(model, "last_layer")] == ["body.0.weight", "body.0.bias"]
    assert "head.weight" not in [n for n, _ in L.select_parameters(model, "all")]


@pytest.mark.parametrize("structure", ["diag", "kfac", "lowrank_kfac", "full"])
def test_save_load_round_trip(ref, mlp_data, tmp_path, structure):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, prior_precision=[0.3, 3.0], n_kfac=2 if structure == "lowrank_kfac" else None, lr_threshold=3 if structure == "lowrank_kfac" else None)
    post.save(tmp_path / "post")
    meta = json.loads((tmp_path / "post" / "laplace.json").read_text())
    assert meta["structure"] == structure and meta["param_names"] == post.param_names
    clone = copy.deepcopy(model)
    loaded = L.load(tmp_path / "post", clone)
    torch.testing.assert_close(loaded.log_marginal_likelihood(), post.log_marginal_likelihood())
    torch.testing.assert_close(loaded.predict(X[:5]), post.predict(X[:5]))
    torch.testing.assert_close(loaded.covariance(), post.covariance())
    with torch.no_grad():
        clone.head.weight.add_(1.0)
    with pytest.warns(RuntimeWarning, match="differ from the posterior mean"):
        L.load(tmp_path / "post", clone)
    with pytest.raises(FileNotFoundError, match="laplace.json"):
        L.load(tmp_path / "nothing", clone)


def test_error_messages(ref, mlp_data):
    model, X, y = mlp_data
    dl = ref.loader(X, y)
    with pytest.raises(ValueError, match=r"subset 'blocks.3.' selects no trainable parameter"):
        L.fit(model, dl, subset="blocks.3.")
    with pytest.raises(ValueError, match="subset predicate nothing selects no trainable"):
        L.fit(model, dl, subset=_named(lambda n, p: False, "nothing"))
    conv = ref.ConvNet().double()
    with pytest.raises(TypeError, match=r"supports nn.Linear .*\['Conv2d', 'LayerNorm'\]"):
        L.fit(conv, ref.loader(torch.randn(4, 1, 4, 6, dtype=torch.float64), torch.zeros(4, dtype=torch.long)), structure="kfac")
    with pytest.raises(ValueError, match="empty train_loader"):
        L.fit(model, [], structure="diag")
    with pytest.raises(UnknownNameError, match="Did you mean 'kfac'"):
        L.fit(model, dl, structure="kfca")
    with pytest.raises(ValueError, match="curvature must be 'ggn' or 'fisher'"):
        L.fit(model, dl, curvature="ef")
    post = L.fit(model, dl, structure="diag")
    with pytest.raises(ValueError, match=r"one value per group \(2"):
        post.prior_precision = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="prior precision must be > 0"):
        post.prior_precision = -1.0
    with pytest.raises(ValueError, match="method must be 'glm' or 'mc'"):
        post.predict(X, method="laplace")


def _named(fn, name):
    fn.__name__ = name
    return fn


def test_non_positive_definite_precision_jitter_then_error(ref, mlp_data):
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        out = positive(torch.tensor([1.0, -1e-9], dtype=torch.float64), "test precision")
    # jitter 1e-6 · max(max |λ|, 1) = 1e-6 added to every eigenvalue
    torch.testing.assert_close(out, torch.tensor([1.0 + 1e-6, 1e-6 - 1e-9], dtype=torch.float64), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="not positive definite even after jitter"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        positive(torch.tensor([1.0, -10.0]), "test precision")
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full")
    post.structure.H = -100 * torch.eye(post.structure.d, dtype=torch.float64)
    with pytest.raises(ValueError, match="not positive definite even after jitter"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post.log_marginal_likelihood()


def test_eval_mode_during_fit_and_mode_restored(ref):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.5), torch.nn.Linear(6, 3)).double()
    X, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    model.train()
    a = L.fit(model, ref.loader(X, y), structure="diag")
    b = L.fit(model, ref.loader(X, y), structure="diag")
    torch.testing.assert_close(a.structure.H, b.structure.H)  # dropout off: deterministic
    assert model.training
    torch.manual_seed(1)
    c = L.fit(model, ref.loader(X, y), structure="diag", train_mode=True)
    assert not torch.allclose(c.structure.H, a.structure.H)


def test_dict_batches_and_temperature(ref, mlp_data):
    model, X, y = mlp_data

    class DictModel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values)

    dm = DictModel(model)
    batches = [{"pixel_values": X[i : i + 7], "labels": y[i : i + 7]} for i in range(0, 20, 7)]
    pd = L.fit(dm, batches, structure="kfac", temperature=2.0)
    pt = L.fit(model, ref.loader(X, y), structure="kfac")
    H1 = pt.precision() - torch.eye(43, dtype=torch.float64)
    torch.testing.assert_close(pd.precision() - torch.eye(43, dtype=torch.float64), H1 / 2)
    torch.testing.assert_close(pd.predict({"pixel_values": X[:3]}).sum(-1), torch.ones(3, dtype=torch.float64))


def test_config_validation():
    cfg = L.LaplaceConfig(structure="lowrank_kfac", n_kfac=8, subset=["blocks.3."])
    assert cfg.link == "probit"
    with pytest.raises(pydantic.ValidationError, match="Known Laplace structures"):
        L.LaplaceConfig(structure="kron")
    with pytest.raises(pydantic.ValidationError, match="n_kfac applies"):
        L.LaplaceConfig(structure="diag", n_kfac=4)
    with pytest.raises(pydantic.ValidationError, match="prior_precision must be > 0"):
        L.LaplaceConfig(prior_precision=[1.0, 0.0])
    with pytest.raises(pydantic.ValidationError):
        L.LaplaceConfig(structur="diag")
