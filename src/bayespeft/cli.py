"""The ``bayespeft`` command: argument parsing only. Each sub-command loads its config (:mod:`bayespeft.config`)
and calls one function of the application layer (:mod:`bayespeft.experiments`); heavy modules are imported inside
the command that needs them, so ``--help``, ``config``, ``validate`` and ``list`` stay quick."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help: str):
    def deco(fn):
        COMMANDS[name] = (help, fn)
        return fn

    return deco


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 --set adapter.r=16 (repeatable)",
    )


def _load(args):
    from .config import load_config

    return load_config(args.config, args.overrides)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    from .table import format_table

    print(format_table(rows, cols))


@command("train", "MAP fine-tuning of a backbone with an adapter (lora, normtune, hybrid, full, linear)")
def _train(p):
    _config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="resume an interrupted run from its last checkpoint")

    def run(args):
        from .experiments.train import train_run

        out = train_run(_load(args), run_dir=args.resume)
        rows = [{"split": s, **m} for s, m in out["map"].items()]
        _print_table(rows, ["split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")

    p.set_defaults(run=run)


@command("evaluate", "evaluate a saved checkpoint (MAP) or an SG-MCMC sample store on the test split(s)")
def _evaluate(p):
    _config_args(p)
    p.add_argument("--checkpoint", required=True, help="adapter/checkpoint directory or run directory")
    p.add_argument("--samples", help="SG-MCMC sample store (or the run directory holding samples/): MAP vs single "
                   "sample vs ensemble, with the convergence verdict")

    def run(args):
        cfg = _load(args)
        if args.samples:
            from .experiments.sample import evaluate_samples_run

            _print_sgmcmc(evaluate_samples_run(cfg, args.checkpoint, args.samples))
            return
        from .experiments.evaluate import evaluate_run

        out = evaluate_run(cfg, args.checkpoint)
        rows = [{"posterior": k, "split": s, **m} for k, v in out.items() if isinstance(v, dict) and k not in ("params",) for s, m in v.items() if isinstance(m, dict) and "acc" in m]
        _print_table(rows, ["posterior", "split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")

    p.set_defaults(run=run)


@command("laplace", "fit a Laplace posterior over the tuned parameters of a checkpoint; MAP vs Laplace table")
def _laplace(p):
    _config_args(p)
    p.add_argument("--checkpoint", required=True, help="adapter/checkpoint directory or run directory")
    for flag, hlp in [
        ("structure", "diag | kfac | lowrank_kfac | full"),
        ("subset", "all | last_layer | comma-separated module-name prefixes"),
        ("curvature", "ggn | fisher"),
        ("prior", "prior tuning: marglik | gridsearch | none"),
        ("predictive", "glm | mc"),
        ("link", "probit | mc (for the GLM predictive)"),
    ]:
        p.add_argument(f"--{flag}", help=hlp)

    def run(args):
        from .experiments.laplace import laplace_run

        cfg = _load(args)
        out = laplace_run(cfg, args.checkpoint, {k: getattr(args, k) for k in ("structure", "subset", "curvature", "prior", "predictive", "link")})
        _print_table(out["table"], ["posterior", "split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")

    p.set_defaults(run=run)


@command("sample", "SG-MCMC over the tuned parameters: MAP warm start, chains, diagnostics, evaluation")
def _sample(p):
    _config_args(p)
    p.add_argument("--checkpoint", help="MAP warm start (adapter/checkpoint or run directory); trains one if absent")

    def run(args):
        from .experiments.sample import sample_run

        _print_sgmcmc(sample_run(_load(args), args.checkpoint))

    p.set_defaults(run=run)


def _print_sgmcmc(out: dict) -> None:
    """MAP vs single sample vs ensemble table, the convergence verdict as measured, and any diverged chains."""
    _print_table(out["table"], ["posterior", "split", "acc", "nll", "ece", "brier"])
    print(f"diagnostics verdict: {out['verdict']}")
    for chain, d in out.get("diverged", {}).items():
        print(f"warning: chain {chain} diverged at step {d['step']} ({d['reason']}); it is excluded from the "
              "ensemble and the diagnostics", file=sys.stderr)
    print(f"run directory: {out['run_dir']}")


@command("quickstart", "the embedded-default experiment on digits: all methods + Bayesian rows, in minutes on a CPU")
def _quickstart(p):
    p.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    p.add_argument("--fast", action="store_true", help="fewer epochs/samples (for a smoke test)")

    def run(args):
        from .experiments.quickstart import run_quickstart

        run_quickstart(out=args.out, fast=args.fast)

    p.set_defaults(run=run)


@command("validate", "validate a config (with --set overrides) and print it resolved, without running anything")
def _validate(p):
    _config_args(p)

    def run(args):
        from .config import dump_config

        print(dump_config(_load(args)), end="")

    p.set_defaults(run=run)


@command("config", "list every config key with its type, default and help text")
def _config(p):
    p.add_argument("section", nargs="?", help="only this section (data, model, adapter, train, laplace, sgmcmc, output)")

    def run(args):
        from .config import ExperimentConfig, describe_section

        lines = describe_section(ExperimentConfig)
        if args.section:
            lines = [ln for ln in lines if ln.startswith(args.section + ".") or ln.startswith(args.section + ":")]
            if not lines:
                raise SystemExit(f"error: unknown section {args.section!r}")
        print("\n".join(lines))

    p.set_defaults(run=run)


#: ``bayespeft list WHAT``: the package that owns each registry and the registry's attribute there (imported only
#: when listed). The names come from the registries themselves, so a new backbone, sampler, ... is listed at once.
REGISTRIES: dict[str, tuple[str, str]] = {
    "models": ("bayespeft.models", "MODELS"),
    "datasets": ("bayespeft.data", "DATASETS"),
    "methods": ("bayespeft.adapters", "ADAPTERS"),
    "structures": ("bayespeft.laplace", "STRUCTURES"),
    "samplers": ("bayespeft.sgmcmc", "SAMPLERS"),
    "schedules": ("bayespeft.sgmcmc", "SCHEDULES"),
}


def registered_names(what: str) -> list[str]:
    """Sorted names in the registry listed as ``what`` in :data:`REGISTRIES`."""
    import importlib

    module, attr = REGISTRIES[what]
    return getattr(importlib.import_module(module), attr).names()


@command("list", f"list registered names: {', '.join(REGISTRIES)}")
def _list(p):
    p.add_argument("what", choices=list(REGISTRIES))

    def run(args):
        print("\n".join(registered_names(args.what)))

    p.set_defaults(run=run)


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bayespeft",
        description="Bayesian parameter-efficient fine-tuning: adapters (PEFT), Laplace, SG-MCMC, calibration.",
    )
    parser.add_argument("--version", action="version", version=f"bayespeft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (hlp, setup) in COMMANDS.items():
        setup(sub.add_parser(name, help=hlp, description=hlp))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    from .errors import USER_ERRORS

    try:
        with warnings_to_stderr():
            args.run(args)
    except USER_ERRORS as e:
        if os.environ.get("BAYESPEFT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed work is saved in the run directory", file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """While a command runs, the library's WARNING log records (rows a loader dropped or truncated, ...) are one
    ``warning: ...`` line each on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("bayespeft")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
