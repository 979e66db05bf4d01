"""A ``torch.Generator`` on the accelerator is accepted wherever the Laplace code draws noise.

Posterior samples, the Monte-Carlo link of the GLM predictive, the MC predictive and the Fisher's sampled labels take
their noise from ``generator``: a CPU generator draws on the CPU and the draws are moved (the same numbers on every
device: ``test_accelerator_structures.py``), an accelerator's generator draws on its own device. Before, the second
raised torch's generator-device error. The reference here is independent of the generator: the posterior
covariance in closed form (the samples' empirical covariance must match it), the CPU posterior's predictive with
many samples, and reproducibility under the same seed. On the virtual accelerator an accelerator generator is a CPU
one underneath, so there the draws equal the CPU generator's exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bayespeft import laplace

STRUCTURES = {"diag": {}, "full": {}, "kfac": {}, "lowrank_kfac": {"n_kfac": 2, "lr_threshold": 3}}


def gen(device, seed=3):
    return torch.Generator(device=device).manual_seed(seed)


def data(n=20):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def fitted(ref, device, structure, **kw):
    torch.manual_seed(0)
    model = copy.deepcopy(ref.MLP().double()).to(device)
    X, y = data()
    return laplace.fit(model, ref.loader(X, y), structure=structure, prior_precision=2.0,
                       **{**STRUCTURES[structure], **kw})


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_samples_from_an_accelerator_generator_follow_the_posterior(ref, accelerator, structure):
    post = fitted(ref, accelerator, structure)
    thetas = post.sample(6000, generator=gen(accelerator))
    assert thetas.device.type == accelerator.type
    assert torch.equal(thetas.cpu(), post.sample(6000, generator=gen(accelerator)).cpu())  # same seed, same draws
    assert not torch.equal(thetas.cpu(), post.sample(6000, generator=gen(accelerator, 4)).cpu())
    dev = (thetas - post.mean).cpu()
    cov = post.covariance().cpu()
    emp = dev.T @ dev / dev.shape[0]
    scale = cov.diagonal().sqrt()
    # Monte-Carlo error of a covariance entry ~ sqrt((Σ_ii Σ_jj + Σ_ij²) / n) <= sqrt(2/n) in correlation units
    torch.testing.assert_close(emp / torch.outer(scale, scale), cov / torch.outer(scale, scale), rtol=0, atol=0.07)
    torch.testing.assert_close(dev.mean(0) / scale, torch.zeros_like(scale), rtol=0, atol=0.07)
    if accelerator.type != "cuda":
        assert torch.equal(thetas.cpu(), post.sample(6000, generator=gen("cpu")).cpu())


@pytest.mark.parametrize("structure", ["diag", "kfac"])
def test_mc_predictives_take_an_accelerator_generator(ref, accelerator, structure):
    post, cpu = fitted(ref, accelerator, structure), fitted(ref, "cpu", structure)
    X, _ = data(9)
    for kw in ({"link": "mc", "n_samples": 2000}, {"method": "mc", "n_samples": 300}):
        got = post.predict(X.to(accelerator), generator=gen(accelerator), **kw)
        assert got.device.type == accelerator.type
        torch.testing.assert_close(got.cpu(), post.predict(X.to(accelerator), generator=gen(accelerator), **kw).cpu(),
                                   rtol=0, atol=0)
        want = cpu.predict(X, generator=gen("cpu", 11), **kw)  # another stream: agreement up to Monte-Carlo error
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0.05)


@pytest.mark.parametrize("structure", ["diag", "kfac"])
def test_fisher_labels_from_an_accelerator_generator(ref, accelerator, structure):
    one = fitted(ref, accelerator, structure, curvature="fisher", generator=gen(accelerator))
    two = fitted(ref, accelerator, structure, curvature="fisher", generator=gen(accelerator))
    other = fitted(ref, accelerator, structure, curvature="fisher", generator=gen(accelerator, 4))
    a, b, c = (torch.cat([t.reshape(-1).cpu() for t in p.structure.state_tensors().values()
                          if t.is_floating_point()]) for p in (one, two, other))
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)
    if accelerator.type != "cuda":
        cpu = fitted(ref, "cpu", structure, curvature="fisher", generator=gen("cpu"))
        want = torch.cat([t.reshape(-1) for t in cpu.structure.state_tensors().values() if t.is_floating_point()])
        torch.testing.assert_close(a, want, rtol=1e-10, atol=1e-12)
