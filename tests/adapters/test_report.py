"""Parameter accounting against hand counts, layer grouping, config validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from bayespeft.adapters import AdapterConfig, adapter_layers, apply_adapter, head_parameter_names, parameter_report
from bayespeft.models import build_model
from bayespeft.models.tiny import tiny_model_config

from .helpers import fresh

# micro_vit (defaults): D = 32, depth 2, MLP 64, 16 patches of 2x2x1, avg-pool + fc_norm, K = 3 classes
D, HID, K = 32, 64, 3
BLOCK = 2 * (2 * D) + (3 * D * D + 3 * D) + (D * D + D) + (D * HID + HID) + (HID * D + D)  # 2 LNs, qkv, proj, fc1, fc2
BASE = D + 17 * D + (4 * D + D) + 2 * BLOCK + 2 * D + (D * K + K)  # cls, pos, patch-embed, blocks, fc_norm, head
HEAD = D * K + K
NORMS = 2 * 2 * (2 * D) + 2 * D


@pytest.mark.parametrize(
    "method, trainable, added",
    [
        ("lora", 2 * 4 * (D + 3 * D) + HEAD, 2 * 4 * (D + 3 * D) + HEAD),
        ("normtune", NORMS + HEAD, NORMS + HEAD),
        ("hybrid", 2 * 4 * (D + 3 * D) + NORMS + HEAD, 2 * 4 * (D + 3 * D) + NORMS + HEAD),
        ("full", BASE, 0),
        ("linear", HEAD, 0),
    ],
)
def test_parameter_report_hand_counts(method, trainable, added):
    model = apply_adapter(fresh("micro_vit"), AdapterConfig.dropping_unread(dict(method=method, r=4)))
    rep = parameter_report(model)
    lora = 2 * 4 * (D + 3 * D) if method in ("lora", "hybrid") else 0
    assert rep["base_params"] == BASE
    assert rep["total_params"] == BASE + added  # PEFT keeps trainable copies beside frozen originals
    assert rep["trainable_params"] == trainable and rep["lora_params"] == lora
    assert rep["head_params"] == HEAD
    assert rep["trainable_pct"] == pytest.approx(100 * trainable / BASE)
    assert rep["model_size_mb"] == pytest.approx(4 * (BASE + added) / 2**20)
    assert rep["trainable_size_mb"] == pytest.approx(4 * trainable / 2**20)
    assert rep["method"] == method


def test_sizes_follow_dtype():
    model = build_model(tiny_model_config("micro_vit", dtype="bfloat16"), K)
    apply_adapter(model, AdapterConfig(method="linear"))
    rep = parameter_report(model)
    assert rep["model_size_mb"] == pytest.approx(2 * BASE / 2**20)
    assert rep["trainable_size_mb"] == pytest.approx(2 * HEAD / 2**20)


def test_adapter_layers_groups_every_trainable_parameter_once():
    model = apply_adapter(fresh("micro_vit"), AdapterConfig(method="hybrid", r=2))
    groups = adapter_layers(model)
    assert list(groups) == ["0", "1", "head", "other"]
    flat = [n for names in groups.values() for n in names]
    assert sorted(flat) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all(".blocks.0." in n for n in groups["0"]) and all("fc_norm" in n for n in groups["other"])
    assert groups["head"] == head_parameter_names(model) == [
        "backbone.base_model.model.head.modules_to_save.default.weight",
        "backbone.base_model.model.head.modules_to_save.default.bias",
    ]
    gpt2 = apply_adapter(fresh("gpt2"), AdapterConfig(method="lora", r=2))
    assert list(adapter_layers(gpt2)) == ["0", "1"]  # transformer.h.<i>; no head on multiple choice


@pytest.mark.parametrize(
    "kw, pattern",
    [
        ({"r": 0}, "LoRA ranks must be >= 1"),
        ({"r": 257}, "LoRA ranks must be >= 1 and <= 256"),
        ({"alpha": 0}, "alpha must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"method": "lorax"}, "unknown adapter method 'lorax'. Did you mean 'lora'. Known adapter methods: full, hybrid, linear, lora, normtune"),
        ({"target_modules": []}, "target_modules must be null"),
        ({"rank": 4}, "Extra inputs are not permitted"),
    ],
)
def test_adapter_config_validation(kw, pattern):
    with pytest.raises(ValidationError, match=pattern):
        AdapterConfig(**kw)


def test_head_names_select_trainable_head_after_wrapping():
    from bayespeft.laplace.subset import select_parameters

    model = apply_adapter(fresh("bert"), AdapterConfig(method="lora", r=2))
    chosen = [n for n, _ in select_parameters(model, "last_layer")]
    assert chosen == head_parameter_names(model) and all("modules_to_save.default" in n for n in chosen)
    assert sum(p.numel() for n, p in model.named_parameters() if n in chosen) == 32 * 3 + 3
    assert torch.is_tensor(model.backbone.base_model.model.classifier.modules_to_save.default.weight)
