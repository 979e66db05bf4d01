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


def _checkpoint_args(p: argparse.ArgumentParser, required: bool, help: str) -> None:
    p.add_argument("--checkpoint", required=required, help=help)
    p.add_argument("--skip-base-check", action="store_true",
                   help="load the checkpoint even if the model's base weights differ from those it was trained on")


def _load(args):
    from .config import load_config

    return load_config(args.config, args.overrides)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    from .table import format_table

    print(format_table(rows, cols))


def _track_args(p, default: str) -> None:
    p.add_argument("--track", choices=["mlflow"], help="also log the params, metrics and plots to MLflow "
                   "(pip install 'bayespeft[track]')")
    p.add_argument("--track-uri", metavar="URI", help=f"MLflow tracking location (default $MLFLOW_TRACKING_URI, "
                   f"else the directory {default})")


@command("train", "MAP fine-tuning of a backbone with an adapter (lora, normtune, hybrid, full, linear)")
def _train(p):
    _config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="resume an interrupted run from its last checkpoint")
    _track_args(p, "<output.root>/mlruns")

    def run(args):
        from .experiments.train import train_run

        cfg = _load(args)
        tracker = None
        if args.track or args.track_uri:
            from pathlib import Path

            from .experiments.sweep.track import make_tracker

            tracker = make_tracker(args.track, args.track_uri, Path(cfg.output.root), cfg.name)
        out = train_run(cfg, run_dir=args.resume, resume=args.resume is not None)
        rows = [{"split": s, **m} for s, m in out["map"].items()]
        _print_table(rows, ["split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")
        if tracker is not None:
            tracker.log_train(cfg.model_dump(mode="json"), out)

    p.set_defaults(run=run)


def _value_flags(p, table: list[tuple[str, str]]) -> list[str]:
    """``--FLAG VALUE`` options (strings, validated later with the config) from ``(flag, help)`` rows; their names."""
    for flag, hlp in table:
        p.add_argument(f"--{flag}", help=hlp)
    return [flag for flag, _ in table]


@command("evaluate", "evaluate a saved checkpoint (MAP) or an SG-MCMC sample store on the test split(s)")
def _evaluate(p):
    _config_args(p)
    _checkpoint_args(p, True, "adapter/checkpoint directory or run directory")
    p.add_argument("--samples", help="SG-MCMC sample store (or the run directory holding samples/): MAP vs single "
                   "sample vs ensemble, with the convergence verdict")

    def run(args):
        cfg = _load(args)
        if args.samples:
            from .experiments.sample import evaluate_samples_run

            _print_sgmcmc(evaluate_samples_run(cfg, args.checkpoint, args.samples, check_base=not args.skip_base_check))
            return
        from .experiments.evaluate import evaluate_run

        out = evaluate_run(cfg, args.checkpoint, check_base=not args.skip_base_check)
        rows = [{"posterior": k, "split": s, **m} for k, v in out.items() if isinstance(v, dict) and k not in ("params",) for s, m in v.items() if isinstance(m, dict) and "acc" in m]
        _print_table(rows, ["posterior", "split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")

    p.set_defaults(run=run)


@command("laplace", "fit a Laplace posterior over the tuned parameters of a checkpoint; MAP vs Laplace table")
def _laplace(p):
    _config_args(p)
    _checkpoint_args(p, True, "adapter/checkpoint directory or run directory")
    flags = _value_flags(p, [
        ("structure", "diag | kfac | lowrank_kfac | full"),
        ("subset", "all | last_layer | comma-separated module-name prefixes"),
        ("curvature", "ggn | fisher"),
        ("prior", "prior tuning: marglik | gridsearch | none (a fixed prior precision: none with "
                  "--set laplace.prior_precision=X)"),
        ("predictive", "glm | mc"),
        ("link", "probit | mc (for the GLM predictive)"),
    ])

    def run(args):
        from .experiments.laplace import laplace_run

        out = laplace_run(_load(args), args.checkpoint, {k: getattr(args, k) for k in flags},
                          check_base=not args.skip_base_check)
        _print_table(out["table"], ["posterior", "split", "acc", "nll", "ece", "brier"])
        print(f"run directory: {out['run_dir']}")

    p.set_defaults(run=run)


@command("layerwise", "layer-wise Laplace: which block's (or module's) uncertainty buys calibration; ranked ΔECE table")
def _layerwise(p):
    _config_args(p)
    _checkpoint_args(p, True, "adapter/checkpoint directory or run directory (the MAP)")
    _value_flags(p, [
        ("structure", "diag | kfac | lowrank_kfac | full (default kfac)"),
        ("predictive", "mc (sampled weights, default) | glm (linearised)"),
        ("link", "probit | mc (for --predictive glm)"),
        ("samples", "posterior samples S for mc (or logit samples for --link mc); default 30"),
        ("group", "block (blocks/stages + head, default) | module (each adapted module)"),
        ("groups", "comma-separated group names: evaluate only these"),
        ("prior", "marglik (each group's evidence, default) | a fixed prior precision"),
        ("greedy", "K: add up to K groups one by one by ECE on the validation split"),
    ])
    p.add_argument("--out", metavar="DIR", help="output directory (default <output.root>/<name>-layerwise-...); "
                   "rerunning with the same arguments resumes there")

    def run(args):
        from .experiments.layerwise import FLAGS, format_ranking, layerwise_run

        out = layerwise_run(_load(args), args.checkpoint, {k: getattr(args, k) for k in FLAGS},
                            check_base=not args.skip_base_check, out=args.out)
        print(format_ranking(out))
        print(f"results: {out['out']}")

    p.set_defaults(run=run)


@command("analyze", "summarise one or more layer-wise runs (e.g. seeds): ranked table, statistics, plots")
def _analyze(p):
    p.add_argument("dirs", nargs="+", metavar="DIR", help="output directories of `bayespeft layerwise`")
    p.add_argument("--out", metavar="OUT", help="where to write (default: DIR/analysis for one run, else ./analysis)")

    def run(args):
        from .experiments.analyze import analyze_runs, format_summary

        out = analyze_runs(args.dirs, args.out)
        print(format_summary(out))
        print(f"analysis: {out['out']}")

    p.set_defaults(run=run)


@command("sample", "SG-MCMC over the tuned parameters: MAP warm start, chains, diagnostics, evaluation")
def _sample(p):
    _config_args(p)
    _checkpoint_args(p, False, "MAP warm start (adapter/checkpoint or run directory); trains one if absent")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted `bayespeft sample` run of this config "
                   "from each chain's last kept sample (bit-exact), then evaluate it")

    def run(args):
        from .experiments.sample import sample_run

        out = sample_run(_load(args), args.checkpoint, resume=args.resume, check_base=not args.skip_base_check)
        if "nothing_to_do" in out:
            print(out["nothing_to_do"])
            return
        _print_sgmcmc(out)

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


@command("doctor", "health check: versions, devices, directories, local data/weights, the Hugging Face hub and a short smoke run")
def _doctor(p):
    p.add_argument("--quick", action="store_true", help="skip the smoke run (micro ViT, Laplace fit, SGLD steps)")
    p.add_argument("--output-root", default="runs", help="output directory to check (default runs, output.root's default)")
    p.add_argument("--data-root", default="data", help="dataset directory to look in (default data, data.root's default)")

    def run(args):
        from .experiments.doctor import run_doctor

        return run_doctor(quick=args.quick, output_root=args.output_root, data_root=args.data_root)

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
    p.add_argument("section", nargs="?", help="only this section (data, model, adapter, train, laplace, layerwise, sgmcmc, output)")

    def run(args):
        from .config import ExperimentConfig, describe_section

        lines = describe_section(ExperimentConfig)
        if args.section:
            lines = [ln for ln in lines if ln.startswith(args.section + ".") or ln.startswith(args.section + ":")]
            if not lines:
                import difflib

                sections = [k for k in ExperimentConfig.model_fields if k != "name"]
                hint = next(iter(difflib.get_close_matches(args.section, sections, n=1)), None)
                raise ValueError(f"unknown section {args.section!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                                 + f"; sections: {', '.join(sections)}")
        print("\n".join(lines))

    p.set_defaults(run=run)


#: ``bayespeft list WHAT``: the package that owns each registry and the registry's attribute there (imported only
#: when listed). The names come from the registries themselves; the registries know their built-in names without
#: importing the modules that register them (``Registry(lazy=...)``), so listing loads no torch.
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


@command("sweep", "run a study: a sweep file crossing config keys (axes), with cases, stages and a resumable store")
def _sweep(p):
    p.add_argument("sweep", help="sweep YAML file (base:, axes:, cases:, exclude:, stages:, resources:)")
    p.add_argument("--validate-only", action="store_true", help="validate every run; list each bad run with its errors")
    p.add_argument("--dry-run", action="store_true", help="print the plan (count, ids, what differs, status); run nothing")
    p.add_argument("--max-experiments", type=int, metavar="N", help="run at most N pending runs, then stop")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local (this process) or ray")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--retry-failed", action="store_true", help="put the failed runs back to pending and rerun them")
    p.add_argument("--force", action="store_true", help="use a sweep directory made by a different sweep file")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default runs/sweeps/<sweep name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the base config(s), e.g. --set data.root=/data (repeatable)")
    _track_args(p, "<sweep dir>/mlruns")

    def run(args):
        from .experiments.sweep.command import SweepOptions, run_sweep

        out = run_sweep(args.sweep, SweepOptions(
            validate_only=args.validate_only, dry_run=args.dry_run, max_experiments=args.max_experiments,
            executor=args.executor, address=args.address, retry_failed=args.retry_failed, force=args.force,
            out=args.out, overrides=tuple(args.overrides), track=args.track, track_uri=args.track_uri))
        if out["counts"] and out["counts"]["failed"]:
            raise SystemExit(1)

    p.set_defaults(run=run)


@command("report", "statistics, plots and a Markdown report of a sweep: mean ± t-interval over seeds, paired tests")
def _report(p):
    p.add_argument("sweep_dir", help="a sweep directory (the --out of `bayespeft sweep`)")
    p.add_argument("--metrics", help="comma-separated metrics (default: acc@1,acc@5,f1,nll,ece,brier,tuned_%%,"
                   "time_per_epoch_s,throughput,peak_memory_mb)")
    p.add_argument("--by", default="model,dataset,method,rank",
                   help="grouping keys: model, dataset, method, rank, seed, sampler, lr or dotted config keys")
    p.add_argument("--compare", default="acc@1,ece", help="metrics of the paired method comparisons")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--out", metavar="DIR", help="report directory (default SWEEP_DIR/report)")
    p.add_argument("--literature", metavar="FILE", help="published reference numbers to check the runs against, in "
                   "the format of the packaged literature.yaml (default: that file)")

    def run(args):
        from .experiments.sweep.report import METRICS, ReportOptions, build_report

        split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
        doc = build_report(args.sweep_dir, ReportOptions(
            metrics=split(args.metrics) if args.metrics else METRICS, by=split(args.by), compare=split(args.compare),
            plots=not args.no_plots, out=args.out, literature=args.literature))
        out = args.out or f"{args.sweep_dir}/report"
        for row in doc["literature"]:
            published = f"{row['published']}" + (f" {row['interval']}" if row["interval"] else "")
            measured = "n/a" if row["measured"] is None else f"{row['measured']:.4g}"
            note = f" ({row['note']})" if row.get("note") else ""
            print(f"literature {row['reference']}: published {published}, measured {measured} over {row['runs']} "
                  f"run(s): {row['verdict']}{note}")
        print(f"{doc['n_records']} records from {doc['counts']['done']} done runs; report: {out}/report.md")
        if not doc["n_records"]:
            c = doc["counts"]
            print(f"warning: {args.sweep_dir} has no finished run to report on yet ({c['pending']} pending, "
                  f"{c['running']} running, {c['failed']} failed): the tables are empty; run `bayespeft sweep` on it "
                  "first", file=sys.stderr)

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
            status = args.run(args)  # None, or an exit status (doctor: 1 when a check failed)
    except USER_ERRORS as e:
        if os.environ.get("BAYESPEFT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed work is saved in the run directory", file=sys.stderr)
        return 130
    except Exception as e:  # an accelerator out of memory anywhere (evaluation, Laplace, sampling): one line
        if os.environ.get("BAYESPEFT_DEBUG") or not out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"error: out of memory in `bayespeft {args.command}` ({first}). Lower data.eval_batch_size (evaluation, "
              "Laplace fits and predictives) or data.batch_size, set train.auto_batch_size=true (training steps) or "
              "train.precision=bf16, or use a device with more memory; completed work is saved in the run directory",
              file=sys.stderr)
        return 1
    return int(status or 0)


def out_of_memory(e: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (and its CUDA alias), or a ``RuntimeError`` saying "out of memory" (MPS, XPU, older
    torch): checked by name, so this module needs no torch import."""
    if any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


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
