"""What every curvature structure must do and the suite left unchecked (tests/MUTATION.md, third pass).

* A saved state is loaded in the structure's dtype: ``load`` of a float32 file on a float64 model (the suite only
  round-tripped files in the dtype they were written in).
* The curvature is that of ``forward_fn``'s outputs: ``fit`` with a forward function that doubles the inputs has the
  GGN of the model at ``2 X`` (``conftest.brute_ggn``, ``torch.func`` Jacobians); the suite only fitted with the
  default forward function, so dropping ``forward_fn`` in ``accumulate`` passed.
"""

from __future__ import annotations

import pytest
import torch

import bayespeft.laplace as L

OPTIONS = {"diag": {}, "full": {}, "kfac": {}, "lowrank_kfac": {"n_kfac": 3, "lr_threshold": 2}}


def _double(model, batch):
    x, y = batch
    return model(2 * x), y


@pytest.mark.parametrize("structure", sorted(OPTIONS))
def test_float32_state_loads_in_the_float64_structures_dtype(ref, mlp_data, structure):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, **OPTIONS[structure])
    state = {k: v.float() if v.is_floating_point() else v for k, v in post.structure.state_tensors().items()}
    named = dict(model.named_parameters())
    fresh = L.STRUCTURES.get(structure)(model, [(n, named[n]) for n in post.param_names], **post.structure.options())
    fresh.load_state_tensors(state)
    loaded = fresh.state_tensors()
    assert set(loaded) == set(state)
    for k, v in loaded.items():
        assert v.dtype == (torch.float64 if state[k].is_floating_point() else state[k].dtype), k
        torch.testing.assert_close(v, state[k].to(v.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("structure", ["diag", "full", "kfac"])
def test_curvature_is_of_the_forward_functions_outputs(ref, mlp_data, structure):
    model, X, y = mlp_data
    names = ref.trainable_names(model)
    post = L.fit(model, ref.loader(X, y), structure=structure, prior_precision=0.5, forward_fn=_double)
    ggn = ref.brute_ggn(model, 2 * X, names)
    if structure == "kfac":  # exact only for the head (its input does not depend on other parameters' Jacobians)
        # KFAC is not the GGN; compare with the same structure fitted on the doubled inputs instead
        expected = L.fit(model, ref.loader(2 * X, y), structure="kfac", prior_precision=0.5).precision()
        assert not torch.allclose(L.fit(model, ref.loader(X, y), structure="kfac", prior_precision=0.5).precision(),
                                  expected)  # the inputs matter
    else:
        expected = ggn + 0.5 * torch.eye(len(ggn), dtype=ggn.dtype)
        if structure == "diag":
            expected = torch.diag(expected.diagonal())
    torch.testing.assert_close(post.precision(), expected, rtol=1e-10, atol=1e-10)


def _params(model, names):
    named = dict(model.named_parameters())
    return [(n, named[n]) for n in names]


@pytest.mark.parametrize("structure", ["diag", "full"])
def test_unknown_options_are_refused(mlp_data, structure):
    model, _, _ = mlp_data
    with pytest.raises(TypeError, match=rf"^structure '{structure}' got unknown options \['n_kfac'\]$"):
        L.STRUCTURES.get(structure)(model, list(model.named_parameters()), n_kfac=3)


@pytest.mark.parametrize("structure", ["diag", "full"])
def test_samples_are_the_documented_transform_of_the_generators_float64_normals(ref, mlp_data, structure):
    """diag: ``θ* + z / sqrt(P_ii)``; full: ``θ* + L⁻ᵀ z`` with ``P = L Lᵀ``; ``z`` ``(n, d)`` float64 from the
    generator passed (drawn on the CPU)."""
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure=structure, prior_precision=[0.3, 3.0])
    z = torch.randn(5, post.structure.d, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    P = post.precision()
    if structure == "diag":
        dev = z / P.diagonal().sqrt()
    else:
        dev = torch.linalg.solve_triangular(torch.linalg.cholesky(P).T, z.T, upper=True).T
    torch.testing.assert_close(post.sample(5, generator=torch.Generator().manual_seed(11)), post.mean + dev,
                               rtol=1e-12, atol=1e-12)


def test_kfac_samples_follow_the_generator(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="kfac")
    a, b, c = (post.sample(4, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_diag_jitter_warning_names_the_diagonal_precision(mlp_data):
    model, _, _ = mlp_data
    s = L.STRUCTURES.get("diag")(model, list(model.named_parameters()))  # H = 0: with δ = 0, P = 0
    with pytest.warns(RuntimeWarning, match=r"^diagonal posterior precision is not positive definite \(min eigenvalue 0\)"):
        logdet = s.logdet_precision(torch.zeros(len(s.groups), dtype=torch.float64), torch.tensor(1.0))
    assert float(logdet) == pytest.approx(s.d * torch.log(torch.tensor(1e-6)).item())


def test_full_size_limit_is_inclusive_and_names_the_size(mlp_data, monkeypatch):
    import bayespeft.laplace.full as full

    model, _, _ = mlp_data  # d = 4·5 + 5 + 5·3 + 3 = 43
    params = list(model.named_parameters())
    monkeypatch.setattr(full, "MAX_FULL_PARAMS", 43)
    assert L.STRUCTURES.get("full")(model, params).H.shape == (43, 43)
    monkeypatch.setattr(full, "MAX_FULL_PARAMS", 42)
    with pytest.raises(ValueError, match=r"^structure 'full' stores a 43 x 43 matrix; choose a smaller subset \(<= 42 "
                                         r"parameters, e\.g\. subset='last_layer'\) or structure 'diag'/'kfac'/'lowrank_kfac'$"):
        L.STRUCTURES.get("full")(model, params)


def test_full_cholesky_jitter_schedule_and_messages(mlp_data):
    """``P = 0`` (``H = 0``, ``δ = 0``): mean |diag P| = 0 is floored at 1e-12, so the first jitter 1e-6 · 1e-12
    factorises (``L = 1e-9 I``), and the shared-prior log-determinant takes that path too instead of ``log 0``.
    ``P = -I``: jitters 1e-6 … 1e-2 (5 tries, factor 10) all fail."""
    model, _, _ = mlp_data
    s = L.STRUCTURES.get("full")(model, list(model.named_parameters()))
    zero, one = torch.zeros(len(s.groups), dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"^full posterior precision is not positive definite; adding jitter 1e-18 "
                                            r"to the diagonal$"):
        chol = s.cholesky(zero, one)
    torch.testing.assert_close(chol, 1e-9 * torch.eye(43, dtype=torch.float64), rtol=1e-12, atol=0)
    with pytest.warns(RuntimeWarning, match="adding jitter 1e-18"):
        logdet = s.logdet_precision_shared(zero[:1], one)
    assert float(logdet) == pytest.approx(43 * torch.log(torch.tensor(1e-18, dtype=torch.float64)).item(), rel=1e-12)
    s.H = -torch.eye(43, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^full posterior precision of shape \(43, 43\) is not positive definite even "
                                         r"after jitter \(largest jitter tried 0\.01\); use a positive prior precision$"), \
            pytest.warns(RuntimeWarning):
        s.cholesky(zero, one)


@pytest.mark.parametrize(("option", "message"), [("temperature", "temperature must be > 0, got 0"),
                                                  ("sigma_noise", "sigma_noise must be > 0, got 0.0")])
def test_zero_temperature_and_noise_are_refused(ref, mlp_data, option, message):
    model, X, y = mlp_data
    kw = {option: 0 if option == "temperature" else 0.0}
    with pytest.raises(ValueError, match="^" + message + "$"):
        L.fit(model, ref.loader(X, y), structure="diag", **kw)


def test_gridsearch_regression_uses_the_gaussian_nll_and_the_default_grid(ref):
    """Default grid ``logspace(-4, 4, 21)``; regression picks the prior of the lowest Gaussian NLL
    ``−mean_n Σ_d log N(y_nd; μ_nd, v_nd)`` (``torch.distributions.Normal``) of the GLM predictive."""
    torch.manual_seed(0)
    model = ref.MLP(d_out=2).double()
    X = torch.randn(24, 4, dtype=torch.float64)
    with torch.no_grad():  # residuals of scale 0.4 > σ = 0.3: some, not unbounded, epistemic variance helps
        Y = model(X) + 0.4 * torch.randn(24, 2, dtype=torch.float64)
    post = L.fit(model, ref.loader(X, Y), structure="diag", likelihood="regression", sigma_noise=0.3)
    grid = torch.logspace(-4, 4, 21).tolist()
    nlls = []
    for d in grid:
        post.prior_precision = d
        mean, var = post.predict(X)
        nlls.append(float(-torch.distributions.Normal(mean, var.sqrt()).log_prob(Y).sum(-1).mean()))
    expected = grid[min(range(len(grid)), key=nlls.__getitem__)]
    assert expected not in (grid[0], grid[-1])  # an interior optimum: another grid would miss it
    best = post.optimize_prior("gridsearch", val_loader=ref.loader(X, Y), progress=False)
    assert float(best) == pytest.approx(expected, rel=1e-12)


def test_gridsearch_classification_optimum_need_not_come_first(ref, mlp_data):
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="diag")
    grid = [100.0, 1.0, 0.01]
    nlls = []
    for d in grid:
        post.prior_precision = d
        nlls.append(float(-post.predict(X)[torch.arange(20), y].log().mean()))
    assert min(range(3), key=nlls.__getitem__) != 0
    best = post.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=grid, progress=False)
    assert float(best) == grid[min(range(3), key=nlls.__getitem__)]
    with pytest.raises(ValueError, match=r"^optimize_prior\(method='gridsearch'\) needs val_loader$"):
        post.optimize_prior("gridsearch")
