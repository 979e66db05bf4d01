"""``LaplacePosterior.predict`` defaults and messages (tests/MUTATION.md, fifth pass).

Reference for ``method="mc"``, written out: diagonal Laplace draws ``θ_s = θ* + z_s / sqrt(P_ii)`` with ``z``
``(S, d)`` float64 normals of the generator passed, and the average of ``softmax(f_{θ_s}(x))`` over the draws, each
forward run by ``torch.func.functional_call`` on the parameters cut out of ``θ_s`` by hand.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import bayespeft.laplace as L

F64 = torch.float64


def _post(ref, n=9):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X = torch.randn(n, 4, dtype=F64)
    y = torch.randint(0, 3, (n,))
    return L.fit(model, ref.loader(X, y, 4), structure="diag", prior_precision=2.0), model, X


def _mc_reference(post, model, X, n_samples, seed):
    names = post.param_names
    named = dict(model.named_parameters())
    theta_map = torch.cat([named[n].detach().reshape(-1) for n in names])
    z = torch.randn(n_samples, theta_map.numel(), generator=torch.Generator().manual_seed(seed), dtype=F64)
    thetas = theta_map + z / post.precision().diagonal().sqrt()
    probs = []
    for theta in thetas:
        params, i = {}, 0
        for n in names:
            k = named[n].numel()
            params[n] = theta[i:i + k].reshape(named[n].shape)
            i += k
        with torch.no_grad():
            probs.append(torch.softmax(functional_call(model, params, (X,)), -1))
    return torch.stack(probs).mean(0)


def test_mc_predict_averages_100_draws_of_the_generator_passed(ref):
    post, model, X = _post(ref)
    got = post.predict(X, method="mc", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, _mc_reference(post, model, X, 100, 4), rtol=1e-10, atol=1e-12)
    other = post.predict(X, method="mc", n_samples=3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(other, _mc_reference(post, model, X, 3, 5), rtol=1e-10, atol=1e-12)


def test_glm_predict_chunks_33_examples_as_32_then_1(ref):
    post, _, X = _post(ref, n=33)
    sizes, real = [], post.structure.glm_cov

    def record(model, part, *args):
        sizes.append(part[0].shape[0])
        return real(model, part, *args)

    post.structure.glm_cov = record
    post.predict(X)
    assert sizes == [32, 1]


def test_unknown_link_is_refused_with_the_choices(ref):
    post, _, X = _post(ref)
    with pytest.raises(ValueError, match=r"^link must be 'probit' or 'mc', got 'logit'$"):
        post.predict(X, link="logit")
