"""Run chosen mutmut mutants against chosen tests in ONE pytest session, each mutant only against the tests that
call the mutated function (tests/MUTATION.md, third pass).

``tools/mutmut_recheck.py`` starts a new pytest run (collection, imports of the test modules, every test of the
set) per mutant. This collects once, then:

1. runs every collected test once on the original code in mutmut's ``stats`` mode, recording which mutated
   functions each test calls (its trampolines, directly or through other functions; fixtures are set up anew for
   every test so that each test records what its fixtures call); a test that fails here stops the run;
2. for each mutant, runs only the tests that called its function, fastest first, stopping at the first failure
   (``-x``); module- and session-scoped fixtures are kept between the tests of one mutant and torn down after it,
   so no fixture value computed under one mutant is seen by another.

Prints ``KILLED`` / ``SURVIVED`` / ``TIMEOUT`` (a test ran past ``--timeout`` seconds: counted as killed, as
mutmut does) / ``NO_TESTS`` (no test of the set calls the function: survives) per mutant.

    python tools/mutmut_generate.py > /dev/null
    python tools/mutmut_session.py [--timeout 60] TESTS... [-k EXPR] -- MUTANT|GLOB...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


class _Timeout(Exception):
    pass


class _Collectors:
    """Stands for "the next item" in ``SetupState.teardown_exact``: keep the item's collectors, drop the item."""

    def __init__(self, item) -> None:
        self.chain = item.listchain()[:-1]

    def listchain(self):
        return self.chain


class MutantLoop:
    def __init__(self, mutants: list[str], timeout: float) -> None:
        self.mutants, self.timeout = mutants, timeout

    def _run(self, item, nextitem) -> bool:
        """Run one test (setup, call, teardown down to ``nextitem``); True if it passed."""
        from _pytest.runner import runtestprotocol

        def alarm(signum, frame):
            raise _Timeout(f"ran past {self.timeout} s")

        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        self.timed_out = any("_Timeout" in str(r.longrepr) for r in reports if r.failed)
        return not any(r.failed for r in reports)

    def pytest_runtestloop(self, session) -> bool:
        import mutmut.mutation.trampoline as trampoline
        from mutmut.utils.format_utils import mangled_name_from_mutant_name

        hits: set[str] = set()
        trampoline.record_trampoline_hit = lambda name, caller=None: hits.add(name)
        tests: dict[str, list[tuple[float, int]]] = {}
        os.environ["MUTANT_UNDER_TEST"] = "stats"
        for i, item in enumerate(session.items):
            hits.clear()
            t0 = time.perf_counter()
            if not self._run(item, None):
                print(f"the test {item.nodeid} fails on the original code; fix it first", flush=True)
                session.testsfailed = 1
                return True
            for name in hits:
                tests.setdefault(name, []).append((time.perf_counter() - t0, i))
        print(f"traced {len(session.items)} tests", flush=True)
        for name in self.mutants:
            chosen = [session.items[i] for _, i in sorted(tests.get(mangled_name_from_mutant_name(name), []))]
            if not chosen:
                print("NO_TESTS", name, flush=True)
                continue
            os.environ["MUTANT_UNDER_TEST"] = name
            status = "SURVIVED"
            for j, item in enumerate(chosen):
                nxt = _Collectors(chosen[j + 1]) if j + 1 < len(chosen) else None
                if not self._run(item, nxt):
                    status = "TIMEOUT " if self.timed_out else "KILLED  "
                    session._setupstate.teardown_exact(None)
                    break
            print(status, name, f"({len(chosen)} tests)", flush=True)
            self.survived = getattr(self, "survived", 0) + (status == "SURVIVED")
        os.environ["MUTANT_UNDER_TEST"] = "none"
        return True


def main(argv: list[str]) -> int:
    if "--" not in argv or not Path("mutants/src").is_dir():
        print(__doc__)
        return 2
    timeout = 60.0
    if argv[:1] == ["--timeout"]:
        timeout, argv = float(argv[1]), argv[2:]
    i = argv.index("--")
    tests, mutants = argv[:i], argv[i + 1:]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mutmut_generate import mutant_names

    mutants = [n for m in mutants for n in (mutant_names([m]) if set("*?[") & set(m) else [m])]
    sys.path.insert(0, str(Path("mutants/src").resolve()))
    import pytest

    os.environ["MUTANT_UNDER_TEST"] = "none"  # before collection: tests that skip themselves under mutmut see it
    loop = MutantLoop(mutants, timeout)
    rc = pytest.main(["-q", "-p", "no:cacheprovider", *tests], plugins=[loop])
    return 1 if rc or getattr(loop, "survived", 0) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
