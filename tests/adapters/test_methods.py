"""Every adapter method x every backbone family: trainable sets, counts, forward equivalence, save/load, plain PEFT."""

from __future__ import annotations

import copy

import pytest
import torch

from bayespeft.adapters import ADAPTERS, AdapterConfig, apply_adapter, load_adapter, parameter_report, save_adapter

from .helpers import fresh, hand_counts, inputs

BACKBONES = ["micro_vit", "timm_vit", "hf_vit", "bert", "minilm", "gpt2", "llama", "wrn"]
R = 4

# which name fragments a trainable parameter of each PEFT method may carry (besides the head copy)
ALLOWED = {"lora": ("lora_",), "normtune": ("ln_tuning_layers",), "hybrid": ("lora_", "modules_to_save")}


def _cases():
    for method in ADAPTERS.names():
        for key in BACKBONES:
            if method == "linear" and key in ("gpt2", "llama"):
                continue  # no classification head on causal-LM multiple choice (error tested below)
            yield pytest.param(method, key, id=f"{method}-{key}")


@pytest.mark.filterwarnings("ignore:Unsupported layer type")  # plain PEFT probing norm layers in step 5
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")  # PEFT calling transformers 5
@pytest.mark.parametrize("method, key", list(_cases()))
def test_method_on_backbone(method, key, tmp_path):
    base = fresh(key).eval()
    x = inputs(base)
    with torch.no_grad():
        y_base = base(**x)
    model = apply_adapter(fresh(key), AdapterConfig.dropping_unread(dict(method=method, r=R, alpha=8)))

    # 1. exactly the intended parameters are trainable, with the hand-counted size
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == hand_counts(base, R)[method]
    heads = model.head_names
    on_head = [n for n in trainable if any(n.startswith(h + ".") for h in heads)]
    if method in ALLOWED:
        assert model.backbone.peft_config  # a real peft.PeftModel
        for n in trainable:
            assert n in on_head or any(t in n for t in ALLOWED[method]), n
        trainable_peft, _ = model.backbone.get_nb_trainable_parameters()
        assert trainable_peft == parameter_report(model)["trainable_params"]
    elif method == "linear":
        assert set(on_head) == set(trainable)
    if model.task != "multiple_choice":
        head_numel = sum(p.numel() for m in model.head_modules for p in base.backbone.get_submodule(m).parameters())
        assert sum(trainable[n].numel() for n in on_head) == head_numel

    # 2. the adapted model starts as the base model (LoRA B = 0; copies equal the originals)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**x), y_base, rtol=1e-5, atol=1e-6)

    # 3. training touches only trainable tensors; then perturb them so the adapter matters
    model.train()
    model(**x).sum().backward()  # (train mode: BatchNorm statistics of tuned BN layers move)
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        y = model(**x)
    assert (y - y_base).abs().max() > 1e-4  # the perturbed adapter is on the forward path

    # 4. save -> load into a fresh model -> identical logits
    save_adapter(model, tmp_path / "ckpt", metadata={"note": "test"})
    uses_peft = ADAPTERS.get(method).uses_peft
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert "bayespeft_meta.json" in names
    assert ({"adapter_model.safetensors", "adapter_config.json"} <= names) == uses_peft
    assert ("model.safetensors" in names) == (not uses_peft)
    again = load_adapter(fresh(key), tmp_path / "ckpt").eval()
    assert again.adapter_method == method
    with torch.no_grad():
        torch.testing.assert_close(again(**x), y, rtol=0, atol=0)
    assert parameter_report(again) == parameter_report(model)

    # 5. plain PEFT reads our directory: PeftModel.from_pretrained(base backbone, dir)
    if uses_peft:
        from peft import PeftModel

        plain = fresh(key)
        plain.backbone = PeftModel.from_pretrained(copy.deepcopy(plain.backbone), str(tmp_path / "ckpt"))
        plain.eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(**x), y, rtol=0, atol=0)


def test_lora_on_resnet_convs_counts_and_freezes_batchnorm_statistics():
    base = fresh("resnet")
    model = apply_adapter(fresh("resnet"), AdapterConfig(method="lora", r=2))
    assert parameter_report(model)["trainable_params"] == hand_counts(base, 2)["lora"]
    bn = model.base_network.bn1
    before = bn.running_mean.clone()
    model.train()
    assert not bn.training  # frozen BatchNorm keeps its statistics (they are not in the adapter checkpoint)
    model(**inputs(model, 2))
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    full = apply_adapter(fresh("resnet"), AdapterConfig(method="full")).train()
    assert full.backbone.bn1.training


def test_custom_targets_and_head_modules():
    model = apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", r=2, target_modules=["fc1"], train_head=False))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("mlp.fc1.lora_" in n for n in names)
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) == 2 * 2 * (32 + 64)
    lin = apply_adapter(fresh("micro_vit"), AdapterConfig(method="linear", head_modules=["fc_norm", "head"]))
    assert {n for n, p in lin.named_parameters() if p.requires_grad} == {
        "backbone.fc_norm.weight", "backbone.fc_norm.bias", "backbone.head.weight", "backbone.head.bias"}
    assert lin.head_names == ["backbone.fc_norm", "backbone.head"]


def test_unknown_target_lists_candidates():
    with pytest.raises(ValueError, match=r"no module named \['qkvv'\].*Candidate layer names: .*'qkv'"):
        apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", target_modules=["qkvv"]))
    with pytest.raises(ValueError, match=r"not a Linear/Conv/Embedding layer: \['attn \(Attention\)'\]"):
        apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", target_modules=["attn"]))
    with pytest.raises(ValueError, match=r"adapter.head_modules \['classifier'\] not found.*top-level modules"):
        apply_adapter(fresh("micro_vit"), AdapterConfig(method="linear", head_modules=["classifier"]))


def test_lora_target_inside_head_is_rejected():
    with pytest.raises(ValueError, match=r"target_modules \['head'\] match layers inside the head"):
        apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", target_modules=["head"]))


def test_linear_on_causal_lm_is_rejected():
    with pytest.raises(ValueError, match="linear: hf_causal_lm has no classification head"):
        apply_adapter(fresh("gpt2"), AdapterConfig(method="linear"))


def test_adapter_cannot_be_applied_twice():
    model = apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora"))
    with pytest.raises(ValueError, match="already has a 'lora' adapter; build a fresh model"):
        apply_adapter(model, AdapterConfig(method="normtune"))
