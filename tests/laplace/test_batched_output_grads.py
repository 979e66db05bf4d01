"""The ``K`` output-gradient passes of the curvature/Jacobian capture run as batched backward passes.

Independent answer: ``torch.func.vjp`` of the logits as a function of each tapped Linear output (one cotangent
at a time), and the brute-force ``torch.func`` GGN for the fitted curvature. Exercised: one batched pass, several
chunks (a tiny element budget), and the fallback for a graph with an operation that cannot run under ``vmap``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bayespeft.laplace as L
import bayespeft.laplace.capture as capture


class ItemInBackward(torch.autograd.Function):
    """Identity whose backward reads a Python number (``.item()``): impossible inside a batched (vmapped) backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * (1.0 + 0.0 * g.sum().item())


class Net(nn.Module):
    def __init__(self, item_in_backward: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)
        self.item_in_backward = item_in_backward

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if self.item_in_backward:
            h = ItemInBackward.apply(h)
        return self.head(torch.tanh(self.b(h)))


def reference(net: Net, x: torch.Tensor, V: torch.Tensor) -> dict[str, torch.Tensor]:
    """``∂⟨f, v_k⟩/∂h`` for each Linear output ``h`` (stacked over k) by ``torch.func.vjp`` of f as a function of h."""
    with torch.no_grad():
        ha = net.a(x)
        hb = net.b(torch.tanh(ha))

    def f_of(ha, hb):  # f with the outputs of a and b as free inputs (head output: f itself)
        pre_b = net.b(torch.tanh(ha))
        return net.head(torch.tanh(hb + pre_b - pre_b.detach()))

    _, vjp = torch.func.vjp(f_of, ha, hb)
    ga, gb = zip(*(vjp(v) for v in V))
    return {"a": torch.stack(ga), "b": torch.stack(gb), "head": V.clone()}


@pytest.mark.parametrize("budget", [None, 40])  # 40 elements: one cotangent per batched pass (several chunks)
@pytest.mark.parametrize("item_in_backward", [False, True])
def test_output_grads_equal_per_cotangent_vjps(monkeypatch, budget, item_in_backward) -> None:
    torch.manual_seed(0)
    net = Net(item_in_backward).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    V = torch.randn(5, 7, 3, dtype=torch.float64)
    if budget is not None:
        monkeypatch.setattr(capture, "BATCHED_GRAD_ELEMENTS", budget)
    with capture.LinearTaps({"a": net.a, "b": net.b, "head": net.head}) as taps:
        f = net(x)
        got = taps.output_grads(f, V)
    want = reference(net, x, V)
    for name in ("a", "b", "head"):
        torch.testing.assert_close(got[name].squeeze(2), want[name], rtol=1e-10, atol=1e-12)


def test_batched_grads_chunks_cover_every_cotangent_once(monkeypatch) -> None:
    torch.manual_seed(1)
    lin = nn.Linear(3, 4).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    out = lin(x)
    f = out.tanh() @ torch.randn(4, 5, dtype=torch.float64)
    V = torch.randn(5, 2, 5, dtype=torch.float64)
    want = torch.stack([torch.autograd.grad(f, out, v, retain_graph=True)[0] for v in V])
    monkeypatch.setattr(capture, "BATCHED_GRAD_ELEMENTS", 16)  # 2 cotangents per pass: chunks of 2, 2, 1
    (g,) = capture.batched_grads(f, [out], V)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-14)


def test_full_ggn_with_batched_passes_equals_brute_force(ref, mlp_data) -> None:
    model, X, y = mlp_data
    post = L.fit(model, ref.loader(X, y), structure="full", curvature="ggn")
    H = ref.brute_ggn(model, X, ref.trainable_names(model))
    torch.testing.assert_close(post.structure.H, H, rtol=1e-9, atol=1e-11)
