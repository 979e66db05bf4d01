"""List the mutants whose changed lines mention a device (tests/MUTATION.md, sixth pass).

Reads the mutated copies under ``mutants/src`` (``tools/mutmut_generate.py``), compares each mutant function with
its ``__mutmut_orig`` through the ``ast`` (so multi-line signatures and statements are handled), and prints
``name<TAB>- old lines<TAB>+ new lines`` for every mutant whose removed or added lines contain ``device``, ``.to(``,
``cuda`` or ``cpu``: the mutants a CPU-only run cannot tell from the original, which the ``test_accelerator_*.py``
files kill on the virtual accelerator (tests/virtual_device.py).

    python tools/mutmut_device_mutants.py [PATH_PART ...]      # e.g. laplace sgmcmc metrics train/checkpoint
"""

from __future__ import annotations

import ast
import difflib
import re
import sys
from pathlib import Path

NAME = re.compile(r"^(x.*?)__mutmut_(orig|\d+)$")
WORDS = ("device", ".to(", "cuda", "cpu")


def bodies(text: str) -> dict[tuple[str, str], list[str]]:
    """``(function, mutant number or "orig") -> body lines`` of every mutmut copy in one mutated file."""
    lines, out = text.splitlines(), {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (m := NAME.match(node.name)):
            out[(m.group(1), m.group(2))] = lines[node.lineno:node.end_lineno]
    return out


def device_mutants(path: Path) -> list[str]:
    text = path.read_text()
    module = ".".join(path.relative_to("mutants/src").with_suffix("").parts)
    found = bodies(text)
    rows = []
    for (fn, k), body in found.items():
        if k == "orig" or (fn, "orig") not in found:
            continue
        diff = list(difflib.ndiff(found[(fn, "orig")], body))
        minus = [line[2:].strip() for line in diff if line.startswith("- ")]
        plus = [line[2:].strip() for line in diff if line.startswith("+ ")]
        if any(w in " ".join(minus + plus) for w in WORDS):
            rows.append(f"{module}.{fn}__mutmut_{k}\t- {' | '.join(minus)[:200]}\t+ {' | '.join(plus)[:200]}")
    return rows


def main(argv: list[str]) -> int:
    for f in sorted(Path("mutants/src").rglob("*.py")):
        if not argv or any(part in str(f) for part in argv):
            for row in device_mutants(f):
                print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
