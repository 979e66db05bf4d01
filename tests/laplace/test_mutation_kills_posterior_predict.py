"""``LaplacePosterior`` predictive, loader, restriction and reload checks (tests/MUTATION.md, fourth pass).

References are written out here: the Monte-Carlo link ``mean_s softmax(f + L ε_s)`` with ``L = cholesky(J Σ Jᵀ)``
and ``ε`` drawn from the same generator, the regression variance ``diag(J Σ Jᵀ) + σ²``, and the precision of a
``fit`` over the restricted parameters alone.
"""

from __future__ import annotations

import inspect
import os
import warnings

import pytest
import torch
from torch import nn

import bayespeft.laplace as L

F64 = torch.float64


def _mlp_post(ref, structure="full", **kw):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X = torch.randn(9, 4, dtype=F64)
    y = torch.randint(0, 3, (9,))
    return L.fit(model, ref.loader(X, y, 4), structure=structure, **kw), model, X, y


def test_glm_predictive_passes_at_most_chunk_size_examples_at_a_time(ref):
    post, _, X, _ = _mlp_post(ref)
    sizes, real = [], post.structure.glm_cov

    def record(model, part, *args):
        sizes.append(part[0].shape[0])
        return real(model, part, *args)

    post.structure.glm_cov = record
    post.predict(X[:7], chunk_size=3)
    assert sizes == [3, 3, 1]
    sizes.clear()
    post.predict(X[:7])  # default chunk of 32 examples: one pass
    assert sizes == [7]


def _bf16_net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).bfloat16()


def test_bf16_model_mc_link_is_drawn_in_the_structures_float32():
    """A bf16 model's structure (and logit covariance) is float32; the logits are cast to it before the link."""
    model = _bf16_net()
    X = torch.randn(6, 4).bfloat16()
    y = torch.randint(0, 3, (6,))
    post = L.fit(model, [(X, y)], structure="full")
    f, cov = post.structure.glm_cov(model, (X, y), post.forward_fn, post.prior_precision.expand(2), post._scale())
    assert cov.dtype == torch.float32
    probs = post.predict(X, link="mc", n_samples=5, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    logits = f.float()[None] + torch.einsum("bce,sbe->sbc", torch.linalg.cholesky(cov), eps)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.softmax(logits, -1).mean(0), rtol=1e-5, atol=1e-6)


def test_bf16_regression_mean_is_returned_in_float32():
    model = _bf16_net()
    X = torch.randn(6, 4).bfloat16()
    post = L.fit(model, [(X, torch.randn(6, 3).bfloat16())], structure="diag", likelihood="regression")
    mean, var = post.predict(X)
    assert mean.dtype == var.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(mean, model(X).float())


def test_bf16_posterior_reloads_without_a_moved_warning(tmp_path):
    model = _bf16_net()
    X = torch.randn(6, 4).bfloat16()
    post = L.fit(model, [(X, torch.randint(0, 3, (6,)))], structure="diag")
    post.save(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.load(tmp_path, model)


def test_moved_warning_tolerance_is_rtol_1e5_atol_1e6(ref, tmp_path):
    torch.manual_seed(0)
    model = ref.MLP().double()
    with torch.no_grad():
        model.head.bias[0] = 0.0
    X, y = torch.randn(9, 4, dtype=F64), torch.randint(0, 3, (9,))
    L.fit(model, ref.loader(X, y, 4), structure="diag").save(tmp_path)
    with torch.no_grad():
        model.head.bias[0] = 5e-7  # |Δ| = 5e-7 ≤ atol 1e-6 (the MAP value is 0: rtol adds nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.load(tmp_path, model)
    with torch.no_grad():
        model.head.bias[0] = 0.0
        model.head.weight.mul_(1.5)  # a relative move of 50 %
    with pytest.warns(RuntimeWarning, match=r"^the model's parameters differ from the posterior mean saved with it$"):
        L.load(tmp_path, model)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampoline adds frames between load and "
                    "warn_if_moved, so the stack level cannot be checked on its mutants (tests/MUTATION.md)")
def test_moved_warning_points_at_the_caller_of_load(ref, tmp_path):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X, y = torch.randn(9, 4, dtype=F64), torch.randint(0, 3, (9,))
    L.fit(model, ref.loader(X, y, 4), structure="diag").save(tmp_path)
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.load(tmp_path, model); line = inspect.currentframe().f_lineno  # noqa: E702
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


def test_repr_lists_at_most_four_prior_precisions():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(5)]).double()
    X = torch.randn(4, 2, dtype=F64)
    post = L.fit(model, [(X, torch.randint(0, 2, (4,)))], structure="diag", prior_precision=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert repr(post) == (
        "LaplacePosterior(structure='diag', d=30, subset='all', likelihood='classification', curvature='ggn', "
        "n_data=4, prior_precision=[1.0, 2.0, 3.0, 4.0], temperature=1.0)")


def test_mc_link_error_names_the_logit_covariance():
    from bayespeft.laplace.predictive import mc_link_probs

    cov = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=F64)  # indefinite; jitters 1e-10 · 100^k · mean|diag|, k < 4
    with pytest.raises(ValueError, match=r"^logit covariance of shape \(1, 2, 2\) is not positive definite even after "
                       r"jitter \(largest jitter tried 0.0001\); it must be positive semi-definite$"):
        mc_link_probs(torch.zeros(1, 2, dtype=F64), cov, 3)


def _record_bars(monkeypatch):
    import bayespeft.laplace.posterior as posterior_module

    seen, real = [], posterior_module.progress_bar

    def record(it, *, desc, enabled):
        seen.append(desc)
        return real(it, desc=desc, enabled=enabled)

    monkeypatch.setattr(posterior_module, "progress_bar", record)
    return seen


def test_predict_loader_forwards_options_and_reads_dict_labels(ref, monkeypatch):
    post, _, X, y = _mlp_post(ref, subset="last_layer")
    seen = _record_bars(monkeypatch)

    class DictNet(nn.Module):  # the same model called as model(x=...) on dict batches
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    loader = [{"x": X[:5], "labels": y[:5]}, {"x": X[5:], "labels": y[5:]}]
    dict_post = L.fit(DictNet(post.model), loader, structure="full", subset="last_layer")
    probs, labels = dict_post.predict_loader(loader, link="mc", n_samples=4, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    expected = torch.cat([dict_post.predict(b, link="mc", n_samples=4, generator=g) for b in loader])
    torch.testing.assert_close(probs, expected)
    assert not torch.allclose(probs, dict_post.predict({"x": X}))  # the options changed the answer
    assert torch.equal(labels, y)
    assert seen == ["Laplace predict"]  # one bar per predict_loader call
    with pytest.raises(ValueError, match=r"^predict_loader got an empty loader$"):
        post.predict_loader([])


def test_sample_count_below_one_is_refused_with_its_value(ref):
    post, *_ = _mlp_post(ref, "diag")
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        post.sample(0)


def test_restriction_keeps_its_groups_prior_curvature_noise_and_description(ref):
    torch.manual_seed(0)
    model = ref.MLP().double()
    X, Y = torch.randn(9, 4, dtype=F64), torch.randn(9, 3, dtype=F64)
    post = L.fit(model, ref.loader(X, Y, 4), structure="full", likelihood="regression", prior_precision=[0.5, 3.0],
                 sigma_noise=0.8)
    post.curvature = "fisher"  # a label only: the restriction copies it
    post.sigma_noise = 0.6  # changed after fitting: the restriction keeps it
    head = ["head.weight", "head.bias"]
    sub = post.restrict(head)
    assert sub.groups == ["head"] and sub.prior_precision.tolist() == [3.0]
    assert sub.curvature == "fisher" and sub.sigma_noise == 0.6
    assert sub.subset_desc == f"restriction of {post.subset_desc} to 2 parameters"  # parameter tensors
    alone = L.fit(model, ref.loader(X, Y, 4), structure="full", likelihood="regression", subset=head,
                  prior_precision=3.0, sigma_noise=0.8)
    eye = torch.eye(18, dtype=F64)
    torch.testing.assert_close(sub.precision(), (alone.precision() - 3.0 * eye) * (0.8 / 0.6) ** 2 + 3.0 * eye)
    J = ref.brute_jacobian(model, X[:2], head)
    _, var = sub.predict(X[:2])
    torch.testing.assert_close(var, torch.einsum("ncd,de,nce->nc", J, sub.covariance(), J) + 0.36)
