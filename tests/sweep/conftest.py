"""Tiny sweeps for the sweep tests: a micro ViT on 32 scikit-learn digits (bundled, offline), seconds per run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

BASE = """\
name: tiny
data: {name: digits, max_train: 32, max_val: 16, max_test: 16, batch_size: 8, eval_batch_size: 32}
model: {name: micro_vit, pretrained: false, overrides: {embed_dim: 8, depth: 1, num_heads: 1}}
adapter: {method: lora, r: 2, alpha: 4}
train: {epochs: 1, lr: 0.01, progress: false}
output: {reliability_plots: false}
"""


def write_sweep(directory: Path, body: str, base: str = BASE, name: str = "sweep.yaml") -> Path:
    """Write ``base.yaml`` and a sweep file ``name`` (``body`` is dedented) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.yaml").write_text(base)
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def sweep_file(tmp_path):
    def make(body: str, base: str = BASE, name: str = "sweep.yaml") -> Path:
        return write_sweep(tmp_path, body, base, name)

    return make


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """CIFAR-10/100 python pickles and GLUE MRPC TSVs in their real formats (small)."""
    from bayespeft.testing import write_small_benchmarks

    return write_small_benchmarks(tmp_path_factory.mktemp("sweep-data"))
