"""Fixtures writing tiny datasets in the real on-disk formats (CIFAR python pickles, GLUE TSV, ARC JSONL) and
offline tokenizers (the real all-MiniLM-L6-v2 WordPiece tokenizer; a GPT-2-style byte-level BPE trained here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

from bayespeft.testing import MRPC_HEADER, MRPC_PAIRS, py2_dump, write_cifar10, write_cifar100, write_mrpc_tsv  # noqa: E402,F401


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: 5 x 20 train and 20 test images."""
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    """<root>/cifar-100-python/{train, test, meta}: 200 train / 100 test images, fine labels 0..99, coarse = fine // 5."""
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root)
    return root


@pytest.fixture(scope="session")
def mrpc_root(tmp_path_factory) -> tuple[Path, dict]:
    """<root>/MRPC/{train.tsv (60, with BOM), dev.tsv (12), test.tsv (unlabelled, GLUE 'index' header)}."""
    root = tmp_path_factory.mktemp("glue")
    d = root / "MRPC"
    d.mkdir()
    rows = {"train": write_mrpc_tsv(d / "train.tsv", 60, 0, bom=True), "dev": write_mrpc_tsv(d / "dev.tsv", 12, 500)}
    (d / "test.tsv").write_text(
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA \"quoted\" one .\tAnother one .\n", encoding="utf-8"
    )
    return root, rows


def arc_question(i: int, n_choices: int = 4, numeric: bool = False, answer: int | None = None) -> dict:
    labels = [str(k + 1) for k in range(n_choices)] if numeric else list("ABCDE"[:n_choices])
    ans = i % n_choices if answer is None else answer
    return {
        "id": f"Q{i}",
        "question": {"stem": f"Which thing number {i} is right?" + " Really." * (i % 3),
                     "choices": [{"text": f"option {k} of {i}", "label": labels[k]} for k in range(n_choices)]},
        "answerKey": labels[ans],
    }


def write_arc(directory: Path, split: str, questions: list[dict], subset: str = "ARC-Easy") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{subset}-{split}.jsonl", "w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps(q) + "\n")


@pytest.fixture()
def arc_root(tmp_path) -> Path:
    """<root>/ARC-Easy/ with Train (20 + one numeric-label + one 5-choice), Dev (6), Test (8 + one 5-choice)."""
    d = tmp_path / "ARC-Easy"
    train = [arc_question(i) for i in range(20)]
    train.append(arc_question(20, numeric=True, answer=2))  # labels "1".."4", answer "3" -> index 2
    train.append(arc_question(21, n_choices=5, answer=4))  # must be dropped
    write_arc(d, "Train", train)
    write_arc(d, "Dev", [arc_question(100 + i) for i in range(6)])
    write_arc(d, "Test", [arc_question(200 + i) for i in range(8)] + [arc_question(300, n_choices=5)])
    return tmp_path


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from bayespeft.assets import find_minilm_dir

    return AutoTokenizer.from_pretrained(find_minilm_dir())


@pytest.fixture()
def gpt2_like_tokenizer():
    """A byte-level BPE tokenizer (GPT-2 scheme, leading-space tokens like " A") with eos but no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"Question: Which thing number {i} is right?\nA. option 0 of {i}\nB. x\nC. y\nD. z\nAnswer: A" for i in range(30)]
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.fixture()
def arc_writer():
    """``(arc_question, write_arc)`` helpers for tests that build their own ARC directories."""
    return arc_question, write_arc
