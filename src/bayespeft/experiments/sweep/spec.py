"""The sweep file: schema, loading and validation (expansion into runs is :mod:`.expand`).

A sweep file is one small YAML file::

    name: peft-vit-baselines            # optional; default: the file name
    base: ../cifar10/vit.yaml           # an experiment config, relative to this file (its own base: chain applies)
                                        # or a mapping {label: path}: then `base` is an axis, matched by label
    axes:                               # crossed: one run per combination (any dotted config key)
      model.name: [deit_tiny_patch16_224, deit_small_patch16_224]
      adapter.method: [lora, full]
      adapter.r: [2, 4, 8]
      train.seed: [42, 123, 456]
    cases:                              # small overrides for the runs a rule matches (in order)
      - when: {adapter.method: [lora, hybrid]}
        set: {adapter.alpha: "${2 * adapter.r}", adapter.dropout: 0.1}
      - when: {adapter.method: hybrid}
        set: {adapter.r: 8}
    exclude:                            # combinations left out (every listed key must match)
      - {model.name: deit_small_patch16_224, train.seed: 456}
    stages: [train, evaluate, {laplace: {structure: kfac}}, {sample: {sampler: sgld}}]
    resources: {cpus: 1, gpus: 0, memory: 4GB}   # per run, for --executor ray

``when`` values are a value or a list of accepted values, matched against the run's config after its axis
values (unset keys count as their defaults); a case without ``when`` applies to every run. ``set`` values are
literals, or expressions ``"${...}"`` of the tiny language of :mod:`.expr` (numbers, dotted config keys,
``+ - * / // % **``, ``min max int round abs``). The options of :data:`bayespeft.adapters.METHOD_OPTIONS`
(``r``, ``alpha``, ...) that a run's adapter method does not read are dropped after the axes are applied (so
``adapter.method: full`` ignores the ``adapter.r`` axis, and the combinations that then coincide are one run);
a case that sets such an option explicitly is an error for that run, as it is in a config.

Stages: ``train`` (MAP, :mod:`bayespeft.experiments.train`), ``evaluate`` (:mod:`~bayespeft.experiments.evaluate`
on the trained checkpoint), ``laplace`` (options: keys of the ``laplace`` section,
:mod:`~bayespeft.experiments.laplace`), ``sample`` (options: keys of the ``sgmcmc`` section,
:mod:`~bayespeft.experiments.sample`). The first stage must be ``train``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import ConfigError, apply_overrides, read_yaml
from ...config.load import load_yaml_mapping_text
from ...registry import closest
from .expr import ExpressionError, is_expression, parse
from .keys import check_key, same_value

TOP_KEYS = ("name", "description", "base", "axes", "cases", "exclude", "stages", "resources")
STAGE_KINDS = ("train", "evaluate", "laplace", "sample")
#: the config section a stage's options override
STAGE_SECTION = {"train": None, "evaluate": None, "laplace": "laplace", "sample": "sgmcmc"}
RESOURCE_KEYS = ("cpus", "gpus", "memory")


class SweepError(ConfigError):
    """A sweep file that does not validate; the message lists every problem."""


@dataclass(frozen=True)
class Case:
    """Rule ``index`` (0-based, as written): ``when`` {key: accepted values}, ``set`` {key: literal or Expression}."""

    index: int
    when: dict[str, list[Any]]
    set: dict[str, Any]

    def describe(self) -> str:
        when = ", ".join(f"{k}={v if len(v) > 1 else v[0]}" for k, v in self.when.items()) or "every run"
        return f"case {self.index + 1} (when {when})"


@dataclass(frozen=True)
class Stage:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "options": self.options, "label": self.label}


@dataclass(frozen=True)
class Resources:
    """Per-run resource request of the Ray executor: CPUs, GPUs (fractions allowed), memory in bytes (or None)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None


@dataclass
class SweepSpec:
    """A validated sweep file; ``bases`` maps a label (the file stem for a single base) to its raw config."""

    path: Path
    name: str
    bases: dict[str, dict]
    axes: dict[str, list[Any]]
    cases: list[Case]
    exclude: list[dict[str, list[Any]]]
    stages: list[Stage]
    resources: Resources
    document: dict  # the sweep file as written (for the store's "made by a different sweep file" check)


def parse_memory(v: Any) -> int:
    """``4GB``, ``512MiB``, ``2e9`` -> bytes."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return int(v)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B|B)?\s*", str(v), re.I)
    if not m:
        raise ValueError(f"memory must be a number of bytes or like '4GB' / '512MiB', got {v!r}")
    unit = (m.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return int(float(m.group(1)) * base**power)


def _values(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def _check_keys(keys: Any, where: str, errors: list[str], allow_base: bool = False) -> None:
    for k in keys:
        if k == "base":
            if not allow_base:
                errors.append(f"{where}: 'base' is not a config key; it matches the label of a base config, only in "
                              "`when:` and `exclude:` of a sweep whose base: maps several labels {label: path}")
            continue
        msg = check_key(str(k))
        if msg:
            errors.append(f"{where}: {msg}")


def _parse_stage(item: Any, i: int, errors: list[str]) -> Stage | None:
    if isinstance(item, str):
        kind, options = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, options = next(iter(item.items()))
        options = options or {}
    else:
        errors.append(f"stages[{i}]: a stage is a name ({', '.join(STAGE_KINDS)}) or a one-key mapping "
                      f"{{name: {{options}}}}, got {item!r}")
        return None
    if kind not in STAGE_KINDS:
        hint = closest(str(kind), list(STAGE_KINDS))
        errors.append(f"stages[{i}]: unknown stage {kind!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                      + f"; stages: {', '.join(STAGE_KINDS)}")
        return None
    if not isinstance(options, dict):
        errors.append(f"stages[{i}] ({kind}): options must be a mapping, got {options!r}")
        return None
    section = STAGE_SECTION[kind]
    if section is None and options:
        errors.append(f"stages[{i}] ({kind}): this stage takes no options (got {sorted(options)})")
    elif section is not None:
        _check_keys([f"{section}.{k}" for k in options], f"stages[{i}] ({kind})", errors)
    label = kind
    if kind == "laplace" and "structure" in options:
        label = f"laplace-{options['structure']}"
    if kind == "sample" and "sampler" in options:
        label = f"sample-{options['sampler']}"
    return Stage(kind, dict(options), label)


def _short(v: Any, n: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def looks_like_config(path: Path, doc: Any) -> None:
    """One-line error for an experiment config given where a sweep file is expected (no ``base:``/``axes:``,
    config sections at the top)."""
    if not isinstance(doc, dict) or "base" in doc or "axes" in doc:
        return
    from ...config import ExperimentConfig

    sections = [k for k in doc if k in ExperimentConfig.model_fields]
    if sections and not any(k in TOP_KEYS for k in doc if k != "name"):
        raise SweepError(
            f"{path} looks like an experiment config (it has {', '.join(sections)}), not a sweep file: run it with "
            f"`bayespeft train {path}`, or write a sweep file with `base: {path.name}` and `axes:`")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read and validate a sweep file (every problem in one :class:`SweepError`); see the module docstring.

    ``overrides`` (``KEY=VALUE``, as ``--set`` of the other commands) apply to every base config."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    doc = load_yaml_mapping_text(path, SweepError)
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with base:, axes:, ... (got {type(doc).__name__})")
    looks_like_config(path, doc)
    errors: list[str] = []
    for k in doc:
        if k not in TOP_KEYS:
            hint = closest(str(k), list(TOP_KEYS))
            errors.append(f"unknown sweep key {k!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                          + f"; valid keys: {', '.join(TOP_KEYS)}")
    bases: dict[str, dict] = {}
    base = doc.get("base")
    if isinstance(base, str) and base:
        base = {Path(base).stem: base}
    if not isinstance(base, dict) or not base or not all(isinstance(v, str) and v for v in base.values()):
        errors.append("base: required, the path of an experiment config relative to the sweep file, or a mapping "
                      "{label: path} of several")
        base = {}
    for label, rel in base.items():
        try:
            raw = read_yaml(path.parent / rel)
            if isinstance(raw, dict) and "axes" in raw:
                raise ConfigError(f"{rel} is a sweep file (it has axes:), not an experiment config; name the "
                                  "experiment config it uses as base:")
            bases[str(label)] = apply_overrides(raw, list(overrides))
        except ConfigError as e:
            errors.append(f"base {label}: {e}" if len(base) > 1 else f"base: {e}")
    multi = len(bases) > 1

    axes_doc = doc.get("axes") or {}
    axes: dict[str, list[Any]] = {}
    if not isinstance(axes_doc, dict):
        errors.append(f"axes: a mapping of config key -> list of values, got {axes_doc!r}")
        axes_doc = {}
    _check_keys(axes_doc, "axes", errors)
    for k, v in axes_doc.items():
        vals = _values(v)
        if not vals:
            errors.append(f"axes: {k!r} has no values; give at least one (or remove the axis)")
        dups = [x for i, x in enumerate(vals) if any(same_value(x, y) for y in vals[:i])]
        if dups:
            errors.append(f"axes: {k!r} lists {dups[0]!r} more than once ({vals}); each value is one run: remove "
                          "the duplicate (or put the value you meant)")
        axes[str(k)] = vals

    cases: list[Case] = []
    cases_doc = doc.get("cases") or []
    if not isinstance(cases_doc, list):
        errors.append("cases: a list of {when: {...}, set: {...}} rules")
        cases_doc = []
    for i, c in enumerate(cases_doc):
        where = f"cases[{i}]"
        if not isinstance(c, dict) or set(c) - {"when", "set"} or not isinstance(c.get("set"), dict) or not c["set"]:
            errors.append(f"{where}: a case is {{when: {{key: value(s)}}, set: {{key: value}}}} with a non-empty "
                          f"set (got {c!r})")
            continue
        when = c.get("when") or {}
        if not isinstance(when, dict):
            errors.append(f"{where}.when: a mapping of config key -> value or list of values (got {when!r})")
            continue
        _check_keys(when, f"{where}.when", errors, allow_base=multi)
        _check_keys(c["set"], f"{where}.set", errors)
        sets: dict[str, Any] = {}
        for k, v in c["set"].items():
            if is_expression(v):
                try:
                    expr = parse(v)
                except ExpressionError as e:
                    errors.append(f"{where}.set.{k}: {e}")
                    continue
                _check_keys(expr.keys, f"{where}.set.{k} {v}", errors)
                sets[str(k)] = expr
            else:
                sets[str(k)] = v
        for k, v in when.items():
            if not _values(v):
                errors.append(f"{where}.when: {k!r} lists no values")
        cases.append(Case(i, {str(k): _values(v) for k, v in when.items()}, sets))

    exclude: list[dict[str, list[Any]]] = []
    excl_doc = doc.get("exclude") or []
    if not isinstance(excl_doc, list):
        errors.append(f"exclude: a list of mappings {{key: value or list of values}}, e.g. "
                      f"[{{train.seed: 456}}]; got {_short(excl_doc)} (write each entry as a list item '- {{...}}')")
        excl_doc = []
    for i, e in enumerate(excl_doc):
        if not isinstance(e, dict) or not e:
            errors.append(f"exclude[{i}]: an entry is a non-empty mapping {{key: value or list of values}}, "
                          f"got {_short(e)}")
            continue
        _check_keys(e, f"exclude[{i}]", errors, allow_base=multi)
        bad = [k for k, v in e.items() if not _values(v)]
        if bad:
            errors.append(f"exclude[{i}]: {', '.join(map(repr, bad))} lists no values")
            continue
        exclude.append({str(k): _values(v) for k, v in e.items()})

    stages: list[Stage] = []
    stages_doc = doc.get("stages", ["train"])
    if not isinstance(stages_doc, list) or not stages_doc:
        errors.append("stages: a non-empty list, e.g. [train, evaluate, {laplace: {structure: kfac}}]")
        stages_doc = []
    for i, item in enumerate(stages_doc):
        st = _parse_stage(item, i, errors)
        if st is not None:
            stages.append(st)
    if stages and stages[0].kind != "train":
        errors.append(f"stages: the first stage must be train (the other stages use its checkpoint), got {stages[0].kind!r}")
    seen: dict[str, int] = {}
    for i, st in enumerate(stages):
        n = seen[st.label] = seen.get(st.label, 0) + 1
        if n > 1:
            stages[i] = Stage(st.kind, st.options, f"{st.label}-{n}")
    if sum(st.kind == "train" for st in stages) > 1:
        errors.append("stages: train may appear only once")

    res_doc = doc.get("resources") or {}
    resources = Resources()
    if not isinstance(res_doc, dict):
        errors.append(f"resources: a mapping {{cpus, gpus, memory}}, got {res_doc!r}")
    else:
        bad = [k for k in res_doc if k not in RESOURCE_KEYS]
        if bad:
            errors.append(f"resources: unknown keys {bad}; valid: {', '.join(RESOURCE_KEYS)}")
        try:
            cpus = float(res_doc.get("cpus", 1))
            gpus = float(res_doc.get("gpus", 0))
            mem = parse_memory(res_doc["memory"]) if res_doc.get("memory") is not None else None
            if cpus <= 0 or gpus < 0:
                raise ValueError(f"cpus must be > 0 and gpus >= 0 (got cpus={cpus}, gpus={gpus})")
            resources = Resources(cpus, gpus, mem)
        except (TypeError, ValueError) as e:
            errors.append(f"resources: {e}")

    if errors:
        raise SweepError(f"invalid sweep file {path}:\n" + "\n".join(f"  - {e}" for e in errors))
    name = str(doc.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepError(f"invalid sweep file {path}:\n  - name: letters, digits, '_', '.', '-' only (got {name!r})")
    return SweepSpec(path, name, bases, axes, cases, exclude, stages, resources, doc)
