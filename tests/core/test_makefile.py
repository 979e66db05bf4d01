"""``make clean`` / ``make distclean`` on a copy of the project's Makefile in a temp tree with a temp HOME: they ask
nothing, remove what the project made (runs, caches, the quickstart's cached model) and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def make(proj: Path, target: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("BAYESPEFT_CACHE", "CACHE", "MAKEFLAGS")}
    environ.update(HOME=str(home), **env)
    return subprocess.run(["make", "-C", str(proj), target], env=environ, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path):
    proj, home = tmp_path / "proj", tmp_path / "home"
    shutil.copy(ROOT / "Makefile", touch(proj / "Makefile"))
    made = [touch(proj / "runs" / "quickstart" / "metrics.json"), touch(proj / ".pytest_cache" / "v" / "x"),
            touch(proj / "src" / "pkg" / "__pycache__" / "a.pyc"), touch(proj / "tests" / "__pycache__" / "b.pyc"),
            touch(home / ".cache" / "bayespeft" / "quickstart" / "micro_vit_upstream_0.safetensors"),
            touch(home / ".cache" / "bayespeft" / "quickstart" / "upstream_0_run" / "history.json")]
    kept = [touch(proj / ".venv" / "bin" / "python"), touch(proj / "configs" / "a.yaml"), touch(proj / "data" / "x.tsv"),
            touch(proj / "src" / "pkg" / "mod.py"), touch(proj / "notes" / "runs.txt"),
            touch(home / ".cache" / "huggingface" / "hub" / "models--x" / "config.json"),
            touch(home / ".cache" / "bayespeft" / "mine.txt")]  # not something the project writes
    return proj, home, made, kept


def test_clean_removes_only_what_the_project_made(tree):
    proj, home, made, kept = tree
    res = make(proj, "clean", home)
    assert res.returncode == 0, res.stderr
    assert not [p for p in made if p.exists()]
    assert not (proj / "runs").exists() and not (home / ".cache" / "bayespeft" / "quickstart").exists()
    assert all(p.read_text() == "x" for p in kept)
    assert (home / ".cache" / "bayespeft").is_dir()  # not empty (a user file): left in place
    assert make(proj, "clean", home).returncode == 0  # nothing left to remove: still fine


def test_clean_honours_bayespeft_cache_and_removes_it_when_empty(tree, tmp_path):
    proj, home, made, kept = tree
    custom = touch(tmp_path / "elsewhere" / "bp" / "quickstart" / "m.safetensors").parents[1]
    res = make(proj, "clean", home, BAYESPEFT_CACHE=str(custom), CACHE=str(home / ".cache"))
    assert res.returncode == 0, res.stderr
    assert not custom.exists() and (tmp_path / "elsewhere").is_dir()
    # the default cache is not the one in use: untouched, and an unrelated CACHE variable redirects nothing
    assert (home / ".cache" / "bayespeft" / "quickstart" / "micro_vit_upstream_0.safetensors").is_file()
    assert all(p.exists() for p in kept)


def test_distclean_also_removes_the_venv(tree):
    proj, home, made, kept = tree
    touch(proj / "src" / "bayespeft.egg-info" / "PKG-INFO")
    assert make(proj, "distclean", home).returncode == 0
    assert not (proj / ".venv").exists() and not (proj / "src" / "bayespeft.egg-info").exists()
    assert all(p.exists() for p in kept if ".venv" not in p.parts)
