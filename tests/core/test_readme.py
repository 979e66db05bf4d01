"""Every command line in the README's bash blocks runs as written (``make demo`` / ``make test`` excepted: they
install things), through ``bayespeft.cli.main`` in README order.

How a line is run:

* ``# ...`` comments are dropped; ``[optional parts]`` give one run without any of them, then one run with each;
* ``CONFIG`` is the config the block itself uses (``configs/digits/lora.yaml``); ``RUN_DIR`` is the run directory
  printed by the latest command that made a trained checkpoint, run without its optional parts (so
  ``--resume RUN_DIR`` resumes a run of the same config, and ``--samples RUN_DIR/samples`` is the store of the
  ``bayespeft sample`` run that trained its own MAP);
* the only additions, for speed and to keep the repository clean, are on commands that run an experiment:
  :data:`SMALL` (output under a temporary directory, no plots, 2 training epochs, 2 sampling epochs).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bayespeft.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXCLUDED = ("make demo", "make test")
RUNS = ("train", "evaluate", "laplace", "sample")
SMALL = ["--set", "output.reliability_plots=false", "--set", "train.epochs=2", "--set", "sgmcmc.epochs=2"]
OPTIONAL = re.compile(r"\s*\[([^\[\]]+)\]")


def bash_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks, comments and blank lines removed."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for ln in block.splitlines():
            ln = re.sub(r"\s+#.*$", "", ln).strip()
            if ln and not ln.startswith("#"):
                lines.append(ln)
    return lines


def variants(line: str) -> list[tuple[str, bool]]:
    """``(command, is_base)``: without optional parts, then with each one."""
    groups = OPTIONAL.findall(line)
    base = OPTIONAL.sub("", line)
    out = [(base, True)]
    for g in groups:
        out.append((OPTIONAL.sub(lambda m: f" {m[1]}" if m[1] == g else "", line), False))
    return out


def test_variants_and_comments():
    assert bash_lines("```bash\nbayespeft x a   # note\n# only a comment\n\n```\n```python\nnot me\n```") == ["bayespeft x a"]
    assert variants("bayespeft t C [--a 1] [--b X]") == [
        ("bayespeft t C", True), ("bayespeft t C --a 1", False), ("bayespeft t C --b X", False)]


def test_every_readme_command_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository root
    lines = [ln for ln in bash_lines(README.read_text()) if not ln.startswith(EXCLUDED)]
    assert lines and all(ln.startswith("bayespeft") for ln in lines), lines
    configs = sorted({w for ln in lines for w in ln.split() if w.startswith("configs/") and w.endswith(".yaml")})
    assert configs == ["configs/digits/lora.yaml"], configs
    subs = {"CONFIG": configs[0]}
    ran: list[str] = []
    for line in lines:
        for command, is_base in variants(line):
            for name, value in subs.items():
                command = re.sub(rf"\b{name}\b", value, command)
            assert not re.search(r"\b(CONFIG|RUN_DIR)\b", command), f"{command!r}: nothing to substitute yet"
            argv = shlex.split(command)[1:]
            if argv and argv[0] in RUNS:
                argv += ["--set", f"output.root={tmp_path / 'runs'}", *SMALL]
            capsys.readouterr()
            try:
                code = main(argv)
            except SystemExit as e:  # --help
                code = e.code
            out, err = capsys.readouterr()
            assert code == 0, f"{command!r} exited {code}:\n{err[-2000:]}"
            ran.append(command)
            made = [ln.removeprefix("run directory: ") for ln in out.splitlines() if ln.startswith("run directory: ")]
            if is_base and made and (Path(made[-1]) / "checkpoint").is_dir():
                subs["RUN_DIR"] = made[-1]
    assert len(ran) >= len(lines) + 3  # train's two optional parts and sample's one ran too
    assert any("--resume" in c for c in ran) and any("--samples" in c for c in ran)
