"""The two layers stay apart: library modules never import the application layer.

The library (``data``, ``models``, ``adapters``, ``train``, ``laplace``, ``sgmcmc``, ``metrics`` and the neutral
top-level helpers) takes plain PyTorch objects; the application layer (``bayespeft.config``, the experiment-config
loader, and ``bayespeft.experiments``, which turns a config into runs, and the CLI on top) is the only place that
reads configs and writes run directories. The check reads every library module's source with :mod:`ast` (nothing
is imported), resolves relative imports, and lists each import of the application layer with file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bayespeft

SRC = Path(bayespeft.__file__).resolve().parent
LIBRARY_PACKAGES = ("data", "models", "adapters", "train", "laplace", "sgmcmc", "metrics")
APPLICATION = ("bayespeft.config", "bayespeft.experiments", "bayespeft.cli", "bayespeft.__main__")  # __main__: python -m


def module_name(path: Path, root: Path = SRC) -> str:
    parts = ["bayespeft", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``; ``from m import x`` yields ``m`` and, unless
    ``m`` is itself in the application layer, ``m.x`` (``x`` may be a submodule, as in ``from .. import config``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            if not is_application(mod):
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def is_application(mod: str) -> bool:
    return any(mod == a or mod.startswith(a + ".") for a in APPLICATION)


def library_files() -> list[Path]:
    files = [p for pkg in LIBRARY_PACKAGES for p in sorted((SRC / pkg).rglob("*.py"))]
    top = [p for p in sorted(SRC.glob("*.py")) if not is_application(module_name(p))]
    return files + top


def test_the_walk_sees_the_library():
    names = {module_name(p) for p in library_files()}
    assert {"bayespeft.laplace.fit", "bayespeft.sgmcmc.runner", "bayespeft.train.loop", "bayespeft.data.digits",
            "bayespeft.registry"} <= names
    assert not any(is_application(n) for n in names)


def test_relative_imports_are_resolved(tmp_path):
    fake = tmp_path / "bayespeft"
    (fake / "laplace").mkdir(parents=True)
    mod = fake / "laplace" / "x.py"
    mod.write_text("from .. import config\nfrom ..experiments.run import build\nfrom .fit import fit\nimport bayespeft.cli\n")
    got = [m for _, m in imported_modules(mod, root=fake)]
    assert "bayespeft.config" in got and "bayespeft.experiments.run" in got and "bayespeft.laplace.fit" in got
    assert [m for m in got if is_application(m)] == [
        "bayespeft.config", "bayespeft.experiments.run", "bayespeft.cli"]


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_library_module_does_not_import_the_application_layer(path):
    bad = [f"line {ln}: {mod}" for ln, mod in imported_modules(path) if is_application(mod)]
    assert not bad, (f"{path.relative_to(SRC)} is library code but imports the application layer ({'; '.join(bad)}); "
                     "move the code that needs a config or a run directory into bayespeft.experiments")


#: what the CLI may import from bayespeft: the version, config loading, the commands, the table printer, the errors
CLI_MAY_IMPORT = ("bayespeft.config", "bayespeft.experiments", "bayespeft.table", "bayespeft.errors")


def test_the_cli_calls_only_the_application_layer():
    mods = {m for _, m in imported_modules(SRC / "cli.py") if m == "bayespeft" or m.startswith("bayespeft.")}
    mods.discard("bayespeft")
    mods.discard("bayespeft.__version__")
    assert {m for m in mods if not any(m == a or m.startswith(a + ".") for a in CLI_MAY_IMPORT)} == set()
    assert any(m.startswith("bayespeft.experiments.") for m in mods)
