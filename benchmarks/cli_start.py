"""Start-up cost of the quick CLI commands: wall time and peak memory of each, every run a fresh process.

Target (issue 11, "Speed where users wait"): ``bayespeft --help``, ``list``, ``config`` (and ``config SECTION``)
and ``validate CONFIG`` each take at most 1.5 s and 300 MB peak resident memory. They parse, read YAML and
validate with pydantic; torch, transformers, timm, PEFT, ... are imported only by the commands that run models.

Each command runs ``--repeats`` times in a fresh interpreter started exactly like the ``bayespeft`` console script
(``from bayespeft.cli import main``), with ``PYTHONPATH`` set to this checkout's ``src``; wall time is measured
around the child process, peak RSS is the child's own ``ru_maxrss`` (``os.wait4``, so one child never reports
another's peak), CPU time its user + system time (what the command costs when the machine is not shared; wall time
on a loaded machine includes waiting for a core). Printed per command: median and max wall time, median CPU time,
median peak RSS, and whether the median wall time and peak RSS meet the targets. A cold first run (disk cache) is
included in max but not in the median when ``--repeats`` >= 3.

Usage: ``python benchmarks/cli_start.py [--repeats 5] [--config configs/digits/lora.yaml] [--json OUT]``.
Exit status 1 when a command fails (non-zero exit), never because of a missed target (timings are noisy on a
shared machine: report them with the load, ``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_MB = 1.5, 300.0
#: what the console script runs (``[project.scripts] bayespeft = "bayespeft.cli:main"``)
ENTRY = "import sys; from bayespeft.cli import main; sys.exit(main())"


def commands(config: str) -> dict[str, list[str]]:
    """The quick commands, labelled as printed."""
    return {
        "--help": ["--help"],
        "list models": ["list", "models"],
        "list samplers": ["list", "samplers"],
        "config": ["config"],
        "config sgmcmc": ["config", "sgmcmc"],
        f"validate {config}": ["validate", config],
    }


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """``(wall seconds, CPU seconds, peak RSS in MB, exit status)`` of one fresh ``bayespeft ARGS`` process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode:
        print(f"bayespeft {' '.join(args)} failed ({proc.returncode}): {err.strip()[-500:]}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, proc.returncode  # maxrss: KiB on Linux


def measure(args: list[str], repeats: int, env: dict[str, str]) -> dict:
    runs = [run_once(args, env) for _ in range(repeats)]
    kept = runs[1:] if len(runs) >= 3 else runs  # the first run pays for a cold disk cache
    return {"median_s": statistics.median(r[0] for r in kept), "max_s": max(r[0] for r in runs),
            "median_cpu_s": statistics.median(r[1] for r in kept),
            "median_mb": statistics.median(r[2] for r in kept), "max_mb": max(r[2] for r in runs),
            "failed": sum(r[3] != 0 for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    p.add_argument("--config", default="configs/cifar10/resnet18_sgld.yaml",
                   help="config for `validate` (default: one with every section, sgmcmc included)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    a = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {a.repeats} fresh processes each; "
          f"target <= {TARGET_S} s and <= {TARGET_MB:.0f} MB")
    print(f"{'command':<52} {'median s':>9} {'max s':>7} {'CPU s':>6} {'peak MB':>8}  target")
    results, failed = {}, 0
    for label, args in commands(a.config).items():
        r = results[label] = measure(args, a.repeats, env)
        ok = r["median_s"] <= TARGET_S and r["median_mb"] <= TARGET_MB
        failed += r["failed"]
        print(f"{label:<52} {r['median_s']:>9.2f} {r['max_s']:>7.2f} {r['median_cpu_s']:>6.2f} {r['median_mb']:>8.0f}  "
              f"{'met' if ok else 'MISSED'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"load": os.getloadavg(), "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
