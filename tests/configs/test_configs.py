"""The shipped experiment configs (``configs/`` at the repository root): every file validates, the shared fragments
are all used, every full-scale config has a tiny CPU variant that keeps its method, and each tiny variant runs end
to end through the CLI (``bayespeft train`` -> ``sample --checkpoint`` / ``laplace --checkpoint``) on small files
written in the real CIFAR / GLUE / ARC formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bayespeft.cli import main
from bayespeft.config import ExperimentConfig, load_config, read_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FRAGMENT_DIRS = ("defaults", "overlays")
#: sweep files and their bases are checked by tests/sweep/test_study_configs.py
SWEEPS = CONFIGS / "sweeps"


def is_fragment(path: Path) -> bool:
    return any(part in FRAGMENT_DIRS for part in path.relative_to(CONFIGS).parts)


ALL = sorted(p for p in CONFIGS.rglob("*.yaml") if SWEEPS not in p.parents)
EXPERIMENTS = [p for p in ALL if not is_fragment(p)]
TINY = [p for p in EXPERIMENTS if p.relative_to(CONFIGS).parts[0] == "tiny"]
FULL = [p for p in EXPERIMENTS if p not in TINY]


def rel(p: Path) -> str:
    return str(p.relative_to(CONFIGS))


def base_chain(path: Path) -> list[Path]:
    """Every file reached through ``base:`` from ``path`` (depth first, in merge order), ``path`` excluded."""
    raw = yaml.safe_load(path.read_text()) or {}
    bases = raw.get("base") or []
    out: list[Path] = []
    for b in [bases] if isinstance(bases, str) else bases:
        p = (path.parent / b).resolve()
        out += [*base_chain(p), p]
    return out


def test_the_config_tree_is_there():
    assert len(FULL) >= 7 and len(TINY) >= 7 and any(is_fragment(p) for p in ALL)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=rel)
def test_experiment_config_validates(path):
    cfg = load_config(path)
    assert cfg.sgmcmc is not None or cfg.laplace is not None or cfg.layerwise is not None, \
        "a shipped experiment samples, fits a Laplace or runs the layer-wise analysis"


@pytest.mark.parametrize("path", [p for p in ALL if is_fragment(p)], ids=rel)
def test_fragment_is_used_and_names_only_sections(path):
    users = [p for p in EXPERIMENTS if path.resolve() in base_chain(p)]
    assert users, f"{rel(path)} is not the base of any experiment config"
    raw = read_yaml(path)
    assert set(raw) <= set(ExperimentConfig.model_fields), sorted(set(raw) - set(ExperimentConfig.model_fields))


def _full_of(tiny: Path) -> Path:
    fulls = [p for p in base_chain(tiny) if p in {f.resolve() for f in FULL}]
    assert fulls, f"{rel(tiny)} does not derive from a full-scale config"
    return fulls[-1]  # the most specific one


@pytest.mark.parametrize("path", FULL, ids=rel)
def test_full_config_has_a_tiny_variant_with_the_same_method(path):
    tinies = [t for t in TINY if _full_of(t) == path.resolve()]
    assert len(tinies) == 1, f"{rel(path)} needs exactly one tiny variant under configs/tiny, found {tinies}"
    full, tiny = load_config(path), load_config(tinies[0])
    assert (tiny.data.name, tiny.model.name) == (full.data.name, full.model.name)
    for section, keys in (("sgmcmc", ("sampler", "schedule", "options", "temperature", "init", "prior_center")),
                          ("laplace", ("structure", "subset", "curvature", "prior_method", "predictive", "link")),
                          ("layerwise", ("structure", "curvature", "group", "groups", "prior", "predictive", "link"))):
        f, t = getattr(full, section), getattr(tiny, section)
        assert (f is None) == (t is None)
        if f is not None:
            assert {k: getattr(t, k) for k in keys} == {k: getattr(f, k) for k in keys}
    assert tiny.model.pretrained is False and (tiny.data.max_train or math.inf) <= 64
    if full.data.name.startswith("cifar"):
        assert full.data.download
        # the SG-MCMC CIFAR studies sample the full network; the layer-wise study is the LoRA ViT one
        assert full.adapter.method == ("lora" if full.layerwise is not None else "full")


# ---- tiny variants end to end --------------------------------------------------------------------------------------
@pytest.fixture()
def overrides(data_root, tmp_path, no_network):
    """The tiny variants run as shipped (offline: no ``data.download`` override) on files written in the real formats
    (whose md5s are not the official ones, hence ``verify_checksums=false``)."""
    from bayespeft.assets import find_minilm_dir

    def make(name: str, plots: bool = False) -> list[str]:
        out = ["--set", f"data.root={data_root}", "--set", "data.verify_checksums=false",
               "--set", f"output.root={tmp_path}", "--set", f"output.reliability_plots={str(plots).lower()}",
               "--set", "train.progress=false"]
        if "mrpc" in name:
            out += ["--set", f"model.tokenizer={find_minilm_dir()}"]
        if "arc" in name:
            out += ["--set", f"model.tokenizer={data_root / 'tokenizers' / 'bpe'}"]
        return out

    return make


def cli(capsys, *argv: str) -> Path:
    capsys.readouterr()
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("run directory: ")]
    assert len(lines) == 1, out
    return Path(lines[0].removeprefix("run directory: "))


def check_sample_run(run_dir: Path, plots: bool = False) -> dict:
    """The contents every `bayespeft sample` run directory must have, and a verdict consistent with its R-hats."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sg = metrics["sgmcmc"]
    label = sg["label"]
    assert set(sg["splits"]) == set(metrics["map"]) and "test" in sg["splits"]
    for m in (*sg["splits"].values(), *sg["single"].values(), *metrics["map"].values()):
        assert 0 <= m["acc"] <= 1 and m["nll"] > 0 and 0 <= m["ece"] <= 1
    store = json.loads((run_dir / "samples" / "index.json").read_text())
    entries = (run_dir / "samples" / "samples.jsonl").read_text().splitlines()
    files = sorted((run_dir / "samples").glob("chain*/draw*.safetensors"))
    assert len(files) == len(entries) >= sg["n_samples"] > 0
    assert store["metadata"]["sampler"]["sampler"] == label
    diag = json.loads((run_dir / "diagnostics.json").read_text())
    assert diag["diverged"] == {}
    v = diag["verdict"]
    assert v is not None, diag["verdict_text"]  # every tiny config keeps >= 4 draws per chain
    rhats = {k: s["rhat"] for k, s in diag["summary"].items() if k not in v["constant"]}
    ess = {k: min(s["ess_bulk"], s["ess_tail"]) / v["n_chains"] for k, s in diag["summary"].items() if k not in v["constant"]}
    assert v["rhat_max"] == pytest.approx(max(rhats.values())) and v["ess_per_chain_min"] == pytest.approx(min(ess.values()))
    ok_ess = v["ess_per_chain_min"] >= v["min_ess_per_chain"]
    assert v["strict"] == (v["rhat_max"] <= v["rhat_strict"] and ok_ess)
    assert v["lenient"] == (v["rhat_max"] <= v["rhat_lenient"] and ok_ess)
    assert diag["verdict_text"].startswith("PASS" if v["lenient"] else "FAIL")
    if plots:
        names = {p.name for p in (run_dir / "plots").glob("*.png")}
        splits = set(sg["splits"])
        want = {f"reliability_{p}_{s}.png" for p in ("map", f"{label}-sample", f"{label}-ensemble") for s in splits}
        assert {"trace.png", "autocorr.png"} | want <= names
        assert all((run_dir / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    else:
        assert not list((run_dir / "plots").glob("trace.png"))
    return metrics


def test_tiny_cifar10_resnet18(capsys, overrides):
    cfg = str(CONFIGS / "tiny" / "cifar10_resnet18_sgld.yaml")
    map_dir = cli(capsys, "train", cfg, *overrides("cifar10"))
    assert (map_dir / "checkpoint").is_dir()
    run = cli(capsys, "sample", cfg, "--checkpoint", str(map_dir), *overrides("cifar10"))
    metrics = check_sample_run(run)
    assert metrics["params"]["method"] == "normtune" and metrics["sgmcmc"]["n_samples"] == 8
    assert_same_map(map_dir, metrics)  # the warm start restored the tuned BN affine parameters and running stats


def assert_same_map(map_dir: Path, metrics: dict) -> None:
    trained = json.loads((map_dir / "metrics.json").read_text())["map"]
    for split, m in trained.items():
        assert metrics["map"][split]["nll"] == pytest.approx(m["nll"], rel=1e-5)


def test_tiny_cifar100_wrn_samplers_share_one_map(capsys, overrides):
    tiny = CONFIGS / "tiny"
    map_dir = cli(capsys, "train", str(tiny / "cifar100_wrn28_10_sgld.yaml"), *overrides("cifar100"))
    for sampler in ("sgld", "sam_sgld", "sam_sgld_r1"):
        run = cli(capsys, "sample", str(tiny / f"cifar100_wrn28_10_{sampler}.yaml"), "--checkpoint", str(map_dir),
                  *overrides("cifar100"))
        metrics = check_sample_run(run)
        assert metrics["sgmcmc"]["label"] == sampler and metrics["params"]["method"] == "full"
        assert_same_map(map_dir, metrics)


def test_tiny_mrpc_roberta_lora_map_sgld_and_laplace(capsys, overrides):
    tiny = CONFIGS / "tiny"
    map_dir = cli(capsys, "train", str(tiny / "mrpc_roberta_lora.yaml"), *overrides("mrpc"))
    run = cli(capsys, "sample", str(tiny / "mrpc_roberta_lora.yaml"), "--checkpoint", str(map_dir),
              *overrides("mrpc", plots=True))
    metrics = check_sample_run(run, plots=True)
    assert metrics["params"]["method"] == "lora" and set(metrics["map"]) == {"test"}
    lap = cli(capsys, "laplace", str(tiny / "mrpc_roberta_lora_kfac.yaml"), "--checkpoint", str(map_dir),
              *overrides("mrpc"))
    lap_metrics = json.loads((lap / "metrics.json").read_text())
    assert lap_metrics["laplace"]["label"] == "laplace-kfac" and 0 <= lap_metrics["laplace"]["splits"]["test"]["acc"] <= 1


def test_tiny_digits_sample_trains_its_own_map(capsys, overrides):
    run = cli(capsys, "sample", str(CONFIGS / "tiny" / "digits_lora.yaml"), *overrides("digits"))
    metrics = check_sample_run(run)
    assert "train" in metrics and (run / "checkpoint").is_dir() and set(metrics["sgmcmc"]["splits"]) == {"test", "test_shift"}


def test_tiny_arc_phi2_lora_then_lowrank_kfac_laplace(capsys, overrides, data_root):
    """bayesian-lora's Phi-2/ARC example as configs: LoRA on q_proj, v_proj and lm_head of a random Phi, then low-rank
    KFAC Laplace with the evidence-tuned prior and the linearised predictive, with the flags the README shows."""
    from transformers import AutoTokenizer

    cfg = str(CONFIGS / "tiny" / "arc_phi2_lora_laplace.yaml")
    map_dir = cli(capsys, "train", cfg, *overrides("arc"))
    lap = cli(capsys, "laplace", cfg, "--checkpoint", str(map_dir), "--structure", "lowrank_kfac", "--prior", "marglik",
              "--predictive", "glm", *overrides("arc"))
    metrics = json.loads((lap / "metrics.json").read_text())
    assert_same_map(map_dir, metrics)  # the laplace run evaluates the trained adapters
    from safetensors import safe_open

    with safe_open(map_dir / "checkpoint" / "adapter_model.safetensors", "pt") as f:
        saved = list(f.keys())  # the LoRA factors only: not a copy of the frozen lm_head (262 MB per Phi-2 adapter)
    assert len(saved) == 10 and all(".lora_" in k for k in saved), saved
    vocab, r, width, layers = len(AutoTokenizer.from_pretrained(data_root / "tokenizers" / "bpe")), 8, 32, 2
    # LoRA A (r x in) + B (out x r) on q_proj and v_proj of every layer, and on lm_head (width -> vocab); nothing else
    assert metrics["params"]["trainable_params"] == layers * 2 * (2 * r * width) + r * (width + vocab)
    la = metrics["laplace"]
    assert la["label"] == "laplace-lowrank_kfac" and math.isfinite(la["log_marginal_likelihood"])
    assert la["prior_precision"][0] != pytest.approx(10.0, rel=1e-3)  # moved off the initial 1 / prior_var by the evidence
    test = la["splits"]["test"]
    assert test["n"] == 12 and 0 <= test["acc"] <= 1 and 0 < test["nll"] < math.inf and 0 <= test["ece"] <= 1
    post = json.loads((lap / "posterior" / la["label"] / "laplace.json").read_text())
    assert post["structure"] == "lowrank_kfac" and post["options"]["n_kfac"] == 4 and post["curvature"] == "fisher"
    assert len(post["param_names"]) == 10 and all(".lora_" in n for n in post["param_names"])
    assert sum(".lm_head.lora_" in n for n in post["param_names"]) == 2
    from safetensors.torch import load_file

    tensors = load_file(lap / "posterior" / la["label"] / "laplace.safetensors")
    # factors wider than lr_threshold=16 are rank-n_kfac roots: lm_head's output side (vocab) and the width-32 sides
    assert tuple(tensors["structure.backbone.base_model.model.lm_head.lora_B.default.G"].shape) == (vocab, 4)
    assert tuple(tensors["structure.backbone.base_model.model.lm_head.lora_A.default.A"].shape) == (width, 4)
    assert tuple(tensors["structure.backbone.base_model.model.lm_head.lora_A.default.G"].shape) == (r, r)


def test_tiny_cifar100_vit_lora_layerwise_train_then_analyze(capsys, overrides, tmp_path):
    cfg = str(CONFIGS / "tiny" / "cifar100_vit_b16_lora_layerwise.yaml")
    map_dir = cli(capsys, "train", cfg, *overrides("cifar100"))
    assert main(["layerwise", cfg, "--checkpoint", str(map_dir), "--out", str(tmp_path / "lw"), *overrides("cifar100")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "lw" / "layer_wise_results.json").read_text())
    assert res["status"] == "finished" and res["settings"]["n_samples"] == 3 and res["settings"]["structure"] == "diag"
    assert [g["name"] for g in res["groups"]] == ["blocks.0", "blocks.1", "head"]
    assert res["eval_splits"] == ["val", "test", "test_shift"] and len(res["greedy"]) == 1
    assert_same_map(map_dir, {"map": res["map"]})  # the layer-wise MAP block is the trained checkpoint's
    assert "ΔECE test [95%]" in out and "results: " in out
    assert main(["analyze", str(tmp_path / "lw")]) == 0
    summary = json.loads((tmp_path / "lw" / "analysis" / "analysis_summary.json").read_text())
    assert summary["n_runs"] == 1 and sorted(summary["ranking"]) == ["blocks.0", "blocks.1", "head"]
    assert (tmp_path / "lw" / "analysis" / "plots" / "greedy_curve.png").is_file()
