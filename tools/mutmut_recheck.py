"""Re-run chosen tests against chosen mutmut mutants, without re-running mutmut (tests/MUTATION.md).

mutmut records survivors against the suite as it was when the mutants were generated. After a test is added to
kill them, this checks the claim in one process: the tests must pass on the clean code, and fail on each mutant.

    make mutate                                   # or any mutmut run; leaves mutants/ behind
    python tools/mutmut_recheck.py tests/metrics/test_mutation_kills_calibration.py -- \\
        'bayespeft.metrics.calibration.x_equal_mass_bin_index__mutmut_5' ...

Mutant names are those of ``mutmut results``, or globs over them (``'bayespeft.sgmcmc.sgld.*'``; the mutants must
exist: ``make mutate`` or ``python tools/mutmut_generate.py``). Each mutant is activated through mutmut's ``MUTANT_UNDER_TEST``
switch in the generated code under ``mutants/src``, so the repository's ``src/`` is never modified. Prints
``KILLED`` / ``SURVIVED`` per mutant; exits 1 if the clean run fails or any mutant survives.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if "--" not in argv or not Path("mutants/src").is_dir():
        print(__doc__)
        return 2
    i = argv.index("--")
    tests, mutants = argv[:i], argv[i + 1:]
    if any("*" in m for m in mutants):  # name globs, e.g. 'bayespeft.sgmcmc.sgld.*': expand from mutants/
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from mutmut_generate import mutant_names

        mutants = [n for m in mutants for n in (mutant_names([m]) if "*" in m else [m])]
    sys.path.insert(0, str(Path("mutants/src").resolve()))
    import pytest

    def run(name: str) -> int:
        os.environ["MUTANT_UNDER_TEST"] = name
        with contextlib.redirect_stdout(io.StringIO()):
            return int(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *tests]))

    if run("none") != 0:  # a name that matches no mutant: the original code
        print("the tests fail on the original code; fix them first")
        return 1
    survived = 0
    for name in mutants:
        rc = run(name)
        survived += rc == 0
        print("KILLED  " if rc == 1 else "SURVIVED" if rc == 0 else f"rc={rc}   ", name, flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
