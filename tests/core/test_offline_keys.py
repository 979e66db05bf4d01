"""``model.offline`` decides only whether missing weights may be downloaded: it is no part of result keys, layer-wise
output keys or sweep run ids (which stay what they were before the key existed), and a run may be resumed or a
sampling run continued with it changed."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from bayespeft.config import dump_config, validate
from bayespeft.experiments.run import result_key
from bayespeft.experiments.sample import config_differences
from bayespeft.experiments.sweep.expand import run_id
from bayespeft.experiments.train import check_resumable

RAW = {"name": "k", "model": {"name": "micro_vit", "pretrained": False}, "adapter": {"method": "lora", "r": 2},
       "data": {"name": "digits"}}


def cfg_with(**model):
    raw = copy.deepcopy(RAW)
    raw["model"].update(model)
    return validate(raw)


def test_result_key_and_run_id_ignore_offline_and_equal_the_keys_without_it(tmp_path):
    built = SimpleNamespace(checkpoint="0" * 64)
    on, off, other = cfg_with(), cfg_with(offline=True), cfg_with(max_length=64)

    def key(cfg):
        return result_key(cfg, built, tmp_path, "map", "test", {})

    assert key(on) == key(off) != key(other)
    dump = on.model_dump(mode="json")
    assert run_id(dump, []) == run_id(off.model_dump(mode="json"), []) != run_id(other.model_dump(mode="json"), [])
    legacy = copy.deepcopy(dump)
    del legacy["model"]["offline"]  # a config dumped before model.offline existed
    assert run_id(legacy, []) == run_id(dump, [])


def test_resume_and_sample_continuation_accept_a_changed_offline(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg_with()))
    assert check_resumable(cfg_with(offline=True), run) == run
    with pytest.raises(Exception, match="model.max_length"):
        check_resumable(cfg_with(max_length=64), run)
    recorded = cfg_with().model_dump(mode="json")
    del recorded["model"]["offline"]  # a sampling run recorded before model.offline existed
    assert config_differences(recorded, cfg_with(offline=True).model_dump(mode="json")) == []
    assert config_differences(recorded, cfg_with(max_length=64).model_dump(mode="json")) != []
