"""Corrupt or mismatched adapter checkpoints fail with clear errors, change nothing on disk, touch no tensor."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from bayespeft.adapters import (
    AdapterConfig,
    apply_adapter,
    load_adapter,
    load_trainable_state_dict,
    save_adapter,
    trainable_state_dict,
)
from bayespeft.errors import CheckpointError

from .helpers import fresh, inputs


def _digest(d) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _saved(tmp_path, method="lora", key="micro_vit", **kw):
    model = apply_adapter(fresh(key), AdapterConfig.dropping_unread(dict(method=method, r=4, **kw)))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    out = tmp_path / f"{method}-{key}"
    save_adapter(model, out, metadata={"epochs": 3})
    return model, out


def _expect_error(ckpt, pattern, model=None, **kw):
    before = _digest(ckpt)
    target = model if model is not None else fresh("micro_vit")
    state = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=pattern):
        load_adapter(target, ckpt, **kw)
    assert _digest(ckpt) == before  # nothing on disk changed
    return target, state


def test_meta_records_method_backbone_and_metadata(tmp_path):
    _, ckpt = _saved(tmp_path)
    meta = json.loads((ckpt / "bayespeft_meta.json").read_text())
    assert (meta["method"], meta["backbone"], meta["num_classes"], meta["task"]) == ("lora", "micro_vit", 3, "image_classification")
    assert meta["adapter"]["r"] == 4 and meta["metadata"] == {"epochs": 3} and meta["base_fingerprint"]
    peft_cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == "LORA" and peft_cfg["r"] == 4 and peft_cfg["modules_to_save"] == ["head"]


def test_garbage_weights_file(tmp_path):
    _, ckpt = _saved(tmp_path)
    (ckpt / "adapter_model.safetensors").write_bytes(b"garbage" * 10)
    target, state = _expect_error(ckpt, r"adapter_model\.safetensors is not a readable safetensors file")
    assert target.adapter_method is None  # failed before anything was applied
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_wrong_shape_and_missing_key(tmp_path):
    _, ckpt = _saved(tmp_path)
    f = ckpt / "adapter_model.safetensors"
    sd = load_file(str(f))
    key = next(k for k in sd if "lora_A" in k)
    bad = dict(sd)
    bad[key] = torch.zeros(5, sd[key].shape[1])
    save_file(bad, str(f))
    _expect_error(ckpt, rf"adapter_model\.safetensors does not match the model: 1 shape mismatches \({key}: checkpoint \(5, 32\) vs model \(4, 32\)")
    missing = {k: v for k, v in sd.items() if k != key}
    save_file(missing, str(f))
    _expect_error(ckpt, rf"1 missing keys \(e\.g\. \['{key}'\]\)")


def test_full_checkpoint_mismatch(tmp_path):
    _, ckpt = _saved(tmp_path, method="full")
    f = ckpt / "model.safetensors"
    sd = load_file(str(f))
    sd["backbone.extra.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    _expect_error(ckpt, r"model\.safetensors does not match the model: 1 unexpected keys \(e\.g\. \['backbone\.extra\.weight'\]\)")


def test_missing_or_broken_meta(tmp_path):
    _, ckpt = _saved(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(fresh("micro_vit"), tmp_path / "nowhere")
    (ckpt / "bayespeft_meta.json").write_text("{not json")
    _expect_error(ckpt, r"bayespeft_meta\.json is not valid JSON")
    (ckpt / "bayespeft_meta.json").unlink()
    _expect_error(ckpt, r"not a bayespeft adapter checkpoint: bayespeft_meta\.json is missing")


def test_other_backbone_or_classes(tmp_path):
    _, ckpt = _saved(tmp_path, key="timm_vit")
    _expect_error(ckpt, r"checkpoint is for backbone 'vit_tiny_patch16_224' with 3 classes, the model is 'micro_vit'")


def test_other_adapter_settings(tmp_path):
    _, ckpt = _saved(tmp_path)
    adapted = apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", r=8))
    _expect_error(ckpt, r"the model was adapted with .*'r': 8.* but the checkpoint holds .*'r': 4", model=adapted)


def test_other_base_weights_are_detected(tmp_path):
    _, ckpt = _saved(tmp_path)
    other = fresh("micro_vit")
    with torch.no_grad():
        other.backbone.blocks[0].attn.qkv.weight.mul_(-1.5)  # another base (other seed / other checkpoint)
    _expect_error(ckpt, r"base weights of the model differ .*blocks\.0\.attn\.qkv\.weight", model=other)
    load_adapter(other, ckpt, check_base=False)  # explicitly allowed
    assert other.adapter_method == "lora"


def test_another_architecture_is_named_as_such(tmp_path):
    """A model built with other settings (here one block fewer) is an architecture error naming a missing tensor, not
    'base weights differ'; one with an extra block names a new tensor."""
    from bayespeft.models import ModelConfig, build_model

    _, ckpt = _saved(tmp_path)
    base = fresh("micro_vit").backbone
    depth = len(base.blocks)
    over = {"embed_dim": base.embed_dim, "num_heads": base.blocks[0].attn.num_heads}
    for d, part in ((depth - 1, rf"\d+ base tensor\(s\) of the trained model are not in this one "
                                rf"\(e\.g\. blocks\.{depth - 1}\."),
                    (depth + 1, rf"\d+ are new \(e\.g\. blocks\.{depth}\.")):
        other = build_model(ModelConfig(name="micro_vit", pretrained=False, overrides={**over, "depth": d}), 3)
        _expect_error(ckpt, r"the model's architecture differs from the one the adapter was trained on: .*" + part
                      + r".*model\.overrides", model=other)


def test_peft_type_mismatch(tmp_path):
    _, ckpt = _saved(tmp_path)
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    cfg["peft_type"] = "IA3"
    (ckpt / "adapter_config.json").write_text(json.dumps(cfg))
    _expect_error(ckpt, r"adapter_config\.json: peft_type 'IA3', expected 'LORA'")


def test_load_into_already_adapted_model_and_resave_other_method(tmp_path):
    model, ckpt = _saved(tmp_path)
    # dropout only acts in training, so a model adapted with another dropout still takes the checkpoint
    target = apply_adapter(fresh("micro_vit"), AdapterConfig(method="lora", r=4, dropout=0.1))
    load_adapter(target, ckpt)
    x = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(**x), model.eval()(**x), rtol=0, atol=0)
    # saving another method into the same directory removes the stale weights file of the first
    full = apply_adapter(fresh("micro_vit"), AdapterConfig(method="full"))
    save_adapter(full, ckpt)
    assert not (ckpt / "adapter_model.safetensors").exists() and (ckpt / "model.safetensors").exists()


def test_save_requires_adapter(tmp_path):
    with pytest.raises(ValueError, match="call apply_adapter"):
        save_adapter(fresh("micro_vit"), tmp_path / "x")


def test_trainable_state_dict_round_trip_and_errors():
    model = apply_adapter(fresh("wrn"), AdapterConfig(method="normtune"))
    model.train()
    model(**inputs(model))  # moves the running statistics of the tuned BatchNorm copies
    sd = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    assert any(k.endswith("running_mean") for k in sd)  # buffers of tuned norms are part of the state
    assert all(p.requires_grad for n, p in model.named_parameters() if n in sd)
    other = apply_adapter(fresh("wrn"), AdapterConfig(method="normtune"))
    load_trainable_state_dict(other, sd)
    for k, v in trainable_state_dict(other).items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    key = next(iter(sd))
    with pytest.raises(CheckpointError, match=r"1 missing keys"):
        load_trainable_state_dict(other, {k: v for k, v in sd.items() if k != key})
    res = load_trainable_state_dict(other, {k: v for k, v in sd.items() if k != key}, strict=False)
    assert res == {"missing": [key], "unexpected": []}
    with pytest.raises(CheckpointError, match=r"shape mismatches"):
        load_trainable_state_dict(other, {**sd, key: torch.zeros(1)}, strict=False)


def _flip_data_byte(file) -> None:
    """Flip one bit in the middle of a safetensors file's tensor data; the JSON header stays intact."""
    raw = bytearray(file.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n + (len(raw) - 8 - n) // 2] ^= 0x01
    file.write_bytes(bytes(raw))


@pytest.mark.parametrize("method,weights", [("lora", "adapter_model.safetensors"), ("full", "model.safetensors")])
def test_corrupted_tensor_bytes_are_caught_by_the_recorded_sha256(tmp_path, method, weights):
    import copy

    from peft import PeftModel, get_peft_model_state_dict

    model, ckpt = _saved(tmp_path, method=method)
    meta = json.loads((ckpt / "bayespeft_meta.json").read_text())
    assert meta["sha256"] == {weights: hashlib.sha256((ckpt / weights).read_bytes()).hexdigest()}
    if method == "lora":  # our metadata does not get in plain PEFT's way
        plain = PeftModel.from_pretrained(copy.deepcopy(fresh("micro_vit").backbone), str(ckpt))
        got, want = get_peft_model_state_dict(plain), get_peft_model_state_dict(model.backbone)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    _flip_data_byte(ckpt / weights)
    load_file(str(ckpt / weights))  # the header is intact: safetensors alone does not notice
    _expect_error(ckpt, rf"checkpoint file \S*{weights} is corrupted \(SHA-256 mismatch\); re-run training or restore it")
