"""Small files in the real on-disk formats for the tiny config variants: CIFAR-10/100 "python version" pickles
(written the way the official Python 2 files are) and GLUE MRPC TSVs."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


class Py2Pickler(pickle._Pickler):
    """Pickle ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), like the official CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows in the official order: 1024 red, 1024 green, 1024 blue values of a 32x32 image."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data root holding cifar-10-batches-py/ (5 x 20 train, 20 test), cifar-100-python/ (100 train, 40 test)
    and MRPC/ (60 train pairs, 12 dev pairs)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    c10 = root / "cifar-10-batches-py"
    c10.mkdir()
    for b in range(1, 6):
        py2_dump({b"batch_label": f"training batch {b} of 5".encode(), b"labels": [int(v) for v in (np.arange(20) + b) % 10],
                  b"data": images(rng, 20), b"filenames": [f"t{b}_{i}.png".encode() for i in range(20)]}, c10 / f"data_batch_{b}")
    py2_dump({b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in np.arange(20) % 10],
              b"data": images(rng, 20), b"filenames": [f"test_{i}.png".encode() for i in range(20)]}, c10 / "test_batch")
    py2_dump({b"num_cases_per_batch": 10000, b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072},
             c10 / "batches.meta")
    c100 = root / "cifar-100-python"
    c100.mkdir()
    for split, n in (("train", 100), ("test", 40)):
        fine = [int(v) for v in np.arange(n) % 100]
        py2_dump({b"filenames": [f"{split}_{i}.png".encode() for i in range(n)], b"batch_label": split.encode(),
                  b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": images(rng, n)}, c100 / split)
    py2_dump({b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
              b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}, c100 / "meta")
    mrpc = root / "MRPC"
    mrpc.mkdir()
    pairs = [('He said "the deal is done" on Monday .', 'On Monday he said "the deal is done" .', 1),
             ("Shares rose 5 % to $ 10.20 .", "The stock fell sharply in early trade .", 0),
             ("Prices climbed for a third day .", "For the third straight day , prices climbed .", 1),
             ("The court ruled against the company .", "Rain is expected over the weekend .", 0)]
    for name, n, off in (("train", 60, 0), ("dev", 12, 500)):
        lines = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            a, b, q = pairs[i % len(pairs)]
            lines.append(f"{q}\t{1000 + i + off}\t{2000 + i + off}\t{a} #{i + off}\t{b} #{i + off}")
        (mrpc / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
