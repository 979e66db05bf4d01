"""The Laplace posterior of a model on an accelerator equals the CPU's, and its tensors stay on the accelerator.

Each test fits the same tiny float64 model twice, on the CPU and moved to the ``accelerator`` fixture (a GPU, or the
virtual accelerator of ``tests/virtual_device.py``), and compares every public result of the posterior: evidence,
tuned priors, predictives, samples, save/load, restriction. The reference is the CPU run of the same computation.
Random draws use a CPU ``torch.Generator`` (a CPU generator's noise is drawn on the CPU and moved), so the draws, and
hence the values, agree on a real GPU too, up to float64 rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bayespeft import laplace

STRUCTURES = {
    "diag": {},
    "full": {},
    "kfac": {},
    "lowrank_kfac": {"n_kfac": 2, "lr_threshold": 3},  # factors of dimension > 3 low-rank: the 1/δ identity terms
}
TOL = {"rtol": 1e-7, "atol": 1e-9}  # float64; a GPU's summation order / eigensolver differ in the last digits
ITER_TOL = {"rtol": 1e-5, "atol": 1e-9}  # results of an optimiser's iterates, where such rounding may grow


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type


def curvature(post) -> list[torch.Tensor]:
    """The structure's curvature tensors (KFAC's integer ``counts`` are bookkeeping for ``save``, kept on the CPU)."""
    return [t for t in post.structure.state_tensors().values() if t.is_floating_point()]


def same(got, want, device, **tol):
    """``got`` lives on ``device`` and equals the CPU's ``want`` (tensors, or tuples of tensors)."""
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            same(g, w, device, **tol)
        return
    assert _on(got, device), f"result on {got.device}, expected {device}"
    assert want.device.type == "cpu"
    torch.testing.assert_close(got.cpu(), want, **(tol or TOL))


def data(n=20, regression=False):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64) if regression else torch.randint(0, 3, (n,), generator=g)
    return X, y


def pair(ref, accelerator, structure, **kw):
    """``(cpu posterior, accelerator posterior)`` of the same MLP and data (``kw`` passed to ``fit``)."""
    torch.manual_seed(0)
    model = ref.MLP().double()
    twin = copy.deepcopy(model).to(accelerator)
    X, y = data(regression=kw.get("likelihood") == "regression")
    options = {**STRUCTURES[structure], **kw}
    cpu = laplace.fit(model, ref.loader(X, y), structure=structure, **options)
    acc = laplace.fit(twin, ref.loader(X, y), structure=structure, **options)
    return cpu, acc


def gen(seed=3):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_evidence_and_tuned_priors_equal_the_cpu(ref, accelerator, structure):
    cpu, acc = pair(ref, accelerator, structure, temperature=2.0, prior_precision=[0.5, 2.0])
    for t in (acc.mean, acc.prior_precision, acc.structure.param_group, acc.structure.group_sizes,
              *curvature(acc)):
        assert _on(t, accelerator)
    same(acc.log_likelihood(), cpu.log_likelihood(), accelerator)
    same(acc.log_marginal_likelihood(), cpu.log_marginal_likelihood(), accelerator)          # per group (G = 2)
    same(acc.log_marginal_likelihood(0.7), cpu.log_marginal_likelihood(0.7), accelerator)    # one shared δ
    same(acc.log_marginal_likelihood([0.3, 4.0]), cpu.log_marginal_likelihood([0.3, 4.0]), accelerator)
    same(acc.precision(), cpu.precision(), accelerator)
    same(acc.covariance(), cpu.covariance(), accelerator)
    for run in ({"n_steps": 15, "lr": 0.2, "layerwise": True}, {"n_steps": 15, "lr": 0.2},
                {"optimizer": "lbfgs", "n_steps": 10, "lr": 0.5}):
        for post in (cpu, acc):
            post.prior_precision = 1.0
        want = cpu.optimize_prior("marglik", **run)
        same(acc.optimize_prior("marglik", **run), want, accelerator, **ITER_TOL)
        same(acc.log_marginal_likelihood(), cpu.log_marginal_likelihood(), accelerator, **ITER_TOL)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_predictives_and_gridsearch_equal_the_cpu(ref, accelerator, structure):
    cpu, acc = pair(ref, accelerator, structure, prior_precision=[0.5, 2.0])
    X, y = data(9)
    same(acc.predict(X.to(accelerator)), cpu.predict(X), accelerator)                         # GLM, probit
    same(acc.predict(X, chunk_size=4), cpu.predict(X, chunk_size=4), accelerator)              # CPU inputs are moved
    same(acc.predict((X, y), link="mc", n_samples=50, generator=gen()),
         cpu.predict((X, y), link="mc", n_samples=50, generator=gen()), accelerator)
    same(acc.predict(X, method="mc", n_samples=20, generator=gen()),
         cpu.predict(X, method="mc", n_samples=20, generator=gen()), accelerator)
    # the MC predictive wrote the MAP back into the accelerator model's parameters
    same(torch.cat([p.detach().reshape(-1) for p in acc.model.parameters()]),
         torch.cat([p.detach().reshape(-1) for p in cpu.model.parameters()]), accelerator, rtol=0, atol=0)
    probs, labels = acc.predict_loader(ref.loader(X, y, batch_size=4), link="mc", n_samples=30, generator=gen())
    want, _ = cpu.predict_loader(ref.loader(X, y, batch_size=4), link="mc", n_samples=30, generator=gen())
    assert probs.device.type == "cpu" and labels.device.type == "cpu" and torch.equal(labels, y)
    torch.testing.assert_close(probs, want, **TOL)
    grid = [0.01, 0.3, 10.0, 300.0]
    for kw in ({}, {"pred_method": "mc", "n_samples": 10, "generator": gen()}):
        got = acc.optimize_prior("gridsearch", val_loader=ref.loader(X, y, batch_size=4), grid=grid, **kw)
        if "generator" in kw:
            kw["generator"] = gen()
        want = cpu.optimize_prior("gridsearch", val_loader=ref.loader(X, y, batch_size=4), grid=grid, **kw)
        same(got, want, accelerator)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_samples_of_a_cpu_generator_land_on_the_accelerator(ref, accelerator, structure):
    cpu, acc = pair(ref, accelerator, structure, temperature=0.5, prior_precision=[0.5, 2.0])
    same(acc.sample(6, generator=gen()), cpu.sample(6, generator=gen()), accelerator)
    got, want = acc.sample(2, generator=gen(5), as_dict=True), cpu.sample(2, generator=gen(5), as_dict=True)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        same(list(g.values()), list(w.values()), accelerator)
    delta, scale = acc.prior_precision.expand(2), acc._scale()
    want = cpu.structure.sample(4, delta.cpu(), scale.cpu(), gen())
    same(acc.structure.sample(4, delta, scale, gen()), want, accelerator)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_save_and_load_onto_the_accelerator_model(ref, accelerator, structure, tmp_path):
    cpu, acc = pair(ref, accelerator, structure, temperature=2.0, prior_precision=[0.5, 2.0])
    X, _ = data(5)
    for saved, where in ((cpu, tmp_path / "from_cpu"), (acc, tmp_path / "from_acc")):
        saved.save(where)
        loaded = laplace.load(where, copy.deepcopy(cpu.model).to(accelerator))
        assert _on(loaded.structure.param_group, accelerator)
        for t in (loaded.mean, loaded.prior_precision, *curvature(loaded)):
            assert _on(t, accelerator)
        same(loaded.log_marginal_likelihood(), cpu.log_marginal_likelihood(), accelerator)
        same(loaded.predict(X), cpu.predict(X), accelerator)
        same(loaded.sample(3, generator=gen()), cpu.sample(3, generator=gen()), accelerator)
        back = laplace.load(where, copy.deepcopy(cpu.model))                                     # and onto the CPU
        torch.testing.assert_close(back.log_marginal_likelihood(), cpu.log_marginal_likelihood(), **TOL)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_a_one_tensor_subset_fits_saves_and_loads_on_the_accelerator(ref, accelerator, structure, tmp_path):
    cpu, acc = pair(ref, accelerator, structure, subset="head.weight", prior_precision=0.8)
    assert acc.param_names == ["head.weight"]
    acc.save(tmp_path)
    loaded = laplace.load(tmp_path, copy.deepcopy(cpu.model).to(accelerator))
    X, _ = data(5)
    for post in (acc, loaded):
        same(post.log_marginal_likelihood(), cpu.log_marginal_likelihood(), accelerator)
        same(post.predict(X), cpu.predict(X), accelerator)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_restriction_to_one_layer_equals_the_cpu(ref, accelerator, structure):
    cpu, acc = pair(ref, accelerator, structure, prior_precision=[0.5, 2.0])
    names = ["head.weight", "head.bias"]
    sub_cpu, sub_acc = cpu.restrict(names), acc.restrict(names)
    assert _on(sub_acc.structure.param_group, accelerator) and _on(sub_acc.structure.group_sizes, accelerator)
    same(acc.structure.index_of(names), cpu.structure.index_of(names), accelerator)
    X, _ = data(5)
    same(sub_acc.log_marginal_likelihood(), sub_cpu.log_marginal_likelihood(), accelerator)
    same(sub_acc.precision(), sub_cpu.precision(), accelerator)
    same(sub_acc.predict(X), sub_cpu.predict(X), accelerator)
    same(sub_acc.sample(3, generator=gen()), sub_cpu.sample(3, generator=gen()), accelerator)
    parts = [["body.0.weight", "body.0.bias"], names]
    delta, scale = acc.prior_precision.expand(2), acc._scale()
    got = acc.structure.glm_cov_parts(acc.model, (X.to(accelerator), torch.zeros(5, dtype=torch.long)), acc.forward_fn,
                                      delta, scale, parts)
    want = cpu.structure.glm_cov_parts(cpu.model, (X, torch.zeros(5, dtype=torch.long)), cpu.forward_fn,
                                       delta.cpu(), scale.cpu(), parts)
    same(got, want, accelerator)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_regression_noise_and_evidence_equal_the_cpu(ref, accelerator, structure):
    cpu, acc = pair(ref, accelerator, structure, likelihood="regression", sigma_noise=0.7, temperature=1.5)
    for post in (cpu, acc):
        post.sigma_noise = 0.9                      # P = H σ_fit² / (T σ²) + P0
    same(acc.log_likelihood(), cpu.log_likelihood(), accelerator)
    same(acc.log_likelihood(1.3), cpu.log_likelihood(1.3), accelerator)
    same(acc._scale(), cpu._scale(), accelerator)
    same(acc.log_marginal_likelihood(0.4, 1.2), cpu.log_marginal_likelihood(0.4, 1.2), accelerator)
    X, y = data(6, regression=True)
    same(acc.predict(X), cpu.predict(X), accelerator)
    same(acc.predict(X, method="mc", n_samples=10, generator=gen()),
         cpu.predict(X, method="mc", n_samples=10, generator=gen()), accelerator)
    grid = [0.01, 1.0, 100.0]
    same(acc.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=grid),
         cpu.optimize_prior("gridsearch", val_loader=ref.loader(X, y), grid=grid), accelerator)
    for run in ({"n_steps": 10, "lr": 0.1}, {"optimizer": "lbfgs", "n_steps": 8, "lr": 0.5}):  # LBFGS: one flat vector
        want = cpu.optimize_prior(tune_sigma=True, **run)
        same(acc.optimize_prior(tune_sigma=True, **run), want, accelerator, **ITER_TOL)
        assert acc.sigma_noise == pytest.approx(cpu.sigma_noise, rel=1e-5)


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_load_state_tensors_moves_host_tensors_to_the_structure(ref, accelerator, structure, dtype):
    """``load_state_tensors`` puts the tensors it is given (here CPU ones, maybe of another dtype) on the structure's
    device and dtype, whoever read them."""
    cpu, acc = pair(ref, accelerator, structure, prior_precision=[0.5, 2.0])
    host = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in cpu.structure.state_tensors().items()}
    acc.structure.load_state_tensors(host)
    for t in curvature(acc):
        assert _on(t, accelerator) and t.dtype == torch.float64
    tol = TOL if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    same(acc.log_marginal_likelihood(), cpu.log_marginal_likelihood(), accelerator, **tol)
    same(acc.sample(2, generator=gen()), cpu.sample(2, generator=gen()), accelerator, **tol)
