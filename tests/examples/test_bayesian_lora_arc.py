"""``examples/bayesian_lora_arc.py --tiny`` end to end: bayesian-lora's Phi-2/ARC steps on a random Phi built offline.

Checked: every predictive's metrics are finite and in range; the prior variance tuned by gradient ascent on the
evidence is the interior optimum the independent grid brackets (not a grid edge); the example's hand-written
sampled predictive (upstream's code) agrees with ``linearized_predictive`` within Monte-Carlo error; factors wider
than ``lr_threshold`` are rank-``n_kfac`` roots.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "bayesian_lora_arc.py"


def load_example():
    spec = importlib.util.spec_from_file_location("bayesian_lora_arc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STDERR: dict[str, str] = {}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out_json = tmp_path_factory.mktemp("example") / "out.json"
    with contextlib.redirect_stderr(io.StringIO()) as err:
        out = load_example().main(["--tiny", "--json", str(out_json)])
    STDERR["tiny"] = err.getvalue()
    return out, out_json


def test_tiny_run_prints_no_transformers_bars_and_restores_them(tiny_run):
    """The toy model's one shard is written and read in milliseconds: no "Writing model shards" / "Loading weights"
    bars in the demo's output; the global transformers setting is as before afterwards."""
    from transformers.utils import logging as hf_logging

    assert "model shards" not in STDERR["tiny"] and "Loading weights" not in STDERR["tiny"], STDERR["tiny"]
    assert hf_logging.is_progress_bar_enabled()


def test_metrics_are_finite_for_every_predictive(tiny_run, capsys):
    out, out_json = tiny_run
    assert set(out["metrics"]) == {"pretrained", "map", "laplace", "laplace_linearized_predictive"}
    for m in out["metrics"].values():
        assert 0 <= m["acc"] <= 1 and 0 <= m["ece"] <= 1
        assert math.isfinite(m["nll"]) and m["nll"] > 0
    assert (out["n_train"], out["n_eval"]) == (32, 16)
    assert math.isfinite(out["LL"]) and out["LL"] < 0  # a sum of log-probabilities, not of probabilities
    assert out_json.is_file()


def test_evidence_tuned_prior_is_an_interior_optimum(tiny_run):
    out, _ = tiny_run
    grid, ev = torch.tensor(out["s2_grid"]), torch.tensor(out["evidence_grid"])
    assert all(math.isfinite(e) for e in out["evidence_grid"])
    best = int(ev.argmax())
    assert 0 < best < len(grid) - 1, f"grid optimum at the edge: s2 = {grid[best]}"
    # the gradient-tuned s2 lies between the grid optimum's neighbours and is at least as good as the grid optimum
    assert grid[best - 1] < out["s2"] < grid[best + 1]
    assert out["evidence_s2"] >= float(ev[best]) - 1e-6
    assert out["s2"] != pytest.approx(0.1, rel=1e-3)  # moved off upstream's initial prior_var


def test_sampled_predictive_matches_linearized_predictive(tiny_run):
    out, _ = tiny_run
    # 20,000 samples each: Monte-Carlo standard error of a probability <= 0.5 / sqrt(20000) ≈ 0.0035
    assert out["max_abs_diff_sampled_vs_linearized_predictive"] < 0.02
    la, lp = out["metrics"]["laplace"], out["metrics"]["laplace_linearized_predictive"]
    assert la["nll"] == pytest.approx(lp["nll"], abs=0.01)


def test_wide_factors_are_low_rank_roots(tiny_run):
    out, _ = tiny_run
    shapes = out["factor_shapes"]
    assert out["n_factors"] == 10  # q_proj, v_proj of 2 layers and lm_head, each LoRA A and B
    assert shapes["base_model.model.lm_head.lora_B.default"] == [[8, 8], [300, 4]]  # vocab 300 > lr_threshold 16
    for name, (a, s) in shapes.items():
        for side in (a, s):
            assert side[1] == 4 if side[0] > 16 else side == [8, 8], (name, side)


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_model_not_cached_offline_is_one_line_and_exit_2(empty_hub_cache, capsys):
    assert load_example().cli(["--model", "microsoft/phi-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model microsoft/phi-2: the model is not in the Hugging Face cache") and err.count("\n") == 1
    assert str(empty_hub_cache) in err and "HF_HUB_OFFLINE=1" in err and "`hf download microsoft/phi-2`" in err
    assert "--tiny" in err


def test_incomplete_model_directories_are_one_line_and_exit_2(tmp_path, capsys):
    from transformers import PhiConfig, PhiForCausalLM

    from bayespeft.models.tiny import bpe_tokenizer

    example = load_example()
    bpe_tokenizer(tmp_path / "tok")
    assert example.cli(["--model", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a complete model directory: no config.json; it holds tokenizer.json" in err
    PhiForCausalLM(PhiConfig(vocab_size=300, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                             num_attention_heads=1)).save_pretrained(tmp_path / "weights")
    capsys.readouterr()  # transformers' progress bar
    assert example.cli(["--model", str(tmp_path / "weights")]) == 2  # no tokenizer files
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a complete model directory: no tokenizer files; it holds config.json" in err
    (tmp_path / "weights" / "model.safetensors").unlink()
    for f in (tmp_path / "tok").iterdir():
        shutil.copy(f, tmp_path / "weights")
    assert example.cli(["--model", str(tmp_path / "weights")]) == 2  # no weights
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a complete model directory: OSError: " in err and "model.safetensors" in err
    assert example.cli(["--model", str(tmp_path / "nothere")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_the_script_itself_exits_2_without_a_traceback(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    res = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(
        f"error: --model {tmp_path}: not a complete model directory: no config.json and no tokenizer files; it is empty")


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    example = load_example()
    model, _ = example.build_tiny(tmp_path)
    capsys.readouterr()  # transformers' progress bar
    assert example.cli(["--model", model, "--data-root", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err
    # the model loaded (transformers' progress bar on stderr), then the data set is missing: one error line
    assert err.splitlines()[-1].startswith("error: ARC-Easy: data.root=") and "Traceback" not in err
