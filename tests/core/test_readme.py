"""Every command line in the README's bash blocks runs as written (``make demo`` / ``make test`` excepted: they
install things), through ``bayespeft.cli.main`` in README order.

How a line is run:

* ``# ...`` comments are dropped; ``[optional parts]`` give one run without any of them, then one run with each;
* ``CONFIG`` is the config the block itself uses (``configs/digits/lora.yaml``); ``RUN_DIR`` is the run directory
  printed by the latest command that made a trained checkpoint, run without its optional parts (so
  ``--resume RUN_DIR`` resumes a run of the same config, and ``--samples RUN_DIR/samples`` is the store of the
  ``bayespeft sample`` run that trained its own MAP);
* the only additions, for speed and to keep the repository clean, are on commands that run an experiment:
  :data:`SMALL` (output under a temporary directory, no plots, 2 training epochs, 2 sampling epochs);
* ``layerwise``: ``LW_DIR`` is a fresh directory per variant (a directory of other settings is refused), the base
  variant's for the ``analyze`` line;
* the full-scale studies the README shows (:data:`FULL_SCALE`: ViT-B/16 on CIFAR-100, Phi-2 on ARC) need GPUs, hub
  weights and real data: their configs are validated here (``bayespeft validate``) and their CPU variants run end to
  end in the named tests; lines that need a finished full-scale run (:data:`NEEDS_FULL_RUN`) and the example script
  (run with ``--tiny`` by ``tests/examples``) are not run here;
* sweeps: ``--validate-only`` / ``--dry-run`` run on the study file as written; a sweep that executes runs its CPU
  variant ``configs/sweeps/tiny/<same name>`` (the real study trains DeiTs on CIFAR) with ``--out`` under a temporary
  directory (``DIR`` is that directory, ``N`` is 1), and ``bayespeft report`` reads that directory. The Ray line
  (:data:`NOT_HERE`) is not run here: ``tests/sweep/test_ray.py`` runs the Ray executor on a local 2-CPU Ray
  (~40 s of start-up), and ``RAY_ADDRESS`` names a cluster.
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
NOT_HERE = ("--executor ray",)
#: full-scale config -> the test that runs its CPU variant end to end
FULL_SCALE = {
    "configs/layerwise/vit_b16_cifar100_lora.yaml": "tests/configs/test_configs.py::test_tiny_cifar100_vit_lora_layerwise_train_then_analyze",
    "configs/arc/phi2_lora_laplace.yaml": "tests/configs/test_configs.py::test_tiny_arc_phi2_lora_then_lowrank_kfac_laplace",
}
NEEDS_FULL_RUN = ("bayespeft analyze   runs/vit-b16-cifar100-lora-layerwise", "python examples/bayesian_lora_arc.py")
STUDY = re.compile(r"\bconfigs/sweeps/([\w.-]+\.yaml)\b")


def bash_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks, comments and blank lines removed."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for ln in block.replace("\\\n", " ").splitlines():
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


def interrupted_run(argv: list[str], root: Path, monkeypatch) -> str:
    """Run ``argv`` without ``--resume``, stopped by Ctrl-C after the first epoch's checkpoint; its run directory."""
    import bayespeft.train.loop as loop

    save = loop._save_epoch

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    before = set(root.iterdir())
    i = argv.index("--resume")
    with monkeypatch.context() as mp:
        mp.setattr(loop, "_save_epoch", save_then_stop)
        assert main(argv[:i] + argv[i + 2:] + ["--set", "train.checkpoint_every_epoch=true"]) == 130
    (made,) = set(root.iterdir()) - before
    return str(made)


def test_every_readme_command_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository root
    lines = [ln for ln in bash_lines(README.read_text()) if not ln.startswith(EXCLUDED + NEEDS_FULL_RUN)]
    assert lines and all(ln.startswith("bayespeft") for ln in lines), lines
    for cfg in FULL_SCALE:
        assert any(cfg in ln for ln in lines) and main(["validate", cfg]) == 0, cfg
        path, name = FULL_SCALE[cfg].split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), FULL_SCALE[cfg]
    lines = [ln for ln in lines if not any(cfg in ln for cfg in FULL_SCALE)]
    configs = sorted({w for ln in lines for w in ln.split() if w.startswith("configs/") and w.endswith(".yaml")
                      and not w.startswith("configs/sweeps/")})
    assert configs == ["configs/digits/lora.yaml"], configs
    sweep_out = tmp_path / "sweep"
    subs = {"CONFIG": configs[0], "DIR": str(sweep_out), "N": "1"}
    ran: list[str] = []
    for line in lines:
        if any(f in line for f in NOT_HERE):
            continue
        for command, is_base in variants(line):
            for name, value in subs.items():
                command = re.sub(rf"\b{name}\b", value, command)
            assert not re.search(r"\b(CONFIG|RUN_DIR)\b", command), f"{command!r}: nothing to substitute yet"
            argv = shlex.split(command)[1:]
            if argv and argv[0] in RUNS:
                argv += ["--set", f"output.root={tmp_path / 'runs'}", *SMALL]
            if argv and argv[0] == "sweep" and not {"--validate-only", "--dry-run"} & set(argv):
                argv = [STUDY.sub(r"configs/sweeps/tiny/\1", a) for a in argv]
                if "--out" not in argv:
                    argv += ["--out", str(sweep_out)]
            if argv and argv[0] == "report":
                argv[1] = str(sweep_out)
            if argv and argv[0] == "layerwise":
                i = argv.index("LW_DIR")
                argv[i] = str(tmp_path / "layerwise" / f"v{len(ran)}")
                if is_base:
                    lw_dir = argv[i]
                argv += ["--set", f"output.root={tmp_path / 'runs'}", "--set", "output.reliability_plots=false"]
            if argv and argv[0] == "analyze":
                argv = [a.replace("LW_DIR", lw_dir) for a in argv]
            if argv[0] == "train" and "--resume" in argv:  # resume a run interrupted after its first epoch
                argv[argv.index("--resume") + 1] = interrupted_run(argv, tmp_path / "runs", monkeypatch)
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
    assert any(c.startswith("bayespeft report") for c in ran) and (sweep_out / "report" / "report.md").is_file()
