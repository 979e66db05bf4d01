"""Wrapper prefixes, user-facing names and ``last_layer`` of ``laplace.subset`` (tests/MUTATION.md, fourth pass).

A :class:`~bayespeft.models.TaskModel` exposes ``backbone_prefix``; a bare PEFT model has ``peft_config`` and
``base_model.model``. Names relative to any wrapper level select the same parameters, and messages show the
backbone's own names.
"""

from __future__ import annotations

import re

import peft
import pytest
from torch import nn

from bayespeft.laplace.subset import select_parameters, user_name, wrapper_prefixes


class Prefixed(nn.Module):
    """Stands for a TaskModel: the network under ``backbone.``, with the full prefix as ``backbone_prefix``."""

    def __init__(self, prefix, backbone):
        super().__init__()
        self.backbone = backbone
        self.backbone_prefix = prefix


def test_task_model_levels_longest_first(ref):
    assert wrapper_prefixes(Prefixed("backbone.base_model.model.", ref.BodyHead())) == ["backbone.base_model.model.", "backbone."]
    assert wrapper_prefixes(Prefixed("backbone.", ref.BodyHead())) == ["backbone."]
    assert wrapper_prefixes(Prefixed("", ref.BodyHead())) == [] and wrapper_prefixes(Prefixed(None, ref.BodyHead())) == []
    names = [n for n, _ in select_parameters(Prefixed("backbone.", ref.BodyHead()), "head")]
    assert names == ["backbone.head.weight", "backbone.head.bias"]


def test_peft_model_level_and_user_names_in_the_message(ref):
    model = peft.get_peft_model(ref.BodyHead(), peft.LoraConfig(r=2, target_modules=["body"]))
    assert wrapper_prefixes(model) == ["base_model.model."]
    assert [n for n, _ in select_parameters(model, "body")] == [
        "base_model.model.body.lora_A.default.weight", "base_model.model.body.lora_B.default.weight"]
    with pytest.raises(ValueError, match=r"^subset 'head' selects no trainable parameter \(requires_grad=True\)\. "
                       r"2 trainable parameters exist, e.g. \['body.lora_A.default.weight', "
                       r"'body.lora_B.default.weight'\]$"):
        select_parameters(model, "head")


def test_a_base_model_attribute_alone_is_not_a_peft_wrapper(ref):
    model = nn.Module()
    model.base_model = nn.Module()
    model.base_model.model = ref.BodyHead()
    assert wrapper_prefixes(model) == []
    tagged = ref.BodyHead()
    tagged.peft_config = {}  # a peft_config attribute without base_model.model is not a PEFT wrapper either
    assert wrapper_prefixes(tagged) == []


def test_user_name_strips_the_longest_matching_prefix_only(ref):
    levels = ["backbone.base_model.model.", "backbone."]
    assert user_name("backbone.base_model.model.blocks.0.w", levels) == "blocks.0.w"
    assert user_name("backbone.head.w", levels) == "head.w"
    assert user_name("head.w", levels) == "head.w"
    long_first = wrapper_prefixes(Prefixed("backbone.base_model.model.", ref.BodyHead()))
    assert user_name("backbone.base_model.model.blocks.0.w", long_first) == "blocks.0.w"


def test_last_layer_of_a_model_without_trainable_parameters_names_no_module(ref):
    model = ref.BodyHead().requires_grad_(False)
    with pytest.raises(ValueError, match=r"^subset 'last_layer' \(modules \[\]\) selects no trainable parameter "
                       r"\(requires_grad=True\)\. 0 trainable parameters exist, e.g. \[\]$"):
        select_parameters(model, "last_layer")


def test_default_subset_is_every_trainable_parameter(ref):
    model = ref.BodyHead()
    model.body.bias.requires_grad_(False)
    assert [n for n, _ in select_parameters(model)] == ["body.weight", "head.weight", "head.bias"]


class _NamelessPredicate:
    def __call__(self, name, param):
        return False

    def __repr__(self):
        return "NamelessPredicate()"


def test_predicates_see_the_parameter_and_messages_name_every_kind_of_subset(ref):
    model = ref.BodyHead()
    assert [n for n, _ in select_parameters(model, lambda n, p: p.ndim == 1)] == ["body.bias", "head.bias"]
    tail = r" selects no trainable parameter \(requires_grad=True\)\. 4 trainable parameters exist, e.g. \["
    for subset, desc in [(_NamelessPredicate(), "predicate NamelessPredicate()"), (lambda n, p: False, "predicate <lambda>"),
                         (["nope", "neither"], "['nope', 'neither']"), ("nope", "'nope'")]:
        with pytest.raises(ValueError, match=f"^subset {re.escape(desc)}{tail}"):
            select_parameters(model, subset)
    with pytest.raises(ValueError, match=r"^subset 'all' selects no trainable parameter"):
        select_parameters(model.requires_grad_(False), "all")


@pytest.mark.parametrize("bad", [{"head"}, ["head", 1]])
def test_only_lists_of_strings_are_name_lists(ref, bad):
    with pytest.raises(TypeError, match=r"^subset must be 'all', 'last_layer', a module/parameter name or prefix, a list "
                       r"of them, or a predicate \(name, param\) -> bool; got (set|list)$"):
        select_parameters(ref.BodyHead(), bad)


def test_messages_list_at_most_eight_present_and_five_missing_names():
    from bayespeft.laplace.subset import live_parameters

    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(5)])  # 10 trainable parameters
    shown = ", ".join(f"'{i}.{k}'" for i in range(4) for k in ("weight", "bias"))
    with pytest.raises(ValueError, match=re.escape(f"10 trainable parameters exist, e.g. [{shown}]") + "$"):
        select_parameters(model, "nope")
    missing = [f"x{i}.weight" for i in range(6)]
    with pytest.raises(KeyError, match=re.escape(f"the model has no parameters {missing[:5]}; was the posterior "
                                                  "fitted on another model?")):
        live_parameters(model, ["0.weight", *missing])
