"""``laplace.groups``: where the raw network sits in a wrapper, and the groups' names, depths and messages
(tests/MUTATION.md, fourth pass). Expected groups are written out by hand from the module docstring's rules."""

from __future__ import annotations

import peft
import pytest
import torch
from torch import nn

from bayespeft.laplace.groups import ParamGroup, base_prefix, discover_groups, group_of, select_groups


def test_base_prefix_of_peft_models_bare_and_nested(ref):
    model = peft.get_peft_model(ref.BodyHead(), peft.LoraConfig(r=2, target_modules=["body"]))
    assert base_prefix(model) == (model.base_model.model, "base_model.model.")
    outer = nn.Module()
    outer.wrapper = model
    assert base_prefix(outer) == (model.base_model.model, "wrapper.base_model.model.")


def test_base_prefix_needs_both_markers(ref):
    half = ref.BodyHead()
    half.backbone_prefix = "backbone."  # a backbone_prefix without base_network is not a TaskModel
    assert base_prefix(half) == (half, "")
    holder = nn.Module()  # base_model.model without peft_config is not a PEFT model
    holder.base_model = nn.Module()
    holder.base_model.model = ref.BodyHead()
    assert base_prefix(holder) == (holder, "")
    tagged = ref.BodyHead()
    tagged.peft_config = {}  # peft_config without base_model.model neither
    assert base_prefix(tagged) == (tagged, "")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class Tiny(nn.Module):
    """A ViT-like shape: root-owned ``cls_token``, a stem, one block stack, a final norm, a head."""

    head_names = ["head"]

    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(4))
        self.stem = nn.Linear(4, 4)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3, bias=False)


def _summary(groups):
    return [(g.name, g.depth, g.kind) for g in groups]


def test_block_groups_depths_and_single_parameter_head():
    assert _summary(discover_groups(Tiny())) == [
        ("cls_token+stem", -1, "other"), ("blocks.0", 0, "block"), ("blocks.1", 1, "block"), ("norm", 2, "other"),
        ("head", 3, "head")]  # the head has one parameter: its name is its module's


def test_only_the_stem_trainable_is_one_pre_block_group():
    model = Tiny().requires_grad_(False)
    model.stem.requires_grad_(True)
    assert _summary(discover_groups(model)) == [("stem", -1, "other")]


def test_module_groups_put_root_parameters_of_the_backbone_together():
    class Wrapped(nn.Module):  # a TaskModel's shape: backbone_prefix and base_network
        head_names: list[str] = []

        def __init__(self):
            super().__init__()
            self.backbone = Tiny()
            self.backbone.extra = nn.Parameter(torch.zeros(2))
            self.backbone_prefix, self.base_network = "backbone.", self.backbone

    groups = discover_groups(Wrapped(), by="module")
    assert groups[0].name == "cls_token+extra" and groups[0].param_names == ("backbone.cls_token", "backbone.extra")
    assert [g.name for g in discover_groups(Tiny(), by="module")][0] == "cls_token"


def test_without_a_block_stack_top_modules_in_order_and_the_head_last():
    class Flat(nn.Module):
        head_names = ["head"]

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)  # registered first
            self.a, self.b = nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    assert _summary(discover_groups(Flat())) == [("a", 0, "block"), ("b", 1, "block"), ("head", 3, "head")]


def test_mixed_containers_are_not_block_stacks():
    from bayespeft.laplace.groups import block_stacks

    net = nn.Module()
    net.features = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2))  # children of two classes
    assert block_stacks(net) == []


def test_peft_parameter_dicts_are_dropped_from_display_names():
    from bayespeft.laplace.groups import display_name

    pre = "backbone.base_model.model."
    assert display_name(pre + "embed.lora_embedding_A.default", pre) == "embed"
    assert display_name(pre + "blocks.0.qkv.lora_magnitude_vector.default", pre) == "blocks.0.qkv"


def test_no_trainable_parameter_message():
    with pytest.raises(ValueError, match=r"^the model has no trainable parameters \(requires_grad=True\) to group; "
                       r"apply an adapter first$"):
        discover_groups(Tiny().requires_grad_(False))


def test_overlapping_groups_are_refused_and_selection_lists_the_names():
    a = ParamGroup("a", 0, "block", ("x.weight", "x.bias"), 3)
    b = ParamGroup("b", 1, "block", ("x.bias",), 1)
    assert group_of([a]) == {"x.weight": "a", "x.bias": "a"}
    with pytest.raises(ValueError, match=r"^parameter 'x.bias' is in groups 'a' and 'b'; groups must be disjoint$"):
        group_of([a, b])
    assert select_groups([a, b], "b") == [b]
    with pytest.raises(ValueError, match=r"^unknown group\(s\) \['c'\]; available groups: \['a', 'b'\]$"):
        select_groups([a, b], ["a", "c"])
