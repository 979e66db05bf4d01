"""``laplace.capture`` output-space helpers in float32 and bf16 (tests/MUTATION.md, fourth pass).

References written out: ``R Rᵀ = diag p − p pᵀ``; Fisher cotangents ``p − onehot(ŷ)`` with ``ŷ`` drawn by
``torch.multinomial`` from the same generator, ``−ε/σ`` with ``ε`` float64 normals from it; the data term
``Σ −log softmax(f)_y`` of the float32 logits.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch.func import functional_call, jacrev

import bayespeft.laplace as L
from bayespeft.laplace.capture import LinearTaps, cotangents, nll_terms, regression_targets

F32 = torch.float32


def _logits():
    torch.manual_seed(0)
    return torch.randn(4, 3, dtype=F32)


def test_every_cotangent_kind_is_in_the_logits_dtype_with_the_documented_values():
    f = _logits()
    p = torch.softmax(f.double(), -1)
    R = cotangents(f, torch.zeros(4), "classification", "ggn")
    assert R.dtype == F32 and R.shape == (3, 4, 3)
    torch.testing.assert_close(torch.einsum("kbc,kbd->bcd", R.double(), R.double()),
                               torch.diag_embed(p) - p[:, :, None] * p[:, None, :], rtol=0, atol=1e-6)
    V = cotangents(f, torch.zeros(4), "classification", "fisher", generator=torch.Generator().manual_seed(1))
    y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(1)).squeeze(1)
    assert V.dtype == F32
    torch.testing.assert_close(V, (p - torch.nn.functional.one_hot(y, 3)).to(F32)[None])
    f64 = f.double()  # the identity cotangents are made in the logits' dtype, not the default float32
    eye = cotangents(f64, torch.zeros(4), "classification", "jacobian")
    assert eye.dtype == torch.float64 and torch.equal(eye, torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, 4, 3))
    reg = cotangents(f64, torch.zeros(4, 3), "regression", "ggn")  # σ defaults to 1
    assert reg.dtype == torch.float64 and torch.equal(reg, torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, 4, 3))
    f = torch.randn(8, 3, dtype=F32)  # 24 draws: float32 and float64 normals of one seed differ from 16 on
    eps = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    noisy = cotangents(f, torch.zeros(8, 3), "regression", "fisher", 0.5, torch.Generator().manual_seed(2))
    assert noisy.dtype == F32
    torch.testing.assert_close(noisy, (-eps / 0.5).to(F32)[None])


def test_regression_targets_take_the_predictions_dtype_and_shape():
    y = regression_targets(torch.zeros(3, 1, dtype=F32), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert y.dtype == F32 and y.shape == (3, 1)
    assert torch.equal(y[:, 0], torch.tensor([0.1, 0.2, 0.3], dtype=F32))


def test_bf16_classification_data_term_is_summed_in_float32():
    f = _logits().bfloat16()
    y = torch.tensor([0, 2, 1, 2])
    expected = -torch.log_softmax(f.float(), -1)[torch.arange(4), y].sum()
    got = nll_terms(f, y, "classification")
    assert got.dtype == F32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


class _SharedLinear(torch.nn.Module):
    """One Linear applied to two inputs of 2 and 3 positions: ``f = Σ_t lin(x1)_t + 2 Σ_t lin(x2)_t``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3).double()

    def forward(self, x1, x2):
        return self.lin(x1).sum(1) + 2 * self.lin(x2).sum(1)


class _ThreeCalls(torch.nn.Module):
    """One Linear applied to three inputs of 2, 1 and 3 positions: ``f = Σ_i i · Σ_t lin(x_i)_t``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3).double()

    def forward(self, x1, x2, x3):
        return self.lin(x1).sum(1) + 2 * self.lin(x2).sum(1) + 3 * self.lin(x3).sum(1)


def test_a_linear_called_several_times_contributes_every_call_along_positions():
    torch.manual_seed(0)
    net = _ThreeCalls()
    xs = [torch.randn(5, t, 4, dtype=torch.float64) for t in (2, 1, 3)]
    V = torch.randn(2, 5, 3, dtype=torch.float64)
    with LinearTaps({"lin": net.lin}) as taps:
        f = net(*xs)
    assert torch.equal(taps.activations("lin"), torch.cat(xs, 1))
    g = taps.output_grads(f, V)["lin"]  # ∂⟨f, v⟩/∂h: i · v at each position of the i-th call
    assert torch.equal(g, torch.stack([V, V, 2 * V, 3 * V, 3 * V, 3 * V], dim=2))


def test_a_linear_called_once_gives_a_view_of_its_input():
    net = _SharedLinear()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with LinearTaps({"lin": net.lin}) as taps:
        net.lin(x)
    a = taps.activations("lin")
    assert torch.equal(a, x) and a.data_ptr() == x.data_ptr()  # no copy


def test_taps_messages():
    net = _SharedLinear()
    x = torch.randn(2, 1, 4, dtype=torch.float64)
    with LinearTaps({"lin": net.lin, "unused": torch.nn.Linear(1, 1)}) as taps:
        with torch.no_grad():
            f = net(x, x)
    with pytest.raises(RuntimeError, match=r"^module 'unused' was not called in the forward pass$"):
        taps.activations("unused")
    with pytest.raises(RuntimeError, match=r"^a tapped Linear output does not require grad; is torch.no_grad\(\) "
                       r"active\?$"):
        taps.output_grads(f, torch.ones(1, 2, 3, dtype=torch.float64))


def test_fit_of_a_weight_shared_linear_is_the_brute_force_ggn(ref):
    torch.manual_seed(0)
    net = _SharedLinear()
    x1, x2 = torch.randn(6, 2, 4, dtype=torch.float64), torch.randn(6, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))

    def forward_fn(model, batch):
        return model(batch[0], batch[1]), batch[2]

    post = L.fit(net, [(x1, x2, y)], structure="full", forward_fn=forward_fn, prior_precision=1.0)
    params = {n: p.detach() for n, p in net.named_parameters()}
    J = jacrev(lambda p: functional_call(net, p, (x1, x2)))(params)
    J = torch.cat([J[n].reshape(6, 3, -1) for n in params], -1)
    p = torch.softmax(net(x1, x2).detach(), -1)
    ggn = torch.einsum("ncd,nce,nef->df", J, torch.diag_embed(p) - p[:, :, None] * p[:, None, :], J)
    torch.testing.assert_close(post.precision(), ggn + torch.eye(15, dtype=torch.float64))


@pytest.mark.parametrize("shape,budget,unused,passes", [
    ((2, 4), 8, False, [1, 1, 1, 1, 1]),  # 8 elements per cotangent, budget 8: one cotangent per pass, never batched
    ((1, 1), 3, False, [3, 2]),  # 1 element per cotangent, budget 3: three per batched pass
    ((1, 1), 6, True, [3, 2]),  # plus an output the logits do not use (zeros), batched all the same
    ((1, 1), 2, True, [1, 1, 1, 1, 1]),  # the same one cotangent at a time
])
def test_batched_passes_hold_as_many_cotangents_as_the_element_budget_allows(monkeypatch, shape, budget, unused, passes):
    import bayespeft.laplace.capture as capture

    torch.manual_seed(1)
    out = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    outs = [out, torch.randn(*shape, dtype=torch.float64, requires_grad=True)] if unused else [out]
    f = out.tanh().sum(-1, keepdim=True) * torch.ones(1, 2, dtype=torch.float64)  # (B, 2)
    V = torch.randn(5, shape[0], 2, dtype=torch.float64)
    seen, real = [], torch.autograd.grad
    want = torch.stack([real(f, out, v, retain_graph=True)[0] for v in V])  # before the last pass frees the graph

    def record(outputs, inputs, grad_outputs, **kw):
        seen.append(len(grad_outputs) if kw.get("is_grads_batched") else 1)
        return real(outputs, inputs, grad_outputs, **kw)

    monkeypatch.setattr(capture, "BATCHED_GRAD_ELEMENTS", budget)
    monkeypatch.setattr(torch.autograd, "grad", record)
    grads = capture.batched_grads(f, outs, V)
    assert seen == passes
    torch.testing.assert_close(grads[0], want, rtol=1e-12, atol=1e-14)
    if unused:
        assert grads[1].dtype == torch.float64 and torch.equal(grads[1], torch.zeros(5, *shape, dtype=torch.float64))
    if passes[-1] == 1:  # the last single pass frees the graph
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            real(f, out, V[0])


def test_logits_and_cotangent_shape_messages():
    from bayespeft.laplace.capture import check_logits, cotangents_checked

    with pytest.raises(ValueError, match=r"^the model must return logits/predictions of shape \(B, C\) or \(B, D\); "
                       r"got \(2, 3, 4\)$"):
        check_logits(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"; got tuple$"):
        check_logits((torch.zeros(2, 3),))
    f = torch.zeros(2, 3)
    assert check_logits(f) is f
    for bad in (torch.zeros(2, 3), torch.zeros(1, 2, 4)):
        with pytest.raises(ValueError, match=re.escape(f"cotangents must have shape (K, B, C) = (K, (2, 3)), got "
                                                       f"{tuple(bad.shape)}") + "$"):
            cotangents_checked(bad, f)



def test_batched_backward_through_vmap_fallback_is_exact_and_silent():
    """``cummax``'s backward has no batching rule: a batched backward takes the per-op fallback there and, with the
    fallback warnings switched on, warns of a "performance drop". ``batched_grads`` keeps the (exact) result and
    swallows that warning; the reference is one ``autograd.grad`` per cotangent."""
    torch.manual_seed(0)
    lin, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    h = lin(torch.randn(5, 3))
    logits = head(torch.cummax(h, 1)[0])
    V = torch.randn(3, 5, 2)
    expected = torch.stack([torch.autograd.grad(logits, h, v, retain_graph=True)[0] for v in V])
    before = torch._C._debug_only_are_vmap_fallback_warnings_enabled()
    torch._C._debug_only_display_vmap_fallback_warnings(True)
    try:
        with pytest.warns(UserWarning, match="performance drop"):  # the setup does reach the fallback
            torch.autograd.grad(logits, h, V, retain_graph=True, is_grads_batched=True)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            (g,) = L.capture.batched_grads(logits, [h], V)
    finally:
        torch._C._debug_only_display_vmap_fallback_warnings(before)
    assert [str(x.message) for x in w] == []
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-6)


class _WarnsInBackward(torch.autograd.Function):
    """Identity whose backward warns (a model's own warning, not vmap's)."""

    @staticmethod
    def forward(ctx, h):
        return h.clone()

    @staticmethod
    def backward(ctx, g):
        warnings.warn("a warning of the model's own backward", UserWarning)
        return g


def test_batched_backward_lets_other_warnings_through():
    torch.manual_seed(0)
    lin, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    h = lin(torch.randn(5, 3))
    logits = head(torch.tanh(_WarnsInBackward.apply(h)))
    V = torch.randn(3, 5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.stack([torch.autograd.grad(logits, h, v, retain_graph=True)[0] for v in V])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        (g,) = L.capture.batched_grads(logits, [h], V)
    assert "a warning of the model's own backward" in [str(x.message) for x in w]
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-6)
