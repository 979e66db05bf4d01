"""``benchmarks/gpu_check.{sh,py}`` without a GPU: the tolerance check on hand-made metrics, the clear failure
when CUDA is missing, and the ``--device cpu --smoke`` self-test end to end (every part runs and reports)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def metrics(acc=0.5, nll=1.0, ece=0.1, n=20):
    return {"acc": acc, "nll": nll, "ece": ece, "n": n}


def test_compare_counts_flips_and_relative_nll(gpu_check):
    fp32, bf16 = gpu_check.TOLERANCES["fp32"], gpu_check.TOLERANCES["bf16"]
    ref = {"map": metrics(), "laplace": metrics(acc=0.6, nll=2.0)}
    assert gpu_check.compare(ref, ref, fp32) == []
    one_flip = {"map": metrics(acc=0.55), "laplace": metrics(acc=0.6, nll=2.0)}  # 1 of 20 predictions changed
    assert gpu_check.compare(ref, one_flip, fp32) == []
    two = gpu_check.compare(ref, {"map": metrics(acc=0.6), "laplace": ref["laplace"]}, fp32)
    assert len(two) == 1 and two[0].startswith("map: accuracy 0.6000 vs 0.5000") and "2 predictions changed" in two[0]
    assert gpu_check.compare(ref, {"map": metrics(acc=0.6), "laplace": ref["laplace"]}, bf16) == []  # 3 allowed
    nll_off = {"map": metrics(), "laplace": metrics(acc=0.6, nll=2.1)}  # 5 % off
    assert [p.split(" (")[0] for p in gpu_check.compare(ref, nll_off, fp32)] == ["laplace: NLL 2.1000 vs 2.0000 on the CPU"]
    assert gpu_check.compare(ref, nll_off, bf16) == []
    assert gpu_check.compare(ref, {"map": metrics(ece=0.2), "laplace": ref["laplace"]}, fp32)[0].startswith("map: ECE")
    assert gpu_check.compare(ref, {"map": metrics()}, bf16) == ["laplace: present in only one run"]
    assert "non-finite" in gpu_check.compare(ref, {"map": metrics(nll=math.nan), "laplace": ref["laplace"]}, bf16)[0]


def test_missing_cuda_fails_clearly(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--device", "cuda"])
    assert e.value.code == 2
    assert "gpu_check: CUDA is not available" in capsys.readouterr().err
    assert gpu_check.require_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_shell_script_refuses_without_cuda():
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: CUDA is not available" in proc.stderr and "--device cpu --smoke" in proc.stderr


def test_cpu_smoke_runs_every_part(gpu_check, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["problems"] == [] and list(report["tiny"]) == ["arc_phi2_lora_laplace.yaml"]
    arc = report["tiny"]["arc_phi2_lora_laplace.yaml"]
    assert set(arc["cpu"]) == {"map", "laplace"} and arc["cpu"]["map"]["n"] == 12  # max_test of the tiny config
    for prec in ("fp32", "bf16"):  # on the CPU, bf16 autocast falls back to fp32: the same run, the same metrics
        assert arc[prec]["problems"] == [] and arc[prec]["metrics"] == arc["cpu"]
    v = report["vit"]
    assert v["images"] == 64 and v["epoch_s"] > 0 and v["images_per_s"] == pytest.approx(v["images"] / v["epoch_s"], rel=0.5)
    assert v["peak_memory_bytes"] > 0 and v["kfac_fit_s"] > 0 and v["kfac_fit_vs_epoch"] == pytest.approx(v["kfac_fit_s"] / v["epoch_s"])
    assert v["chains_4_vs_1"] == pytest.approx(v["chains_4_vectorized_s"] / v["chains_1_s"])  # ratios, not timings
    assert v["chains_4_sequential_vs_1"] == pytest.approx(v["chains_4_sequential_s"] / v["chains_1_s"])
    text = capsys.readouterr().out
    assert "tiny arc_phi2_lora_laplace.yaml: fp32 ok, bf16 ok" in text and "images/s" in text
    assert "4 vectorised chains" in text and "4 sequential" in text


def test_sampled_predictives_get_the_wider_tolerance(gpu_check):
    fp32 = gpu_check.TOLERANCES["fp32"]
    ref = {"map": metrics(), "sgmcmc": metrics()}
    ece_off = {"map": metrics(ece=0.17), "sgmcmc": metrics(ece=0.17)}  # 0.07 apart: a sample's gap, not a map's
    assert [p.split(":")[0] for p in gpu_check.compare(ref, ece_off, fp32)] == ["map"]
    far = {"map": metrics(), "sgmcmc": metrics(ece=0.21)}  # 0.11 apart: outside SAMPLED too
    assert [p.split(":")[0] for p in gpu_check.compare(ref, far, fp32)] == ["sgmcmc"]
    assert gpu_check.tolerance_for("sgmcmc", gpu_check.TOLERANCES["bf16"]) == gpu_check.Tolerance(3.0, 0.10, 0.10)


def test_only_and_skip_vit_select_parts(gpu_check, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--skip-vit", "--only", "arc_phi2_lora_laplace",
                           "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["tiny"]) == ["arc_phi2_lora_laplace.yaml"] and "vit" not in report
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--device", "cpu", "--smoke", "--skip-vit", "--only", "digits_lora"])
    assert exc.value.code == 2 and "--only names no tiny config digits_lora" in capsys.readouterr().err


def test_a_failing_config_is_reported_and_the_others_run(gpu_check, tmp_path, monkeypatch):
    def boom(config, device, precision, root, tokenizers):
        raise RuntimeError("CUDA error: an illegal memory access")
    monkeypatch.setattr(gpu_check, "run_tiny", boom)
    out = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--skip-vit", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["problems"] == [f"arc_phi2_lora_laplace.yaml [{p}] failed: RuntimeError: CUDA error: an illegal "
                                  "memory access" for p in ("fp32", "bf16")]
