"""The ``adapter`` section: method names come from the adapter registry, and options a method does not read are
rejected when set explicitly (never when left at their defaults), for every registered method."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from bayespeft.adapters import ADAPTERS, METHOD_OPTIONS, AdapterConfig, apply_adapter, load_adapter, save_adapter
from bayespeft.adapters import methods as methods_module
from bayespeft.registry import Registry

from .helpers import fresh, inputs

LORA = {"r", "alpha", "dropout", "target_modules", "train_head"}
#: what each method reads, written out from apply_adapter's code (not from the registry entries)
READS = {"lora": LORA, "hybrid": LORA, "normtune": {"train_head"}, "full": set(), "linear": set()}
#: an explicit value for each option that is valid on its own (and differs from the default)
VALUES = {"r": 2, "alpha": 4.0, "dropout": 0.1, "target_modules": ["qkv"], "train_head": False}


def test_every_registered_method_is_covered():
    assert set(READS) == set(ADAPTERS.names()) and set(VALUES) == set(METHOD_OPTIONS)


@pytest.mark.parametrize("method", sorted(READS))
@pytest.mark.parametrize("option", sorted(VALUES))
def test_explicit_option_is_accepted_only_where_it_is_read(method, option):
    if option in READS[method]:
        assert getattr(AdapterConfig(method=method, **{option: VALUES[option]}), option) == VALUES[option]
        return
    users = sorted(m for m, reads in READS.items() if option in reads)
    want = " and ".join(users) if len(users) < 3 else f"{', '.join(users[:-1])} and {users[-1]}"
    with pytest.raises(ValidationError, match=rf"{option}\n.*applies to {want} only; remove it \(or set it to null\) for method '{method}'"):
        AdapterConfig(method=method, **{option: VALUES[option]})
    # a (non-null) default value, given explicitly, is just as wrong: it is the setting that does not apply
    default = AdapterConfig.model_fields[option].default
    if default is not None:
        with pytest.raises(ValidationError, match=f"for method '{method}'"):
            AdapterConfig(method=method, **{option: default})
    assert AdapterConfig(method=method, **{option: None}) == AdapterConfig(method=method)  # null: not set


@pytest.mark.parametrize("method", sorted(READS))
def test_defaults_never_trigger_and_the_dump_validates_again(method):
    cfg = AdapterConfig(method=method)
    dumped = cfg.model_dump(mode="json")
    assert set(dumped) == {"method", "head_modules"} | READS[method]
    assert AdapterConfig.model_validate(dumped) == cfg


def test_assigning_an_option_the_method_does_not_read_is_rejected():
    cfg = AdapterConfig(method="normtune")
    with pytest.raises(ValidationError, match="for method 'normtune'"):
        cfg.r = 4
    assert "r" not in cfg.model_fields_set


def test_dropping_unread_keeps_what_the_method_reads():
    carried = {"method": "normtune", "r": 4, "alpha": 8.0, "target_modules": ["qkv"], "train_head": False,
               "head_modules": ["head"]}
    cfg = AdapterConfig.dropping_unread(carried)
    assert cfg.model_fields_set == {"method", "train_head", "head_modules"}
    assert (cfg.train_head, cfg.head_modules) == (False, ["head"])
    with pytest.raises(ValidationError, match="r\n.*LoRA ranks must be >= 1"):
        AdapterConfig.dropping_unread({"method": "lora", "r": 0})  # what the method reads is still checked


def test_method_names_come_from_the_registry(monkeypatch):
    with pytest.raises(ValidationError, match=r"unknown adapter method 'lorra'\. Did you mean 'lora'\?.*full, hybrid"):
        AdapterConfig(method="lorra")
    # a newly registered method is valid at once, with the options it declares
    reg: Registry = Registry("adapter method")
    for name in ADAPTERS.names():
        reg.register(name, ADAPTERS.get(name))
    monkeypatch.setattr(methods_module, "ADAPTERS", reg)
    methods_module.register_adapter("lora_nohead", True, "test", ("r",))(lambda model, cfg, heads: None)
    assert AdapterConfig(method="lora_nohead", r=3).r == 3
    with pytest.raises(ValidationError, match=r"applies to hybrid, lora and normtune only; remove it \(or set it to null\) for method 'lora_nohead'"):
        AdapterConfig(method="lora_nohead", train_head=False)
    with pytest.raises(ValueError, match=r"unknown options \['rank'\]"):
        methods_module.register_adapter("bad", False, "test", ("rank",))


def test_checkpoint_written_with_every_option_still_loads(tmp_path):
    """Checkpoints of earlier versions recorded every option for every method (``r: 8`` for normtune)."""
    model = apply_adapter(fresh("micro_vit"), AdapterConfig(method="normtune"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    save_adapter(model, tmp_path / "ckpt")
    meta_file = tmp_path / "ckpt" / "bayespeft_meta.json"
    meta = json.loads(meta_file.read_text())
    assert "r" not in meta["adapter"]
    meta["adapter"].update(r=8, alpha=16.0, dropout=0.0, target_modules=None)
    meta_file.write_text(json.dumps(meta))
    loaded = load_adapter(fresh("micro_vit"), tmp_path / "ckpt")
    assert loaded.adapter_config == AdapterConfig(method="normtune")
    x = inputs(model)
    torch.testing.assert_close(loaded.eval()(**x), model.eval()(**x), rtol=0, atol=0)
