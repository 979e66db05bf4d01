"""The quick commands (`--help`, `list`, `config`, `validate`) import no heavy library (issue 11: CLI start-up).

The commands run in a fresh interpreter the way the ``bayespeft`` console script runs them (``bayespeft.cli.main``),
and the modules loaded when they finish are read from ``sys.modules``: importing torch alone costs seconds and
~700 MB, so one stray module-level import anywhere on these paths is caught here (timings are printed by
``benchmarks/cli_start.py``, never asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "torchvision", "transformers", "timm", "peft", "datasets", "ray", "matplotlib", "scipy", "sklearn",
         "pandas", "safetensors", "arviz_stats"}

#: run ``bayespeft ARGS`` for each ARGS in $COMMANDS (a JSON list) in this one process, like the console script;
#: print the exit statuses and the top-level packages loaded at the end as JSON on the last line of stdout
WRAPPER = """
import contextlib, io, json, os, sys
from bayespeft.cli import main
statuses = []
for args in json.loads(os.environ["COMMANDS"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            statuses.append(main(args))
        except SystemExit as e:  # --help
            statuses.append(e.code)
print(json.dumps({"statuses": statuses, "loaded": sorted({name.split(".")[0] for name in sys.modules})}))
"""

#: every config shipped in configs/ that is a whole experiment (not a sweep, an overlay or a shared base)
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")
                 if not {"sweeps", "overlays", "defaults"} & set(p.parts))


def run_cli(*commands: list[str]) -> tuple[list[int], set[str], str]:
    """``(exit statuses, top-level packages loaded, stderr)`` of ``commands`` run in one fresh interpreter."""
    env = {**os.environ, "COMMANDS": json.dumps(commands), "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", WRAPPER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["statuses"], set(out["loaded"]), proc.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["config"], ["config", "sgmcmc"],
    *(["list", what] for what in ("models", "datasets", "methods", "structures", "samplers", "schedules")),
], ids=" ".join)
def test_quick_command_imports_no_heavy_library(args):
    (status,), loaded, err = run_cli(args)
    assert status == 0, err
    assert {"bayespeft", "argparse"} <= loaded  # what was loaded is really read
    assert not loaded & HEAVY, f"`bayespeft {' '.join(args)}` imported {sorted(loaded & HEAVY)}"


def test_validating_every_shipped_config_imports_no_heavy_library():
    assert {"configs/cifar10/resnet18_sgld.yaml", "configs/digits/lora.yaml", "configs/glue/mrpc_roberta_lora.yaml",
            "configs/arc/phi2_lora_laplace.yaml", "configs/tiny/cifar100_wrn28_10_sam_sgld_r1.yaml"} <= set(CONFIGS)
    statuses, loaded, err = run_cli(*(["validate", cfg] for cfg in CONFIGS))
    assert statuses == [0] * len(CONFIGS), err
    assert "yaml" in loaded and "pydantic" in loaded
    assert not loaded & HEAVY, f"`bayespeft validate` imported {sorted(loaded & HEAVY)}"


def test_bad_configs_fail_in_one_line_without_heavy_imports():
    # unknown names and bad sampler options are found from the light registries and option checks
    cfg = "configs/cifar10/resnet18_sgld.yaml"
    sghmc = ["--set", "sgmcmc.sampler=sghmc"]
    statuses, loaded, err = run_cli(
        ["validate", cfg, *sghmc, "--set", "sgmcmc.options.friction=1.5"],
        ["validate", cfg, *sghmc, "--set", "sgmcmc.options.rho=1"],
        ["validate", cfg, "--set", "model.name=resnet19_cifar"], ["validate", cfg, "--set", "data.name=cifar11"],
        ["validate", cfg, "--set", "adapter.method=lorra"], ["validate", cfg, "--set", "sgmcmc.sampler=sgdl"],
        ["validate", "configs/laplace/mrpc_roberta_lora_kfac.yaml", "--set", "laplace.structure=kfca"],
        ["config", "modle"],
    )
    assert statuses == [2] * 8
    assert err.count("error: ") == 8 and "Traceback" not in err, err
    for needle in ["friction must lie in (0, 1]", "has no option(s) ['rho']; allowed options: ['friction', 'noise",
                   "Did you mean 'resnet18_cifar'?", "Did you mean 'cifar10'?", "Did you mean 'lora'?",
                   "Did you mean 'sgld'?", "Did you mean 'kfac'?", "did you mean 'model'?"]:
        assert needle in err
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_python_dash_m_runs_the_cli_without_heavy_imports(tmp_path):
    """``python -m bayespeft`` is the ``bayespeft`` command (its exit status and its output), and ``--help`` through
    it imports no heavy library either (``-X importtime`` lists every module the interpreter imported)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}

    def python_m(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-X", "importtime", "-m", "bayespeft", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    helped = python_m("--help")
    assert helped.returncode == 0 and "validate" in helped.stdout and "quickstart" in helped.stdout
    imported = {ln.split("|")[-1].strip().split(".")[0] for ln in helped.stderr.splitlines() if "|" in ln}
    assert {"bayespeft", "argparse"} <= imported and not imported & HEAVY, sorted(imported & HEAVY)
    bad = python_m("validate", "configs/tiny/digits_lora.yaml", "--set", "train.lrr=1")
    assert bad.returncode == 2 and "unknown key 'train.lrr'" in bad.stderr and "Traceback" not in bad.stderr
