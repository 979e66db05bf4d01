"""GLUE MRPC from TSV files (quote characters, BOM) tokenised by the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import shutil

import pytest
import torch

from bayespeft.data import DataConfig, build_data
from bayespeft.inputs import InputSpec


@pytest.fixture()
def spec(minilm_tokenizer):
    return InputSpec(kind="text", tokenizer=minilm_tokenizer, max_length=64)


def test_mrpc_splits_labels_and_tokens(mrpc_root, spec, minilm_tokenizer):
    root, rows = mrpc_root
    b = build_data(DataConfig(name="mrpc", root=str(root), val_fraction=0.2), spec)
    assert (b.num_classes, b.task, b.modality) == (2, "sequence_classification", "text")
    assert (len(b.train), len(b.val), len(b.test)) == (48, 12, 12)
    assert not set(b.train.indices.tolist()) & set(b.val.indices.tolist())
    assert b.metadata["test_source"] == "dev.tsv" and b.metadata["test_tsv"] == "unlabelled"
    assert b.test.targets.tolist() == [q for q, _, _ in rows["dev"]]  # dev.tsv is the labelled test set
    q, s1, s2 = rows["dev"][0]
    item = b.test[0]
    expected = minilm_tokenizer(s1, s2)
    assert item["input_ids"].tolist() == expected["input_ids"]
    assert item["token_type_ids"].tolist() == expected["token_type_ids"]
    assert item["attention_mask"].tolist() == [1] * len(expected["input_ids"])
    assert 'he said " the deal is done " on monday' in minilm_tokenizer.decode(item["input_ids"])  # quotes kept
    # train rows (first file line had a UTF-8 BOM) keep their labels
    tr0 = int(b.train.indices[0])
    assert int(b.train[0]["labels"]) == rows["train"][tr0][0]


def test_split_seeded(mrpc_root, spec):
    root, _ = mrpc_root
    a = build_data(DataConfig(name="mrpc", root=str(root)), spec)
    b = build_data(DataConfig(name="mrpc", root=str(root)), spec)
    c = build_data(DataConfig(name="mrpc", root=str(root), split_seed=11), spec)
    assert a.val.indices.tolist() == b.val.indices.tolist() != c.val.indices.tolist()


def test_root_may_be_the_mrpc_directory_and_truncation(mrpc_root, minilm_tokenizer):
    root, rows = mrpc_root
    spec = InputSpec(kind="text", tokenizer=minilm_tokenizer, max_length=128)
    b = build_data(DataConfig(name="mrpc", root=str(root / "MRPC"), max_length=12), spec)
    lengths = [len(b.train[i]["input_ids"]) for i in range(len(b.train))]
    assert max(lengths) == 12
    n_long = sum(len(minilm_tokenizer(a, c)["input_ids"]) > 12 for _, a, c in rows["train"])  # counted over train.tsv
    assert b.metadata["max_length"] == 12 and b.metadata["truncated"]["train"] == n_long > 0
    assert int(b.train[0]["input_ids"][-1]) == minilm_tokenizer.sep_token_id


def test_batches_are_right_padded(mrpc_root, spec, minilm_tokenizer):
    root, _ = mrpc_root
    b = build_data(DataConfig(name="mrpc", root=str(root), batch_size=8), spec)
    batch = next(iter(b.loaders().train))
    ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert ids.shape == mask.shape == tt.shape and ids.shape[0] == 8
    lengths = mask.sum(1)
    assert lengths.max() == ids.shape[1] and lengths.min() < ids.shape[1]
    for row, n in zip(range(8), lengths.tolist()):
        assert mask[row, :n].all() and not mask[row, n:].any()  # ones then zeros: right padding
        assert (ids[row, n:] == minilm_tokenizer.pad_token_id).all() and (tt[row, n:] == 0).all()
        assert int(ids[row, n - 1]) == minilm_tokenizer.sep_token_id
    assert batch["labels"].dtype == torch.long


def test_missing_files_and_bad_rows(tmp_path, mrpc_root, spec):
    with pytest.raises(FileNotFoundError, match=r"(?s)MRPC.*train\.tsv.*Quality"):
        build_data(DataConfig(name="mrpc", root=str(tmp_path)), spec)
    root = tmp_path / "bad"
    shutil.copytree(mrpc_root[0], root)
    with open(root / "MRPC" / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("1\t7\t8\tonly three fields\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:14: expected 5 tab-separated fields"):
        build_data(DataConfig(name="mrpc", root=str(root)), spec)


def test_shift_and_image_spec_are_rejected_for_text(mrpc_root, spec):
    root, _ = mrpc_root
    with pytest.raises(ValueError, match="only defined for image datasets"):
        build_data(DataConfig(name="mrpc", root=str(root), shift="noise"), spec)
    with pytest.raises(ValueError, match="text data but the model expects image inputs; pick a text model or an image dataset"):
        build_data(DataConfig(name="mrpc", root=str(root)), InputSpec(kind="image", image_size=8, in_chans=1))
    with pytest.raises(ValueError, match="need InputSpec.tokenizer"):
        build_data(DataConfig(name="mrpc", root=str(root)), InputSpec(kind="text"))
