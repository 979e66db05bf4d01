"""ARC-Easy JSONL -> 4-way multiple-choice prompts for causal LMs (GPT-2-style byte-level BPE tokenizer)."""

from __future__ import annotations

import logging

import pytest
import torch

from bayespeft.data import DataConfig, build_data
from bayespeft.inputs import InputSpec


@pytest.fixture()
def spec(gpt2_like_tokenizer):
    return InputSpec(kind="text", tokenizer=gpt2_like_tokenizer, max_length=256)


def test_arc_prompts_labels_and_dropped_questions(arc_root, spec, gpt2_like_tokenizer, caplog):
    with caplog.at_level(logging.INFO, logger="bayespeft.data.arc"):
        b = build_data(DataConfig(name="arc_easy", root=str(arc_root)), spec)
    assert (b.num_classes, b.task) == (4, "multiple_choice")
    assert b.metadata["dropped"] == {"train": 1, "dev": 0, "test": 1}
    assert "dropped" in caplog.text and "1 of 22 train" in caplog.text
    assert (len(b.train), len(b.val), len(b.test)) == (21, 6, 8)  # Dev is the validation set
    assert b.metadata["val_source"] == "dev"
    text = gpt2_like_tokenizer.decode(b.train[3]["input_ids"])
    assert text == (
        "Question: Which thing number 3 is right?\nA. option 0 of 3\nB. option 1 of 3\nC. option 2 of 3\n"
        "D. option 3 of 3\nAnswer:"
    )
    assert int(b.train[3]["labels"]) == 3  # answerKey "D"
    assert int(b.train[20]["labels"]) == 2  # numeric labels: answerKey "3" -> C -> index 2
    assert "\nA. option 0 of 20\n" in gpt2_like_tokenizer.decode(b.train[20]["input_ids"])
    assert b.test.targets.tolist() == [i % 4 for i in range(8)]


def test_pad_token_falls_back_to_eos_and_padding_is_right(arc_root, spec, gpt2_like_tokenizer):
    assert gpt2_like_tokenizer.pad_token is None
    b = build_data(DataConfig(name="arc_easy", root=str(arc_root), batch_size=5), spec)
    assert gpt2_like_tokenizer.pad_token == gpt2_like_tokenizer.eos_token
    batch = b.collate_fn([b.train[0], b.train[10], b.train[20]])  # different lengths
    mask, ids = batch["attention_mask"], batch["input_ids"]
    lengths = [len(b.train[i]["input_ids"]) for i in (0, 10, 20)]
    assert mask.sum(1).tolist() == lengths and len(set(lengths)) > 1
    for row, n in enumerate(lengths):
        assert (ids[row, n:] == gpt2_like_tokenizer.eos_token_id).all() and not mask[row, n:].any()
        assert torch.equal(ids[row, :n], b.train[[0, 10, 20][row]]["input_ids"])
    assert "token_type_ids" not in batch


def test_long_prompts_are_truncated_on_the_left(arc_root, gpt2_like_tokenizer):
    spec = InputSpec(kind="text", tokenizer=gpt2_like_tokenizer, max_length=10)
    full = build_data(DataConfig(name="arc_easy", root=str(arc_root), max_length=256), spec)
    short = build_data(DataConfig(name="arc_easy", root=str(arc_root)), spec)
    assert short.metadata["truncated"]["train"] == 21
    ids_full, ids_short = full.train[0]["input_ids"], short.train[0]["input_ids"]
    assert len(ids_short) == 10 and torch.equal(ids_short, ids_full[-10:])
    assert gpt2_like_tokenizer.decode(ids_short).endswith("Answer:")
    assert gpt2_like_tokenizer.truncation_side == "right"  # restored


def test_without_dev_val_is_a_seeded_split_of_train(tmp_path, spec, arc_writer):
    arc_question, write_arc = arc_writer
    d = tmp_path / "ARC-Easy"
    write_arc(d, "Train", [arc_question(i) for i in range(40)])
    write_arc(d, "Test", [arc_question(100 + i) for i in range(5)])
    a = build_data(DataConfig(name="arc_easy", root=str(d), val_fraction=0.25), spec)  # root = subset dir
    b = build_data(DataConfig(name="arc_easy", root=str(tmp_path), val_fraction=0.25), spec)
    c = build_data(DataConfig(name="arc_easy", root=str(tmp_path), val_fraction=0.25, split_seed=4), spec)
    assert (len(a.train), len(a.val), len(a.test)) == (30, 10, 5) and a.metadata["val_source"] == "train split"
    assert not set(a.train.indices.tolist()) & set(a.val.indices.tolist())
    assert a.val.indices.tolist() == b.val.indices.tolist() != c.val.indices.tolist()


def test_arc_errors(tmp_path, spec, arc_writer):
    arc_question, write_arc = arc_writer
    with pytest.raises(FileNotFoundError, match=r"(?s)ARC-Easy.*ARC-Easy-Train\.jsonl.*layout"):
        build_data(DataConfig(name="arc_easy", root=str(tmp_path)), spec)
    d = tmp_path / "ARC-Easy"
    bad = arc_question(0)
    bad["answerKey"] = "Z"
    write_arc(d, "Train", [arc_question(1), bad])
    write_arc(d, "Test", [arc_question(2)])
    with pytest.raises(ValueError, match=r"ARC-Easy-Train\.jsonl:2: answerKey 'Z' is not one of the choice labels"):
        build_data(DataConfig(name="arc_easy", root=str(tmp_path)), spec)
    (d / "ARC-Easy-Train.jsonl").write_text('{"id": "x", "question": {"stem": "s"}}\n')
    with pytest.raises(ValueError, match="not an ARC question"):
        build_data(DataConfig(name="arc_easy", root=str(tmp_path)), spec)
