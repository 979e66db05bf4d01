"""Per-example Jacobians through timm attention (``capture.func_jacobians``: ``vmap(jacrev)`` over the model).

The fused CPU ``scaled_dot_product_attention`` has no vmap batching rule: under ``vmap`` it ran as a slow
per-example loop and warned users of a "performance drop" on every Laplace fit of a ViT whose tuned parameters are
not all Linear (LayerNorm, normtune). The Jacobians are taken with the explicit attention (same maths); the
reference is ``torch.func.jacrev`` one example at a time, with the model's own (fused) attention, outside vmap.
"""

from __future__ import annotations

import warnings

import torch
from torch.func import functional_call, jacrev

from bayespeft.batch import forward_batch
from bayespeft.evalmode import unfused_attention
from bayespeft.laplace.capture import func_jacobians
from bayespeft.models import ModelConfig, build_model


def test_jacobians_through_timm_attention_are_exact_and_raise_no_vmap_warning():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="micro_vit", pretrained=False), 3).eval()
    fused = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    assert fused and all(m.fused_attn for m in fused)  # the setup does use the fused kernel
    names = [n for n, _ in model.named_parameters() if "norm" in n][:2]
    params = [(n, p) for n, p in model.named_parameters() if n in names]
    batch = {"pixel_values": torch.randn(4, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*performance drop.*")
        J = func_jacobians(model, batch, params, forward_batch)
    assert all(m.fused_attn for m in fused)  # flags restored
    values = {n: p.detach() for n, p in params}
    for i in range(4):
        def f(p, i=i):
            return functional_call(model, p, (batch["pixel_values"][i : i + 1],), strict=False)[0]
        with warnings.catch_warnings():  # jacrev vmaps the backward over output rows: the fused kernel warns here
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            ref = jacrev(f)(values)
        for n in names:
            torch.testing.assert_close(J[n][i], ref[n], rtol=1e-4, atol=1e-6)


def test_unfused_attention_restores_the_flags_after_an_error():
    model = build_model(ModelConfig(name="micro_vit", pretrained=False), 3)
    flagged = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    try:
        with unfused_attention(model):
            assert not any(m.fused_attn for m in flagged)
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert flagged and all(m.fused_attn for m in flagged)
