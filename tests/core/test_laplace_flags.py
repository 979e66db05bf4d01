"""``bayespeft laplace`` flags are validated like the config file (same one-line messages, no pydantic dump), subset
names are the backbone's own (with or without the adapter wrapper's prefix), and every example that `bayespeft
config` shows works."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from bayespeft.cli import main


def tiny(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(f"""
        name: tiny
        data: {{name: digits, max_train: 64, max_val: 32, max_test: 32}}
        model: {{name: micro_vit, pretrained: false}}
        adapter: {{method: lora, r: 2}}
        train: {{epochs: 1, progress: false}}
        output: {{root: {tmp_path / 'runs'}, reliability_plots: false}}
        """))
    return p


def run_dir_of(out: str) -> str:
    return [ln for ln in out.splitlines() if ln.startswith("run directory: ")][-1].removeprefix("run directory: ")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("laplace_flags")
    cfg = tiny(tmp)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", str(cfg)]) == 0
    return cfg, run_dir_of(buf.getvalue())


@pytest.mark.parametrize("flags, expect", [
    (["--structure", "kfacc"], r"laplace\.structure: unknown Laplace structure 'kfacc'\. Did you mean 'kfac'\?"),
    (["--prior", "bogus"], r"laplace\.prior_method: .*'marglik', 'gridsearch' or 'none'.*'bogus'"),
    (["--predictive", "glmm"], r"laplace\.predictive: .*'glm' or 'mc'"),
    (["--curvature", "hessian", "--link", "logit"], r"(?s)laplace\.curvature: .*'ggn' or 'fisher'.*laplace\.link: .*'probit' or 'mc'"),
])
def test_bad_flags_give_the_config_loaders_message(trained, capsys, flags, expect):
    cfg, run = trained
    capsys.readouterr()
    assert main(["laplace", str(cfg), "--checkpoint", run, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(expect, err), err
    assert "pydantic" not in err and "http" not in err and "validation error for" not in err, err
    assert " ".join(flags[:2]) in err.splitlines()[0]  # the first line names the flags as typed


def test_flags_are_checked_before_the_checkpoint_is_read(tmp_path, capsys):
    assert main(["laplace", str(tiny(tmp_path)), "--checkpoint", str(tmp_path / "none"), "--structure", "kfacc"]) == 2
    assert "Did you mean 'kfac'" in capsys.readouterr().err


def test_subset_flag_takes_backbone_names(trained, capsys):
    cfg, run = trained
    capsys.readouterr()
    assert main(["laplace", str(cfg), "--checkpoint", run, "--structure", "diag", "--prior", "none",
                 "--subset", "blocks.0.attn.qkv,head"]) == 0
    import json

    out = json.loads((Path(run_dir_of(capsys.readouterr().out)) / "metrics.json").read_text())
    assert out["laplace"]["label"] == "laplace-diag[blocks.0.attn.qkv+head]"


def test_gridsearch_prior_is_scored_under_the_evaluated_predictive(trained, capsys, monkeypatch):
    """``--prior gridsearch --predictive glm --link mc``: each δ is scored with the predictive that is then evaluated
    (``pred_method``/``link``/``n_samples``/``chunk_size`` of the config), not the default GLM + probit."""
    from bayespeft.laplace.posterior import LaplacePosterior

    cfg, run = trained
    seen = []
    real = LaplacePosterior.predict_loader

    def spy(self, loader, progress=None, **kwargs):
        seen.append(kwargs)
        return real(self, loader, progress=progress, **kwargs)

    monkeypatch.setattr(LaplacePosterior, "predict_loader", spy)
    capsys.readouterr()
    assert main(["laplace", str(cfg), "--checkpoint", run, "--structure", "diag", "--prior", "gridsearch",
                 "--predictive", "glm", "--link", "mc", "--set", "laplace.n_samples=7"]) == 0
    assert len(seen) == 21 + 1 and all(k["method"] == "glm" and k["link"] == "mc" and k["n_samples"] == 7 for k in seen)
    assert seen[0] == seen[-1]  # the 21 grid points (val), then the test split: the same predictive


# ---- the library's subset selection -------------------------------------------------------------------------------
def lora_micro_vit(method: str = "lora"):
    from bayespeft.adapters import AdapterConfig, apply_adapter
    from bayespeft.models import build_model
    from bayespeft.models.tiny import tiny_model_config

    ac = AdapterConfig(method=method, r=2) if method in ("lora", "hybrid") else AdapterConfig(method=method)
    return apply_adapter(build_model(tiny_model_config("micro_vit"), 10), ac)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_subset_names_relative_to_the_backbone(method):
    from bayespeft.laplace.subset import select_parameters

    model = lora_micro_vit(method)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    # independent answer: the backbone's own name of each parameter is what follows the wrapper's path
    wrapper = "backbone.base_model.model." if method == "lora" else "backbone."
    assert all(n.startswith(wrapper) for n in trainable)
    own = {n: n[len(wrapper):] for n in trainable}
    want_block1 = [n for n in trainable if own[n].startswith("blocks.1.")]
    want_qkv_head = [n for n in trainable if own[n].startswith(("blocks.0.attn.qkv.", "head."))]
    assert want_block1 and want_qkv_head
    # as the backbone names it, as the PEFT model names it (inside the TaskModel), or the full qualified name
    for prefix in ("", "base_model.model.", wrapper) if method == "lora" else ("", wrapper):
        assert [n for n, _ in select_parameters(model, prefix + "blocks.1.")] == want_block1
        got = [n for n, _ in select_parameters(model, [prefix + "blocks.0.attn.qkv", prefix + "head"])]
        assert got == want_qkv_head
    with pytest.raises(ValueError, match=r"selects no trainable parameter.*'blocks\.0\.") as e:
        select_parameters(model, "blocks.7.")
    assert "backbone." not in str(e.value)  # examples of valid names are given as the user writes them
    # a name is never matched in the middle: "attn.qkv" is not a prefix of any backbone name
    with pytest.raises(ValueError):
        select_parameters(model, "attn.qkv")


def test_subset_on_a_bare_peft_model():
    from bayespeft.laplace.subset import select_parameters

    peft_model = lora_micro_vit().backbone  # a peft.PeftModel around the timm network
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    want = [n for n in names if n.startswith("base_model.model.blocks.1.")]
    assert [n for n, _ in select_parameters(peft_model, "blocks.1.")] == want


# ---- `bayespeft config` examples ----------------------------------------------------------------------------------
def shown_examples() -> list[tuple[str, object, dict]]:
    from bayespeft.config import ExperimentConfig
    from bayespeft.config.describe import field_examples

    return list(field_examples(ExperimentConfig))


def test_config_shows_structured_examples_only(capsys):
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    examples = shown_examples()
    keys = {k for k, _, _ in examples}
    assert {"model.name", "model.overrides", "laplace.subset", "sgmcmc.options"} <= keys
    for line in lines:
        key = line.split(" ", 1)[0].rstrip(":")
        # every "e.g." shown comes from the field's checked examples (not free text that nobody tests)
        assert line.count("e.g.") == (1 if key in keys else 0), line
    subset_line = next(ln for ln in lines if ln.startswith("laplace.subset "))
    assert "blocks.1." in subset_line


@pytest.mark.parametrize("key, value, context", shown_examples(), ids=lambda v: str(v) if isinstance(v, str) else None)
def test_every_config_example_works(key, value, context, tmp_path):
    """Each example validates as a `--set` over a shipped config; examples of things that must also build or select
    (a backbone's overrides, a Laplace subset) are built / selected on a real model."""
    from bayespeft.config import apply_overrides, read_yaml, validate

    raw = read_yaml(tiny(tmp_path))
    sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in {**context, key: value}.items()]
    cfg = validate(apply_overrides(raw, sets), f"example {key}={value!r}")
    section, field = key.split(".")
    assert getattr(getattr(cfg, section), field) == value
    if key == "model.overrides":
        from bayespeft.data import dataset_info
        from bayespeft.models import build_model

        build_model(cfg.model, dataset_info(cfg.data.name).num_classes)
    if key == "laplace.subset":
        from bayespeft.experiments.run import build
        from bayespeft.laplace.subset import select_parameters

        assert select_parameters(build(cfg).model, value)


def test_link_with_the_mc_predictive_is_refused():
    """`--link` is a GLM option: given with `--predictive mc` it used to be ignored silently."""
    import pytest

    from bayespeft.config import load_config
    from bayespeft.experiments.laplace import with_laplace_flags

    cfg = load_config(str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs" / "digits" / "lora.yaml"))
    with pytest.raises(ValueError, match=r"--link probit applies to the GLM predictive only"):
        with_laplace_flags(cfg, {"predictive": "mc", "link": "probit"})
    assert with_laplace_flags(cfg, {"predictive": "glm", "link": "mc"}).laplace.link == "mc"
    assert with_laplace_flags(cfg, {"predictive": "mc"}).laplace.predictive == "mc"


def test_a_number_as_prior_flag_says_how_to_fix_the_prior():
    """`laplace --prior 2.5` (as `layerwise --prior 2.5` takes) used to get only 'should be marglik, gridsearch or
    none'; it now names the way to a fixed prior precision."""
    from pathlib import Path

    import pytest

    from bayespeft.config import load_config
    from bayespeft.experiments.laplace import with_laplace_flags

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "digits" / "lora.yaml"))
    for value in ("2.5", "-1", "1e-3"):
        with pytest.raises(ValueError, match=rf"--prior {value}: .*--prior none --set laplace.prior_precision={value}"):
            with_laplace_flags(cfg, {"prior": value})
    assert with_laplace_flags(cfg, {"prior": "none"}).laplace.prior_method == "none"
