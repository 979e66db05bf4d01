"""Laplace on real bayespeft models (micro ViT + PEFT LoRA, including a Conv2d LoRA on the patch embedding)."""

from __future__ import annotations

import pytest
import torch

from bayespeft.adapters import AdapterConfig, apply_adapter
from bayespeft.laplace import fit
from bayespeft.models import ModelConfig, build_model


def _loader(n=24, bs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return [{"pixel_values": x[i : i + bs], "labels": y[i : i + bs]} for i in range(0, n, bs)]


@pytest.mark.parametrize("structure", ["diag", "kfac", "full"])
def test_marglik_on_lora_vit_with_conv_adapter(structure):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="micro_vit", pretrained=False, overrides={"depth": 1}), 10)
    # "proj" matches both attn.proj (Linear) and patch_embed.proj (Conv2d): mixed hook / torch.func curvature
    model = apply_adapter(model, AdapterConfig(method="lora", r=2, target_modules=["qkv", "proj"], train_head=False))
    subset = "all" if structure != "kfac" else (lambda n, p: "patch_embed" not in n)
    post = fit(model, _loader(), structure=structure, subset=subset, prior_precision=1.0)
    for t in post.structure.state_tensors().values() if hasattr(post, "structure") else []:
        assert not t.requires_grad
    before = float(post.log_marginal_likelihood())
    post.optimize_prior("marglik", n_steps=20, lr=0.1)
    after = float(post.log_marginal_likelihood())
    assert after >= before - 1e-6
    probs = post.predict(_loader()[0])
    assert torch.allclose(probs.sum(-1), torch.ones(8), atol=1e-5)
