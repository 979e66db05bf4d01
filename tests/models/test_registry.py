"""Every registered backbone builds (tiny config), runs, and honours the TaskModel contract."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from bayespeft.models import MODELS, TaskModel, build_model, list_models, resolve_pretrained
from bayespeft.models.config import ModelConfig
from bayespeft.models.tiny import TINY, tiny_model_config, tiny_tokenizer

K = 3


def example_inputs(model: TaskModel, batch: int = 2) -> dict[str, torch.Tensor]:
    spec = model.input_spec
    if spec.kind == "image":
        return {"pixel_values": torch.randn(batch, spec.in_chans, spec.image_size, spec.image_size)}
    texts = ["Question: is the sky blue? Answer:", "Hi. Answer:", "a b c d e f g Answer:"][:batch]
    return dict(spec.tokenizer(texts, padding=True, truncation=True, max_length=spec.max_length, return_tensors="pt"))


def test_every_registered_model_has_a_tiny_config():
    assert sorted(TINY) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_build_and_forward(name):
    model = build_model(tiny_model_config(name), K, tokenizer=tiny_tokenizer(name)).eval()
    entry = MODELS.get(name)
    assert isinstance(model, TaskModel)
    assert model.name == name and model.family == entry.family and model.num_classes == K
    x = example_inputs(model)
    out = model(**x)
    assert out.shape == (2, K) and out.dtype == torch.float32 and torch.isfinite(out).all()
    modules = dict(model.named_modules())
    for h in model.head_names:  # qualified names valid in the TaskModel namespace
        assert h in modules
    if model.task == "multiple_choice":
        assert model.head_names == []
    else:
        assert len(model.head_names) == 1
        head_out = [m for n, m in modules[model.head_names[0]].named_modules() if isinstance(m, torch.nn.Linear)][-1]
        assert head_out.out_features == K
    inner = dict(model.backbone.named_modules())
    leaves = {n.rpartition(".")[2] for n in inner} | set(inner)
    assert model.default_targets and all(t in leaves for t in model.default_targets)
    spec = model.input_spec
    if spec.kind == "image":
        assert len(spec.mean) == len(spec.std) == spec.in_chans
        assert all(s > 0 for s in spec.std)
    else:
        assert spec.tokenizer.pad_token is not None and spec.tokenizer.padding_side == "right"
        assert spec.max_length == tiny_model_config(name).max_length


def test_image_models_accept_positional_input():
    model = build_model(tiny_model_config("micro_vit"), K).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x), model(pixel_values=x))


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ValidationError, match=r"unknown model 'vit_tiny'.*Known models: .*micro_vit.*resnet18_cifar"):
        ModelConfig(name="vit_tiny")


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("image_size", 1, "image_size must be an integer >= 2"),
        ("max_length", 0, "max_length must be a positive number of tokens"),
        ("path", " ", "path must be a non-empty path"),
        ("dtype", "float64", "float32"),
        ("unknown_key", 1, "Extra inputs are not permitted"),
    ],
)
def test_model_config_validation(field, value, pattern):
    with pytest.raises(ValidationError, match=pattern):
        ModelConfig(name="micro_vit", **{field: value})


def test_pretrained_default_depends_on_published_weights():
    assert resolve_pretrained(ModelConfig(name="vit_tiny_patch16_224")) is True
    assert resolve_pretrained(ModelConfig(name="micro_vit")) is False
    assert resolve_pretrained(ModelConfig(name="micro_vit", path="w.safetensors")) is True
    with pytest.raises(ValueError, match="resnet18_cifar has no published pretrained weights.*pretrained: false"):
        build_model(ModelConfig(name="resnet18_cifar", pretrained=True), 10)


@pytest.mark.parametrize("name", ["micro_vit", "resnet18_cifar", "vit_tiny_patch16_224"])
def test_a_weights_path_with_pretrained_false_is_refused_not_ignored(name):
    """For backbones whose model.path holds only weights, `pretrained: false` + `path` used to build random weights
    and ignore the path silently (a nonexistent path too)."""
    with pytest.raises(ValueError, match=rf"model.path \(/no/w.safetensors\) is given but model.pretrained is false, "
                                         rf"so {name} would be built with random weights.*remove model.path"):
        resolve_pretrained(ModelConfig(name=name, pretrained=False, path="/no/w.safetensors"))
    # a Hugging Face directory also gives the architecture (and tokenizer): path + random weights is meaningful there
    assert resolve_pretrained(ModelConfig(name="hf_text", pretrained=False, path="/some/dir")) is False


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_bad_num_classes(k):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model(tiny_model_config("micro_vit"), k)


def test_tokenizer_for_image_model_is_rejected():
    with pytest.raises(ValueError, match="tokenizer was given but micro_vit is an image backbone"):
        build_model(tiny_model_config("micro_vit"), K, tokenizer=object())


def test_bad_overrides_are_named():
    with pytest.raises(ValueError, match=r"model.overrides \['dept'\] not accepted"):
        build_model(tiny_model_config("micro_vit", overrides={"dept": 3}), K)
    with pytest.raises(ValueError, match=r"overrides \['depht'\] not accepted by wrn28_10; allowed"):
        build_model(tiny_model_config("wrn28_10", overrides={"depht": 10}), K)


def test_bfloat16_dtype():
    model = build_model(tiny_model_config("micro_vit", dtype="bfloat16"), K)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(torch.randn(2, 1, 8, 8, dtype=torch.bfloat16)).shape == (2, K)
