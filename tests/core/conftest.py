"""Shared by the layer-wise command and analysis tests: one trained LoRA micro ViT and one finished layer-wise run."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.numpy import load_file

from bayespeft.cli import main

#: mc, few samples, diag: the fast path; n_boot small so the brute-force bootstrap of the tests stays quick
LW_ARGS = ["--structure", "diag", "--predictive", "mc", "--samples", "3", "--greedy", "1", "--set", "layerwise.n_boot=200"]


@pytest.fixture(scope="session")
def lw_trained(tmp_path_factory):
    """``(root, config path, run dir)``: a 1-epoch LoRA micro ViT on 64 digits (test + rotated test split)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lw")
    cfg = root / "tiny.yaml"
    cfg.write_text(textwrap.dedent(f"""
        name: tiny-lw
        data: {{name: digits, max_train: 64, max_val: 40, max_test: 48, batch_size: 32, shift: rotate}}
        model: {{name: micro_vit, pretrained: false}}
        adapter: {{method: lora, r: 2}}
        train: {{epochs: 1, lr: 0.005, seed: 3, progress: false}}
        output: {{root: {root / 'runs'}, reliability_plots: false}}
        """))
    assert main(["train", str(cfg)]) == 0
    (run,) = (root / "runs").glob("tiny-lw-*")
    return root, cfg, run


@pytest.fixture(scope="session")
def lw_cli(lw_trained):
    """``lw_cli(out_name, *flags) -> exit status`` of ``bayespeft layerwise`` on the trained run with LW_ARGS."""
    root, cfg, run = lw_trained

    def call(out: str, *extra: str) -> int:
        return main(["layerwise", str(cfg), "--checkpoint", str(run), *LW_ARGS, "--out", str(root / out), *extra])

    return call


@pytest.fixture(scope="session")
def lw_full(lw_trained, lw_cli):
    """``(results JSON, per-example arrays, out dir)`` of an uninterrupted run with plots."""
    assert lw_cli("full", "--set", "output.reliability_plots=true") == 0
    out = lw_trained[0] / "full"
    return json.loads((out / "layer_wise_results.json").read_text()), load_file(str(out / "per_example.safetensors")), out
