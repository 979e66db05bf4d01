"""Image backbones: weights loading from local files, input specs, architecture facts checked independently."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from bayespeft.errors import CheckpointError
from bayespeft.models import build_model
from bayespeft.models.cifar import CIFAR_MEAN, CIFAR_STD
from bayespeft.models.tiny import tiny_model_config
from bayespeft.models.vision import DIGITS_MEAN, DIGITS_STD
from bayespeft.models.wrn import WideResNet


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def test_micro_vit_spec_is_digits_pixel_statistics():
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float64) / 16.0
    model = build_model(tiny_model_config("micro_vit"), 10)
    spec = model.input_spec
    assert (spec.kind, spec.image_size, spec.in_chans) == ("image", 8, 1)
    assert spec.mean[0] == pytest.approx(x.mean(), rel=1e-12) == DIGITS_MEAN
    assert spec.std[0] == pytest.approx(x.std(), rel=1e-12) == DIGITS_STD


def test_micro_vit_loads_own_safetensors_and_rejects_bad_files(tmp_path):
    a = build_model(tiny_model_config("micro_vit"), 10).eval()
    f = tmp_path / "w.safetensors"
    save_file(_state(a.backbone), str(f))
    b = build_model(tiny_model_config("micro_vit", pretrained=True, path=str(f)), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    # another number of classes: everything but the head is loaded, the head is fresh
    c = build_model(tiny_model_config("micro_vit", pretrained=True, path=str(f)), 4)
    torch.testing.assert_close(c.backbone.blocks[0].attn.qkv.weight, a.backbone.blocks[0].attn.qkv.weight)
    assert c.backbone.head.weight.shape == (4, 32)
    # a wider architecture: shape mismatches named with the file
    with pytest.raises(CheckpointError, match=r"w\.safetensors do not match.*\d+ shape mismatches.*qkv\.weight: file \(96, 32\) vs model \(144, 48\)"):
        build_model(tiny_model_config("micro_vit", pretrained=True, path=str(f), overrides={"embed_dim": 48}), 10)
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors is not a readable safetensors file"):
        build_model(tiny_model_config("micro_vit", pretrained=True, path=str(bad)), 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(tiny_model_config("micro_vit", pretrained=True, path=str(tmp_path / "nope.safetensors")), 10)


def test_timm_vit_loads_weights_file_via_pretrained_cfg_overlay(tmp_path):
    # an independent timm model saved as a local weights file stands in for downloaded ImageNet weights
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, img_size=32, depth=1, embed_dim=32, num_heads=2)
    f = tmp_path / "vit_tiny.safetensors"
    save_file(_state(src), str(f))
    model = build_model(tiny_model_config("vit_tiny_patch16_224", pretrained=True, path=str(f)), 7)
    got, want = model.backbone.state_dict(), src.state_dict()
    assert model.backbone.head.weight.shape == (7, 32)  # the 1000-class head is dropped, a new one made
    for k in want:
        if not k.startswith("head."):
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    spec = model.input_spec
    cfg = timm.models.get_pretrained_cfg("vit_tiny_patch16_224")
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std) and spec.image_size == 32
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(tiny_model_config("vit_tiny_patch16_224", pretrained=True, path=str(tmp_path / "none.bin")), 7)


def test_timm_image_size_override_resizes_position_embeddings():
    model = build_model(tiny_model_config("deit_tiny_patch16_224", image_size=48), 5)
    assert model.backbone.pos_embed.shape[1] == (48 // 16) ** 2 + 1
    assert model.input_spec.image_size == 48
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_hf_vit_from_local_directory(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    conf = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                     patch_size=4, num_labels=10)
    src = ViTForImageClassification(conf)
    src.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path)
    model = build_model(tiny_model_config("hf_vit", pretrained=True, path=str(tmp_path), image_size=None, overrides={}), 3).eval()
    assert model.input_spec.mean == pytest.approx((0.1, 0.2, 0.3)) and model.input_spec.std == pytest.approx((0.4, 0.5, 0.6))
    assert model.input_spec.image_size == 16 and model.backbone.classifier.out_features == 3
    for k, v in src.vit.state_dict().items():
        torch.testing.assert_close(model.backbone.vit.state_dict()[k], v, rtol=0, atol=0)
    # a new resolution interpolates the position embeddings instead of re-initialising them
    big = build_model(tiny_model_config("hf_vit", pretrained=True, path=str(tmp_path), image_size=32, overrides={}), 3).eval()
    torch.testing.assert_close(big.backbone.vit.embeddings.position_embeddings, src.vit.embeddings.position_embeddings)
    assert big(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_hf_vit_from_config_uses_imagenet_statistics():
    model = build_model(tiny_model_config("hf_deit"), 3)
    assert model.input_spec.mean == (0.485, 0.456, 0.406) and model.input_spec.image_size == 16
    assert model.backbone.config.num_labels == 3


def test_hf_path_that_is_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"could not load 'hf_vit' from {tmp_path}"):
        build_model(tiny_model_config("hf_vit", pretrained=True, path=str(tmp_path)), 3)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        build_model(tiny_model_config("hf_vit", pretrained=True, path=str(tmp_path / "missing")), 3)


def test_resnet18_cifar_is_torchvision_resnet18_with_cifar_stem():
    from torchvision.models import resnet18

    model = build_model(tiny_model_config("resnet18_cifar"), 10)
    net = model.backbone
    assert isinstance(net.maxpool, nn.Identity)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    ref = resnet18(num_classes=10)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in net.parameters()) == n_ref - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    feats = {}
    net.layer4.register_forward_hook(lambda m, i, o: feats.update(l4=o.shape))
    model.eval()(torch.randn(2, 3, 32, 32))
    assert feats["l4"] == (2, 512, 4, 4)  # 32 -> 32 (stem) -> 32, 16, 8, 4: no early downsampling
    assert model.input_spec.mean == CIFAR_MEAN and model.input_spec.std == CIFAR_STD
    assert model.default_targets[0] == "conv1" and len(model.default_targets) == 1 + 16 + 3  # stem, blocks, shortcuts


def test_wide_resnet_matches_published_sizes():
    with torch.device("meta"):
        assert sum(p.numel() for p in WideResNet(10, depth=28, widen_factor=10).parameters()) == 36_479_194
        assert round(sum(p.numel() for p in WideResNet(10, depth=16, widen_factor=8).parameters()) / 1e6, 1) == 11.0
    tiny = build_model(tiny_model_config("wrn28_10"), 10).backbone
    assert len(tiny.layer1) == len(tiny.layer2) == len(tiny.layer3) == 1 and tiny.fc.in_features == 64
    with pytest.raises(ValueError, match=r"WRN depth must be 6n \+ 4"):
        WideResNet(10, depth=27)
