"""Small files in the real on-disk formats for the tiny config variants: CIFAR-10/100 "python version" pickles
(written the way the official Python 2 files are), GLUE MRPC TSVs and AI2 ARC JSONL, plus a local byte-level BPE
tokenizer directory for the causal-LM variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bayespeft.models.tiny import bpe_tokenizer
from bayespeft.testing import write_arc, write_small_benchmarks

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data root holding cifar-10-batches-py/ (5 x 20 train, 20 test), cifar-100-python/ (100 train, 40 test)
    MRPC/ (60 train pairs, 12 dev pairs), ARC-Easy/ (24 train, 8 dev, 12 test questions) and tokenizers/bpe/ (a
    GPT-2-style tokenizer in which " A".." D" are single tokens)."""
    root = write_small_benchmarks(tmp_path_factory.mktemp("data"))
    write_arc(root, {"Train": 24, "Dev": 8, "Test": 12})
    bpe_tokenizer(root / "tokenizers" / "bpe")
    return root


@pytest.fixture()
def no_network(monkeypatch):
    """Every attempt to open a connection fails as it would offline (URLError / OSError), so a config that needs
    the network cannot pass."""
    import socket
    import urllib.error
    import urllib.request

    def refuse(*a, **kw):
        raise urllib.error.URLError("network disabled in this test")

    def refuse_socket(self, *a, **kw):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse_socket)
