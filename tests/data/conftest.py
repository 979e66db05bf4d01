"""Fixtures writing tiny datasets in the real on-disk formats (CIFAR python pickles, GLUE TSV, ARC JSONL) and
offline tokenizers (the real all-MiniLM-L6-v2 WordPiece tokenizer; a GPT-2-style byte-level BPE trained here)."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


class Py2Pickler(pickle._Pickler):
    """Pickle ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), like the official CIFAR files, which were
    written by Python 2: loading with ``encoding="latin1"`` (torchvision) gives str keys ("data"), with
    ``encoding="bytes"`` (the CIFAR web page's recipe) bytes keys (b"data"); numpy arrays use the same path."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows: 1024 red, then 1024 green, then 1024 blue values, row-major 32x32 (official order)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: 5 x 20 train and 20 test images."""
    root = tmp_path_factory.mktemp("cifar10")
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for b in range(1, 6):
        labels = [int(v) for v in (np.arange(20) + b) % 10]
        py2_dump({b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels, b"data": _images(rng, 20),
                  b"filenames": [f"img_{b}_{i}.png".encode() for i in range(20)]}, base / f"data_batch_{b}")
    py2_dump({b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in np.arange(20) % 10],
              b"data": _images(rng, 20), b"filenames": [f"test_{i}.png".encode() for i in range(20)]}, base / "test_batch")
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    py2_dump({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, base / "batches.meta")
    return root


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    """<root>/cifar-100-python/{train, test, meta}: 200 train / 100 test images, fine labels 0..99, coarse = fine // 5."""
    root = tmp_path_factory.mktemp("cifar100")
    base = root / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 200), ("test", 100)):
        fine = [int(v) for v in np.arange(n) % 100]
        py2_dump({b"filenames": [f"{split}_{i}.png".encode() for i in range(n)], b"batch_label": f"{split} batch".encode(),
                  b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": _images(rng, n)}, base / split)
    py2_dump({b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}, base / "meta")
    return root


MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
#: sentence pairs with literal quote characters (as in the real files); label = index % 2 pattern below.
MRPC_PAIRS = [
    ('He said "the deal is done" on Monday .', 'On Monday he said "the deal is done" .'),
    ("Shares rose 5 % to $ 10.20 .", "The stock fell sharply in early trade ."),
    ('"We are pleased," the CEO said .', 'The chief executive said "we are pleased" .'),
    ("The court ruled against the company .", "Rain is expected over the weekend ."),
    ("Prices climbed for a third day .", "For the third straight day , prices climbed ."),
    ("The senator's bill passed 52-48 .", "Scientists found water on the moon ."),
]


def _write_mrpc(path: Path, n: int, offset: int, bom: bool = False) -> list[tuple[int, str, str]]:
    rows = []
    for i in range(n):
        a, b = MRPC_PAIRS[i % len(MRPC_PAIRS)]
        q = 1 - (i % len(MRPC_PAIRS)) % 2  # paraphrase for even pairs
        rows.append((q, f"{a} #{i + offset}", f"{b} #{i + offset}"))
    text = MRPC_HEADER + "\n" + "".join(f"{q}\t{1000 + i}\t{2000 + i}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(rows))
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return rows


@pytest.fixture(scope="session")
def mrpc_root(tmp_path_factory) -> tuple[Path, dict]:
    """<root>/MRPC/{train.tsv (60, with BOM), dev.tsv (12), test.tsv (unlabelled, GLUE 'index' header)}."""
    root = tmp_path_factory.mktemp("glue")
    d = root / "MRPC"
    d.mkdir()
    rows = {"train": _write_mrpc(d / "train.tsv", 60, 0, bom=True), "dev": _write_mrpc(d / "dev.tsv", 12, 500)}
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
