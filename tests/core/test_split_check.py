"""A checkpoint is evaluated, and its posterior fitted, only on the split it was trained with.

With another ``data.split_seed`` (or ``val_fraction`` / ``test_fraction``) the digits' test split of this run shares
images with the checkpoint's training split: the commands refuse with one line (exit 2) before any evaluation.
Settings that only subsample the held-out splits (``max_test``) or another dataset are not refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bayespeft.cli import main
from bayespeft.config import load_config
from bayespeft.experiments.run import build
from bayespeft.testing import write_tiny_digits_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("split")
    cfg = write_tiny_digits_config(tmp / "c.yaml", "split", tmp / "runs", method="normtune", epochs=1,
                                   reliability_plots=False)
    assert main(["train", str(cfg)]) == 0
    (run_dir,) = [p for p in (tmp / "runs").iterdir() if (p / "checkpoint").is_dir()]
    return cfg, run_dir


def _images(cfg: Path, split: str, *sets: str) -> set[bytes]:
    """The stored 8x8 digits of one split (as bytes), before the loaders' transforms."""
    ds = getattr(build(load_config(cfg, overrides=list(sets))).data, split)
    return {ds.images[int(i)].numpy().tobytes() for i in ds.indices}


def test_another_split_seed_would_test_on_training_images(tmp_path):
    """The premise: the test split of seed 1 holds training images of seed 0 (sizes of the digits configs)."""
    cfg = write_tiny_digits_config(tmp_path / "c.yaml", "p", tmp_path / "runs", sizes=(400, 32, 359))
    assert _images(cfg, "train") & _images(cfg, "test", "data.split_seed=1")


@pytest.mark.parametrize("command", [["evaluate"], ["laplace", "--structure", "diag", "--prior", "none"]])
@pytest.mark.parametrize("key, value", [("split_seed", "1"), ("val_fraction", "0.2"), ("test_fraction", "0.3")])
def test_another_split_is_refused_with_the_fix(trained, capsys, command, key, value):
    cfg, run_dir = trained
    capsys.readouterr()
    assert main([command[0], str(cfg), "--checkpoint", str(run_dir), *command[1:], "--set", f"data.{key}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    default = {"split_seed": "0", "val_fraction": "0.1", "test_fraction": "0.2"}[key]
    assert f"was trained with data.{key}={default} but this run has data.{key}={value}" in err
    assert f"{run_dir}/config.yaml" in err


def test_subsampling_the_test_split_is_not_refused(trained, capsys):
    cfg, run_dir = trained
    assert main(["evaluate", str(cfg), "--checkpoint", str(run_dir), "--set", "data.max_test=16"]) == 0
