"""A layer-wise run is keyed by what its data holds, not where it lies: the same files under another ``data.root``
resume the same run; a copy with three test labels edited is another run (another default directory, and an
existing directory of the unedited data refuses it, naming ``data_fingerprint``)."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from bayespeft.config import load_config
from bayespeft.errors import RunError
from bayespeft.experiments.layerwise import default_out, fingerprint, layerwise_settings, resume_state
from bayespeft.experiments.run import build
from bayespeft.testing import py2_dump, write_cifar10


def _edit_test_labels(root, n):
    path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"labels"] = [(v + 1) % 10 if i < n else v for i, v in enumerate(d[b"labels"])]
    py2_dump(d, path)


def test_layerwise_key_follows_the_data_contents(tmp_path):
    write_cifar10(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    _edit_test_labels(tmp_path / "c", 3)
    keys, outs = {}, {}
    for name in "abc":
        cfg_file = tmp_path / f"{name}.yaml"
        cfg_file.write_text(
            f"name: lw\ndata: {{name: cifar10, root: {tmp_path / name}, verify_checksums: false}}\n"
            "model: {name: micro_vit, pretrained: false}\nadapter: {method: normtune}\n"
            f"output: {{root: {tmp_path / 'runs'}}}\n")
        cfg = load_config(cfg_file)
        lc = layerwise_settings(cfg)
        keys[name] = fingerprint(cfg, build(cfg), lc)
        outs[name] = default_out(cfg, keys[name])
    assert set(keys["a"]["data_fingerprint"]) == {"train", "test"}
    assert keys["a"] == keys["b"] and outs["a"] == outs["b"]
    assert keys["c"]["data_fingerprint"]["train"] == keys["a"]["data_fingerprint"]["train"]
    assert keys["c"]["data_fingerprint"]["test"] != keys["a"]["data_fingerprint"]["test"]
    assert outs["c"] != outs["a"]
    out = tmp_path / "runs" / "lw-a"
    out.mkdir(parents=True)
    (out / "layer_wise_results.json").write_text(json.dumps({"status": "running", "fingerprint": keys["a"], "groups": []}))
    assert resume_state(out, keys["b"])[0]["status"] == "running"
    with pytest.raises(RunError, match=r"other settings \(differing: data_fingerprint\)"):
        resume_state(out, keys["c"])
