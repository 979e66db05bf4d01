"""pytest plugin for ``tools/mutmut_session.py``: clear the module-level ``functools`` caches of the test modules
before every test (tests/MUTATION.md, fifth pass).

The layer-wise test modules cache fitted objects (``functools.lru_cache``). Under ``mutmut_session.py`` those
caches outlive a mutant: a cached object built on the original code hides a mutant from the tests that read it,
and one changed in place under an earlier mutant (e.g. its tuned priors) fails the tests of later mutants, which
then count as killed. With this plugin every test builds what it reads under the code being tested.

    python tools/mutmut_session.py -p mutmut_clear_caches TESTS... -- MUTANT|GLOB...
"""

from __future__ import annotations

import sys


def pytest_runtest_setup(item) -> None:
    for name, module in list(sys.modules.items()):
        if not (name.split(".")[0] == "tests" or name.split(".")[-1].startswith("test_")):
            continue
        for obj in list(vars(module).values()):
            if callable(getattr(obj, "cache_clear", None)) and hasattr(obj, "cache_info"):
                obj.cache_clear()
