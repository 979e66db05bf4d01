"""Layer-wise Laplace on an accelerator (a GPU, or tests/virtual_device.py) gives the CPU's numbers.

A four-Linear MLP (groups ``0``, ``2``, ``4``, ``6``) is fitted, its priors tuned (the joint Adam loop) and its
predictives computed with the model on the CPU and on the accelerator, the loaders' batches staying on the CPU
(``predict_loader`` moves them). The MC predictive's plan differs by design: one draw per forward on the CPU, on an
accelerator as many draws per forward as :func:`~bayespeft.laplace.sample_batch.draws_per_forward` allows (here all
of them: the tiny model is far below the memory budget; nothing is queried from the device); both give the same
probabilities up to float round-off. ``layerwise_study`` is run end to end on both.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from bayespeft.laplace.layerwise import LayerwiseLaplace
from bayespeft.laplace.layerwise_study import layerwise_study
from layerwise_nets import loader, mlp

TOL = dict(rtol=1e-9, atol=1e-11)


def _pair(device, structure: str, prior):
    model = mlp()
    cpu = LayerwiseLaplace.fit(copy.deepcopy(model), loader(), structure=structure, prior_precision=prior, progress=False)
    acc = LayerwiseLaplace.fit(copy.deepcopy(model).to(device), loader(), structure=structure, prior_precision=prior,
                               progress=False)
    return cpu, acc


def _same_predictions(got, want, tol=TOL):
    for t, w in [(got.map_probs, want.map_probs), (got.labels, want.labels), *zip(got.probs, want.probs)]:
        assert t.device.type == "cpu"  # predict_loader returns host tensors
        torch.testing.assert_close(t, w, **tol)


@pytest.mark.parametrize("structure", ["diag", "kfac"])
def test_tuning_and_glm_predictives_on_the_device_equal_the_cpu(accelerator, structure):
    cpu, acc = _pair(accelerator, structure, [0.5, 1.0, 2.0, 4.0])  # one fitted prior per group
    assert acc.posterior.structure.device == accelerator
    want = cpu.tune_priors(n_steps=30)  # block-diagonal: the joint Adam loop over the per-group index
    got = acc.tune_priors(n_steps=30)
    assert list(got) == ["0", "2", "4", "6"]
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9), k
    post = acc.posterior_of(["2", "6"])
    assert post.prior_precision.device == accelerator
    assert acc.log_marginal_likelihood(["2", "6"]) == pytest.approx(cpu.log_marginal_likelihood(["2", "6"]), rel=1e-9)
    sets = [["0"], ["2", "6"]]
    for link in ("probit", "mc"):
        _same_predictions(acc.predict_loader(loader(seed=1), sets, "glm", link=link, n_samples=40),
                          cpu.predict_loader(loader(seed=1), sets, "glm", link=link, n_samples=40))


@pytest.mark.parametrize("sets", [[["4"]], [["2"], ["0", "6"]]])
def test_mc_predictive_stacks_draws_on_the_device_and_equals_the_cpu_loop(accelerator, sets):
    cpu, acc = _pair(accelerator, "kfac", 1.0)
    n = 7  # not the size of any set (4 .. 71 parameters), nor 1
    want = cpu.predict_loader(loader(seed=2), sets, "mc", n_samples=n)
    got = acc.predict_loader(loader(seed=2), sets, "mc", n_samples=n)
    assert all(p.endswith("one draw per forward") for p in want.paths), want.paths
    assert all(re.search(rf"; {n} draws per forward \((expand|repeat)", p) for p in got.paths), got.paths
    _same_predictions(got, want)
    naive = acc.predict_loader(loader(seed=2), sets, "mc", n_samples=n, path="naive")
    _same_predictions(naive, want)
    one = acc.predict_loader(loader(seed=2), sets, "mc", n_samples=n, sample_batch=1)  # an explicit count wins
    assert all(p.endswith("one draw per forward") for p in one.paths), one.paths


def test_layerwise_study_on_the_device_equals_the_cpu(accelerator):
    def run(model):
        loaders = {"train": loader(), "val": loader(seed=3), "test": loader(seed=4)}
        return layerwise_study(model, loaders, groups="module", predictive="mc", n_samples=5, greedy=1, progress=False)

    model = mlp()
    want, got = run(copy.deepcopy(model)), run(copy.deepcopy(model).to(accelerator))
    assert [r["name"] for r in got["groups"]] == [r["name"] for r in want["groups"]] == ["0", "2", "4", "6"]
    assert got["greedy"][0]["groups"] == want["greedy"][0]["groups"]

    def leaves(tree, path=()):
        if isinstance(tree, dict):
            for k, v in tree.items():
                yield from leaves(v, (*path, k))
        elif isinstance(tree, list) and tree and isinstance(tree[0], (dict, list)):
            for i, v in enumerate(tree):
                yield from leaves(v, (*path, i))
        else:
            yield path, tree

    w, g = dict(leaves(want)), dict(leaves(got))
    assert g.keys() == w.keys()
    for k, v in w.items():
        if k[-1] == "path":
            continue  # the plan differs by design (see the module docstring)
        if isinstance(v, (float, np.ndarray)) or (isinstance(v, list) and v and isinstance(v[0], float)):
            np.testing.assert_allclose(np.asarray(g[k], dtype=float), np.asarray(v, dtype=float), rtol=1e-9, atol=1e-11, err_msg=str(k))
        else:
            assert g[k] == v, k
