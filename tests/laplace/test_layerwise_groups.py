"""Group discovery for layer-wise Laplace on the real (tiny, offline) backbones with each adapter method."""

from __future__ import annotations

import functools
import re
import warnings

import pytest
import torch

from bayespeft.adapters import AdapterConfig, apply_adapter
from bayespeft.laplace.groups import discover_groups, select_groups
from bayespeft.models import build_model
from bayespeft.models.tiny import tiny_model_config, tiny_tokenizer


@functools.lru_cache(maxsize=None)
def adapted(name: str, method: str):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(name), 3, tokenizer=tiny_tokenizer(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return apply_adapter(model, AdapterConfig.dropping_unread({"method": method, "r": 2}))


HF_LAYER = r"vit\.(?:layers|encoder\.layer)\.{}"

# (backbone, method, by) -> expected group names in order (regexes, written by hand from the architectures)
EXPECTED = {
    ("micro_vit", "lora", "block"): ["blocks.0", "blocks.1", "head"],
    ("micro_vit", "normtune", "block"): ["blocks.0", "blocks.1", "fc_norm", "head"],
    ("micro_vit", "full", "block"): [r"cls_token\+pos_embed\+patch_embed", "blocks.0", "blocks.1", "fc_norm", "head"],
    ("micro_vit", "lora", "module"): [r"blocks\.0\.attn\.qkv", r"blocks\.1\.attn\.qkv", "head"],
    ("micro_vit", "hybrid", "module"): [
        r"blocks\.0\.norm1", r"blocks\.0\.attn\.qkv", r"blocks\.0\.norm2",
        r"blocks\.1\.norm1", r"blocks\.1\.attn\.qkv", r"blocks\.1\.norm2", "fc_norm", "head",
    ],
    ("vit_tiny_patch16_224", "lora", "block"): [r"blocks\.0", "head"],
    ("vit_tiny_patch16_224", "hybrid", "block"): [r"blocks\.0", "norm", "head"],
    ("hf_vit", "lora", "block"): [HF_LAYER.format(0), HF_LAYER.format(1), "classifier"],
    ("hf_vit", "normtune", "block"): [HF_LAYER.format(0), HF_LAYER.format(1), r"vit\.layernorm", "classifier"],
    ("hf_vit", "lora", "module"): [
        HF_LAYER.format(0) + r"\.attention\.(?:attention\.)?q(?:uery|_proj)",
        HF_LAYER.format(0) + r"\.attention\.(?:attention\.)?v(?:alue|_proj)",
        HF_LAYER.format(1) + r"\.attention\.(?:attention\.)?q(?:uery|_proj)",
        HF_LAYER.format(1) + r"\.attention\.(?:attention\.)?v(?:alue|_proj)",
        "classifier",
    ],
    ("roberta-base", "lora", "block"): [r"roberta\.encoder\.layer\.0", r"roberta\.encoder\.layer\.1", "classifier"],
    ("roberta-base", "normtune", "block"): [
        r"roberta\.embeddings\.LayerNorm", r"roberta\.encoder\.layer\.0", r"roberta\.encoder\.layer\.1", "classifier",
    ],
    ("resnet18_cifar", "lora", "block"): ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"],
    ("resnet18_cifar", "full", "block"): [r"conv1\+bn1", "layer1", "layer2", "layer3", "layer4", "fc"],
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=lambda k: "-".join(k))
def test_groups_partition_the_trainable_parameters_with_user_facing_names(key):
    name, method, by = key
    model = adapted(name, method)
    groups = discover_groups(model, by)
    assert len(groups) == len(EXPECTED[key]), [g.name for g in groups]
    for g, pattern in zip(groups, EXPECTED[key]):
        assert re.fullmatch(pattern, g.name), (g.name, pattern)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    listed = [n for g in groups for n in g.param_names]
    assert sorted(listed) == sorted(trainable)  # every trainable parameter exactly once
    for g in groups:
        assert g.n_params == sum(trainable[n] for n in g.param_names)
        if g.kind == "block":  # a block group's parameters live under its module path (PEFT infixes aside)
            assert all(f".{g.name}." in "." + n for n in g.param_names), g
    depths = [g.depth for g in groups]
    assert depths == sorted(depths) and groups[-1].kind == "head" and depths[-1] > depths[-2]
    blocks = [g for g in groups if g.kind == "block"]
    if by == "block":
        assert [g.depth for g in blocks] == list(range(len(blocks)))


def test_unknown_or_empty_group_selection_lists_the_available_groups():
    groups = discover_groups(adapted("micro_vit", "lora"))
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['blocks\.7'\]; available groups: \['blocks\.0', 'blocks\.1', 'head'\]"):
        select_groups(groups, ["blocks.7"])
    with pytest.raises(ValueError, match="no group selected; available groups"):
        select_groups(groups, [])
    assert [g.name for g in select_groups(groups, "head")] == ["head"]
    with pytest.raises(ValueError, match="group must be 'block' or 'module'"):
        discover_groups(adapted("micro_vit", "lora"), "layer")


def test_a_model_without_trainable_parameters_is_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        discover_groups(model)


def test_a_network_without_a_block_stack_is_grouped_by_top_level_modules(ref):
    groups = discover_groups(ref.MLP())
    assert [(g.name, g.depth) for g in groups] == [("body", 0), ("head", 1)]


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


class _Staged(torch.nn.Module):
    """``stages`` holds two stages, each a Sequential of blocks: only the outermost stack (``stages``) counts."""

    def __init__(self):
        super().__init__()
        self.stages = torch.nn.Sequential(*(torch.nn.Sequential(_Block(), _Block()) for _ in range(2)))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.stages(x))


def test_only_the_outermost_block_stack_defines_the_blocks():
    groups = discover_groups(_Staged())
    assert [(g.name, g.depth, len(g.param_names)) for g in groups] == [("stages.0", 0, 4), ("stages.1", 1, 4), ("head", 2, 2)]
