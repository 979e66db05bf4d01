"""``laplace.fit`` defaults, messages and the subset description (tests/MUTATION.md, fourth pass)."""

from __future__ import annotations

import importlib

import pytest
import torch

import bayespeft.laplace as L

F64 = torch.float64


def _data(ref, regression=False):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X = torch.randn(8, 4, dtype=F64)
    y = torch.randn(8, 3, dtype=F64) if regression else torch.randint(0, 3, (8,))
    return model, ref.loader(X, y, 4)


class _CallableWithoutName:
    def __call__(self, name, param):
        return name.startswith("head.")


def _head_only(name, param):
    return name.startswith("head.")


@pytest.mark.parametrize("subset,desc", [
    ("all", "'all'"), ("last_layer", "'last_layer'"), (["head"], "['head']"), ("head.", "'head.'"),
    (_head_only, "_head_only"), (lambda n, p: n.startswith("head."), "<lambda>"),
    (_CallableWithoutName(), "predicate"),
])
def test_subset_description(ref, subset, desc):
    model, loader = _data(ref)
    assert L.fit(model, loader, structure="diag", subset=subset).subset_desc == desc


def test_regression_noise_defaults_to_one(ref):
    model, loader = _data(ref, regression=True)
    post = L.fit(model, loader, structure="diag", likelihood="regression")
    assert post.sigma_noise == post.sigma_fit == 1.0
    halved = L.fit(model, loader, structure="diag", likelihood="regression", sigma_noise=0.5)
    # H = Σ JᵀJ / σ²: the default σ = 1 collects a quarter of σ = 0.5's curvature
    torch.testing.assert_close(post.precision() - torch.eye(post.structure.d, dtype=F64),
                               (halved.precision() - torch.eye(post.structure.d, dtype=F64)) / 4)


def test_fisher_labels_are_drawn_with_seed_zero_by_default(ref):
    model, loader = _data(ref)
    default = L.fit(model, loader, structure="diag", curvature="fisher").precision()
    assert torch.equal(default, L.fit(model, loader, structure="diag", curvature="fisher", seed=0).precision())
    assert not torch.equal(default, L.fit(model, loader, structure="diag", curvature="fisher", seed=1).precision())


def test_bad_likelihood_and_kfac_option_messages(ref):
    model, loader = _data(ref)
    with pytest.raises(ValueError, match=r"^likelihood must be 'classification' or 'regression', got 'poisson'$"):
        L.fit(model, loader, likelihood="poisson")
    with pytest.raises(ValueError, match=r"^n_kfac applies to structures 'kfac'/'lowrank_kfac', not 'diag'$"):
        L.fit(model, loader, structure="diag", n_kfac=2)


def test_a_generator_passed_draws_the_fisher_labels(ref):
    model, loader = _data(ref)
    given = L.fit(model, loader, structure="diag", curvature="fisher", generator=torch.Generator().manual_seed(1))
    assert given.curvature == "fisher"
    assert torch.equal(given.precision(), L.fit(model, loader, structure="diag", curvature="fisher", seed=1).precision())


@pytest.mark.parametrize("progress", [None, False, True])
def test_one_progress_bar_named_after_the_structure(ref, monkeypatch, progress):
    fit_module = importlib.import_module("bayespeft.laplace.fit")  # the package attribute ``fit`` is the function

    seen, real = [], fit_module.progress_bar

    def record(it, *, desc, enabled):
        seen.append((desc, enabled))
        return real(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(fit_module, "progress_bar", record)
    model, loader = _data(ref)
    L.fit(model, loader, structure="diag", progress=progress)
    assert seen == [("Laplace fit (diag)", progress)]


def test_a_change_in_the_number_of_outputs_and_an_empty_loader_are_refused(ref):
    model, loader = _data(ref)

    calls = []

    def fewer_later(model, batch):  # 3 outputs on the first batch, 2 on the second
        calls.append(1)
        x, y = batch
        return model(x)[:, : 3 if len(calls) == 1 else 2], y

    with pytest.raises(ValueError, match=r"^the model returned 2 outputs, earlier batches 3$"):
        L.fit(model, loader, structure="diag", forward_fn=fewer_later)
    with pytest.raises(ValueError, match=r"^fit got an empty train_loader \(no batches\); the Laplace curvature needs "
                       r"data$"):
        L.fit(model, [], structure="diag")
