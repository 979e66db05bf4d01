"""Writers of tiny datasets in the real on-disk formats, for tests and smoke runs without network access.

``write_cifar10(root)`` / ``write_cifar100(root)`` write the official python-version archive directories
(``cifar-10-batches-py``, ``cifar-100-python``: Python-2 pickles of dicts with ``data`` uint8 (N, 3072) in
R,G,B plane order, ``labels`` / ``fine_labels`` + ``coarse_labels``, and the meta files); ``write_mrpc_tsv``
writes a GLUE MRPC TSV (``Quality  #1 ID  #2 ID  #1 String  #2 String``, quote characters kept as data);
``write_arc`` writes an AI2 ARC directory (``<root>/ARC-Easy/ARC-Easy-{Train,Dev,Test}.jsonl``, one JSON question a
line: ``{"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}``).
The images are random: these files test loading code, not learning. Load them with
``data.verify_checksums=false`` (their md5 differs from the official archives').
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np


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


def cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows: 1024 red, then 1024 green, then 1024 blue values, row-major 32x32 (official order)."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(root: Path, n_per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; labels cycle through 0..9."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for b in range(1, 6):
        labels = [int(v) for v in (np.arange(n_per_batch) + b) % 10]
        py2_dump({b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels,
                  b"data": cifar_images(rng, n_per_batch),
                  b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n_per_batch)]}, base / f"data_batch_{b}")
    py2_dump({b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in np.arange(n_test) % 10],
              b"data": cifar_images(rng, n_test), b"filenames": [f"test_{i}.png".encode() for i in range(n_test)]},
             base / "test_batch")
    py2_dump({b"num_cases_per_batch": 10000, b"label_names": CIFAR10_NAMES, b"num_vis": 3072}, base / "batches.meta")
    return base


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 1) -> Path:
    """``<root>/cifar-100-python/{train, test, meta}``; fine labels cycle through 0..99, coarse = fine // 5."""
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in np.arange(n) % 100]
        py2_dump({b"filenames": [f"{split}_{i}.png".encode() for i in range(n)], b"batch_label": f"{split} batch".encode(),
                  b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": cifar_images(rng, n)}, base / split)
    py2_dump({b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}, base / "meta")
    return base


MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
#: sentence pairs with literal quote characters (as in the real files); even pairs are paraphrases.
MRPC_PAIRS = [
    ('He said "the deal is done" on Monday .', 'On Monday he said "the deal is done" .'),
    ("Shares rose 5 % to $ 10.20 .", "The stock fell sharply in early trade ."),
    ('"We are pleased," the CEO said .', 'The chief executive said "we are pleased" .'),
    ("The court ruled against the company .", "Rain is expected over the weekend ."),
    ("Prices climbed for a third day .", "For the third straight day , prices climbed ."),
    ("The senator's bill passed 52-48 .", "Scientists found water on the moon ."),
]


def write_mrpc_tsv(path: Path, n: int, offset: int = 0, bom: bool = False) -> list[tuple[int, str, str]]:
    """Write ``n`` labelled pairs; returns the rows ``(quality, sentence1, sentence2)`` written."""
    rows = []
    for i in range(n):
        a, b = MRPC_PAIRS[i % len(MRPC_PAIRS)]
        q = 1 - (i % len(MRPC_PAIRS)) % 2
        rows.append((q, f"{a} #{i + offset}", f"{b} #{i + offset}"))
    text = MRPC_HEADER + "\n" + "".join(f"{q}\t{1000 + i + offset}\t{2000 + i + offset}\t{a}\t{b}\n" for i, (q, a, b) in enumerate(rows))
    Path(path).write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return rows


ARC_SUBJECTS = ["a magnet", "the sun", "a plant", "ice", "a battery", "the moon", "a seed", "copper wire"]
ARC_ANSWERS = ["attracts iron", "gives off light", "needs water", "melts when warm", "stores energy",
               "reflects light", "grows into a plant", "conducts electricity"]


def arc_question(i: int, n_choices: int = 4, numeric: bool = False, seed: int = 0) -> dict:
    """One ARC question (the official JSON shape); the answer is the choice that belongs to the question's subject.

    Labels are ``"A".."E"`` (or ``"1".."5"`` with ``numeric``); the position of the right answer is random (seeded
    by ``seed`` and ``i``), so a model can only do better than chance by reading the question.
    """
    rng = np.random.default_rng([seed, i])
    k = i % len(ARC_SUBJECTS)
    wrong = [a for j, a in enumerate(ARC_ANSWERS) if j != k]
    texts = [str(t) for t in rng.choice(wrong, size=n_choices - 1, replace=False)]
    pos = int(rng.integers(n_choices))
    texts.insert(pos, ARC_ANSWERS[k])
    labels = [str(j + 1) for j in range(n_choices)] if numeric else list("ABCDE"[:n_choices])
    return {
        "id": f"Mercury_{i:05d}",
        "question": {"stem": f"Which of these describes {ARC_SUBJECTS[k]}?",
                     "choices": [{"text": t, "label": lab} for t, lab in zip(texts, labels, strict=True)]},
        "answerKey": labels[pos],
    }


def write_arc(root: Path, sizes: dict[str, int] | None = None, subset: str = "ARC-Easy", seed: int = 0) -> Path:
    """Write ``<root>/<subset>/<subset>-<Split>.jsonl`` for each ``Split: n`` of ``sizes`` (default Train 24, Dev 8,
    Test 12); returns ``<root>/<subset>``. Every question has 4 choices; question ids differ across splits."""
    sizes = {"Train": 24, "Dev": 8, "Test": 12} if sizes is None else sizes
    directory = Path(root) / subset
    directory.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split, n in sizes.items():
        lines = [json.dumps(arc_question(offset + i, seed=seed)) for i in range(n)]
        (directory / f"{subset}-{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        offset += n
    return directory


def write_small_benchmarks(root: Path) -> Path:
    """Under ``root``: ``cifar-10-batches-py/`` (5 x 20 train, 20 test), ``cifar-100-python/`` (100 train, 40 test) and
    ``MRPC/`` (60 train pairs with a BOM, 12 dev pairs), in their real on-disk formats. Returns ``root``."""
    write_cifar10(root)
    write_cifar100(root, n_train=100, n_test=40)
    mrpc = Path(root) / "MRPC"
    mrpc.mkdir(exist_ok=True)
    write_mrpc_tsv(mrpc / "train.tsv", 60, 0, bom=True)
    write_mrpc_tsv(mrpc / "dev.tsv", 12, 500)
    return Path(root)


def write_tiny_digits_config(path: Path, name: str, runs: Path, *, method: str = "lora",
                             sizes: tuple[int, int, int] = (64, 32, 48), shift: str = "none", epochs: int = 2,
                             reliability_plots: bool = True, extra: str = "") -> Path:
    """A seconds-long experiment config at ``path``: micro ViT (random init) on the bundled digits with ``sizes`` =
    (train, val, test) examples, batch 32, ``method`` (LoRA/hybrid at r=2), lr 0.005, seed 3, runs under ``runs``;
    ``extra`` is appended verbatim (more YAML)."""
    rank = ", r: 2" if method in ("lora", "hybrid") else ""
    n_train, n_val, n_test = sizes
    plots = "" if reliability_plots else ", reliability_plots: false"
    path.write_text(
        f"name: {name}\n"
        f"data: {{name: digits, max_train: {n_train}, max_val: {n_val}, max_test: {n_test}, batch_size: 32, "
        f"shift: {shift}}}\n"
        "model: {name: micro_vit, pretrained: false}\n"
        f"adapter: {{method: {method}{rank}}}\n"
        f"train: {{epochs: {epochs}, lr: 0.005, seed: 3, progress: false}}\n"
        f"output: {{root: {runs}{plots}}}\n" + extra
    )
    return path
