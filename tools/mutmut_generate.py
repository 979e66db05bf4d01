"""Generate mutmut's mutants under ``mutants/`` without running any test (tests/MUTATION.md).

``mutmut run`` first traces the whole test selection of ``[tool.mutmut]`` to learn which tests call which function,
which takes many minutes on 2 cores before the first mutant runs. To check mutants against a chosen, fast test set
with ``tools/mutmut_recheck.py``, only the mutated copy of ``src/`` is needed; this writes it (the same files
``mutmut run`` writes, so a later ``mutmut run`` reuses them) and prints the mutant names that match the globs.

    python tools/mutmut_generate.py 'bayespeft.sgmcmc.sgld.*' 'bayespeft.metrics.diagnostics.x_ess*'
"""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path


def mutant_names(globs: list[str]) -> list[str]:
    """Mutant names recorded in ``mutants/**/*.py.meta`` that match any of ``globs`` (all if none), in file order."""
    names: list[str] = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        keys = json.loads(meta.read_text())["exit_code_by_key"]
        names += [k for k in keys if not globs or any(fnmatch.fnmatchcase(k, g) for g in globs)]
    return names


def main(argv: list[str]) -> int:
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(1)
    for name in mutant_names(argv):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
