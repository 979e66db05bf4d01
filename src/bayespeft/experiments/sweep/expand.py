"""Expanding a sweep file into runs: axes crossed, exclusions, case rules, per-run validation, run ids.

For every combination of axis values (in the order written, the last axis varying fastest):

1. the base config with the combination's values set;
2. left out if an ``exclude`` entry matches it (every key of the entry has one of its values);
3. the adapter options its method does not read are dropped (:data:`bayespeft.adapters.METHOD_OPTIONS`);
4. the cases whose ``when`` matches (against step 3's config, unset keys at their defaults) apply their literal
   values, then their expressions (evaluated on the config with the literals applied);
5. validated as an :class:`~bayespeft.config.ExperimentConfig`, and once per stage with the stage's options merged
   into its section (``laplace`` / ``sgmcmc``).

The run id is the first 12 hex digits of the SHA-256 of the canonical JSON of the resolved config (without the
``output`` section and ``train.progress``, which the sweep sets, and ``model.offline``, which changes no result) and
the stages: an edited sweep file keeps the ids
of the runs it does not change. Combinations that resolve to the same config (an axis a method does not read, a case
overriding an axis) are one run.

Errors of the sweep as a whole (a case or an exclude entry that matches no run, two cases setting one key to
different values for the same run, an expression that fails) raise :class:`~.spec.SweepError` naming them; errors of
single runs (a value the config rejects) are kept per run (:attr:`PlannedRun.errors`) so that ``--validate-only``
can list every bad run.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from ...adapters import ADAPTERS, METHOD_OPTIONS
from ...config import ConfigError, ExperimentConfig, deep_merge, validate
from .diagnose import dropped_hint, set_by_cases_hint, why_no_match
from .expr import Expression, ExpressionError
from .keys import MISSING, del_key, get_key, same_value, set_key, value_of
from .spec import STAGE_SECTION, Case, Stage, SweepError, SweepSpec

#: config keys left out of the run id (the sweep sets them per run, they do not change results)
ID_EXCLUDED = ("output", "train.progress", "model.offline")


@dataclass
class PlannedRun:
    """One run of the plan; ``config`` is None when ``errors`` is not empty."""

    id: str
    position: int
    axes: dict[str, Any]
    cases: list[int]
    raw: dict
    config: ExperimentConfig | None
    stage_configs: dict[str, ExperimentConfig]
    stages: list[Stage]
    errors: list[str] = field(default_factory=list)
    combinations: int = 1
    base: str = ""

    def config_json(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json") if self.config is not None else self.raw


@dataclass
class Plan:
    spec: SweepSpec
    runs: list[PlannedRun]
    n_combinations: int
    n_excluded: int

    @property
    def invalid(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.errors]

    def varying_keys(self) -> list[str]:
        """Dotted keys whose value differs between runs: the axes, then keys set by cases (in order)."""
        keys = list(self.spec.axes) + [k for c in self.spec.cases for k in c.set if k not in self.spec.axes]
        out = ["base"] if len(self.spec.bases) > 1 else []
        for k in dict.fromkeys(keys):
            vals = {json.dumps(_plain(get_key(r.config_json(), k)), sort_keys=True, default=str) for r in self.runs}
            if len(vals) > 1:
                out.append(k)
        return out

    def differs(self, run: PlannedRun) -> dict[str, Any]:
        """What distinguishes ``run``: its value of every varying key (``None`` where its method does not read it)."""
        return {k: run.base if k == "base" else _plain(get_key(run.config_json(), k)) for k in self.varying_keys()}


def _plain(v: Any) -> Any:
    return None if v is MISSING else v


def matches(raw: dict, rule: dict[str, list[Any]], base: str | None = None) -> bool:
    """Whether every key of ``rule`` has one of its values in ``raw`` (unset keys at their schema default);
    the key ``base`` matches the label of the run's base config."""
    for key, accepted in rule.items():
        v = base if key == "base" else value_of(raw, key)
        if v is MISSING or not any(same_value(v, a) for a in accepted):
            return False
    return True


def drop_unread_options(raw: dict) -> list[str]:
    """Remove the adapter options the run's method does not read; returns the dropped keys."""
    method = value_of(raw, "adapter.method")
    if method not in ADAPTERS:
        return []  # validation reports the unknown method
    reads = ADAPTERS.get(method).options
    dropped = []
    for opt in METHOD_OPTIONS:
        key = f"adapter.{opt}"
        if opt not in reads and isinstance(raw.get("adapter"), dict) and opt in raw["adapter"]:
            del_key(raw, key)
            dropped.append(key)
    return dropped


def run_id(config: dict[str, Any], stages: list[Stage]) -> str:
    """Short hash of the resolved config and the stages (see the module docstring)."""
    cfg = copy.deepcopy(config)
    for key in ID_EXCLUDED:
        del_key(cfg, key)
    doc = {"config": cfg, "stages": [{"kind": s.kind, "options": s.options} for s in stages]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _apply_cases(raw: dict, cases: list[Case], conflicts: dict, combo_desc: str) -> None:
    """Literal values, then expressions, of the matching ``cases``; conflicting values are recorded."""
    setters: dict[str, tuple[Case, Any]] = {}
    exprs: list[tuple[Case, str, Expression]] = []
    for case in cases:
        for key, value in case.set.items():
            if isinstance(value, Expression):
                exprs.append((case, key, value))
                continue
            if key in setters and not same_value(setters[key][1], value):
                conflicts.setdefault((setters[key][0].index, case.index, key), (setters[key][1], value, combo_desc))
            setters[key] = (case, value)
            set_key(raw, key, value)
    computed = {key for _, key, _ in exprs}
    values: list[tuple[Case, str, Any]] = []
    for case, key, expr in exprs:
        for k in expr.keys:
            if k in computed:
                raise SweepError(f"{case.describe()}: {key}: {expr} reads {k!r}, which another case computes by an "
                                 "expression; expressions may only read axis values, literal case values and the base")

        def lookup(k: str) -> Any:
            v = value_of(raw, k)
            if v is MISSING:
                raise KeyError(k)
            return v

        try:
            values.append((case, key, expr.evaluate(lookup)))
        except ExpressionError as e:
            raise SweepError(f"{case.describe()}: {key}: {e} (run {combo_desc})") from None
    for case, key, value in values:
        if key in setters and not same_value(setters[key][1], value):
            conflicts.setdefault((setters[key][0].index, case.index, key), (setters[key][1], value, combo_desc))
        setters[key] = (case, value)
        set_key(raw, key, value)


def expand(spec: SweepSpec) -> Plan:
    """The runs of ``spec`` (see the module docstring); raises :class:`SweepError` for sweep-level errors."""
    axes_all = ({"base": list(spec.bases)} if len(spec.bases) > 1 else {}) | spec.axes
    axis_keys = list(axes_all)
    combos = list(itertools.product(*axes_all.values())) if axis_keys else [()]
    case_hits = [0] * len(spec.cases)
    excl_hits = [0] * len(spec.exclude)
    conflicts: dict[tuple[int, int, str], tuple[Any, Any, str]] = {}
    runs: dict[str, PlannedRun] = {}
    n_excluded = 0
    tested: dict[str, list[tuple[dict, str]]] = {"all": [], "kept": [], "excluded": []}
    excluded_by: list[list[int]] = []  # the exclude entries that matched each of tested["excluded"]
    dropped: set[str] = set()
    for combo in combos:
        axes = dict(zip(axis_keys, combo))
        desc = ", ".join(f"{k}={v}" for k, v in axes.items()) or "the base config"
        label = axes.get("base", next(iter(spec.bases)))
        raw = copy.deepcopy(spec.bases[label])
        for k, v in axes.items():
            if k != "base":
                set_key(raw, k, v)
        tested["all"].append((copy.deepcopy(raw), label))
        hit = [i for i, e in enumerate(spec.exclude) if matches(raw, e, label)]
        dropped.update(drop_unread_options(raw))
        if hit:
            for i in hit:
                excl_hits[i] += 1
            n_excluded += 1
            tested["excluded"].append((raw, label))
            excluded_by.append(hit)
            continue
        tested["kept"].append((copy.deepcopy(raw), label))
        matching = [c for c in spec.cases if matches(raw, c.when, label)]
        for c in matching:
            case_hits[c.index] += 1
        _apply_cases(raw, matching, conflicts, desc)
        run = _resolve(spec, raw, axes, [c.index for c in matching], desc)
        run.base = label
        if run.id in runs:
            runs[run.id].combinations += 1
        else:
            run.position = len(runs)
            runs[run.id] = run

    errors = [f"{spec.cases[i].describe()} matches no run: {_why_case(spec.cases[i], tested, excluded_by, dropped)}"
              for i, n in enumerate(case_hits) if n == 0]
    case_keys = {k for c in spec.cases for k in c.set} - set(spec.axes)
    for i, n in enumerate(excl_hits):
        if n == 0:
            rule = ", ".join(f"{k}={v if len(v) > 1 else v[0]}" for k, v in spec.exclude[i].items())
            why = why_no_match(spec.exclude[i], tested["all"], set_by_cases_hint(case_keys))
            errors.append(f"exclude[{i}] ({rule}) matches no run: {why}; fix or remove this entry")
    for (a, b, key), (va, vb, desc) in conflicts.items():
        errors.append(f"case {a + 1} and case {b + 1} set {key} differently ({va!r} vs {vb!r}), e.g. for the run "
                      f"{desc}; make their `when` rules exclusive or set it in one case")
    if not runs and not errors:
        errors.append("every combination is excluded: the sweep has no runs")
    if errors:
        raise SweepError(f"invalid sweep file {spec.path}:\n" + "\n".join(f"  - {e}" for e in errors))
    return Plan(spec, list(runs.values()), len(combos), n_excluded)


def _why_case(case: Case, tested: dict[str, list[tuple[dict, str]]], excluded_by: list[list[int]],
              dropped: set[str]) -> str:
    """Why ``case`` matched no run: its runs were all excluded (naming the entries), or :func:`why_no_match`."""
    hit = [i for i, (raw, label) in enumerate(tested["excluded"]) if matches(raw, case.when, label)]
    if hit:
        by = sorted({j for i in hit for j in excluded_by[i]})
        return (f"the {len(hit)} run(s) it would match are all excluded by " + ", ".join(f"exclude[{j}]" for j in by)
                + "; remove the case or narrow the exclude")
    return why_no_match(case.when, tested["kept"], dropped_hint(dropped)) + "; fix its `when` or remove the case"


def _resolve(spec: SweepSpec, raw: dict, axes: dict[str, Any], cases: list[int], desc: str) -> PlannedRun:
    errors: list[str] = []
    config = None
    stage_configs: dict[str, ExperimentConfig] = {}
    try:
        config = validate(raw, source=f"run {desc}")
    except ConfigError as e:
        errors.append(str(e))
    if config is not None:
        dumped = config.model_dump(mode="json")
        for st in spec.stages:
            section = STAGE_SECTION[st.kind]
            if section is None:
                stage_configs[st.label] = config
                continue
            try:
                stage_configs[st.label] = validate(deep_merge(dumped, {section: st.options}),
                                                   source=f"stage {st.label} of run {desc}")
            except ConfigError as e:
                errors.append(str(e))
    ident = run_id(config.model_dump(mode="json") if config is not None else raw, spec.stages)
    return PlannedRun(ident, 0, axes, cases, raw, None if errors else config, stage_configs, spec.stages, errors)
