"""Loading experiment configs: YAML files validated on load, ``base:`` inheritance and ``--set a.b=value`` overrides.

The config (:class:`~bayespeft.config.experiment.ExperimentConfig`) has one section per stage, each a
:class:`bayespeft.section.Section` owned by the library package that uses it. Errors are collected into one
:class:`ConfigError` whose message names every bad key (with the closest valid key) and every bad value (with what
is allowed).

A YAML file may start with ``base: other.yaml`` (relative to the file); the base is loaded first and this file's
keys are deep-merged over it, so experiment files only hold what differs from the defaults.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..registry import closest
from ..section import Section
from .experiment import ExperimentConfig


class ConfigError(ValueError):
    """A config that does not validate; the message lists every problem and how to fix it."""


# ----------------------------------------------------------------------------------------------------------------
# loading


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def flatten_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1, "c": {}}}`` -> ``{"a.b": 1, "a.c": {}}``: dotted keys; lists, scalars and empty dicts are
    leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def yaml_error_line(e: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what is wrong and where (line:column, 1-based)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = " ".join(str(getattr(e, "problem", None) or e).split())
    return f"not valid YAML{where}: {what}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in first:
                    line = first[key].start_mark.line + 1
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {line}); keep only one", key_node.start_mark
                    )
                first[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping_text(path: Path, error: type[Exception] = ConfigError) -> Any:
    """``yaml.safe_load`` of a UTF-8 file (duplicate keys refused), every failure a one-line ``error`` naming the file."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a UTF-8 text file (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: {yaml_error_line(e)}") from None


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config, resolving ``base:`` chains (relative to each file)."""
    path = Path(path).resolve()
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; pass a config file (e.g. {path}/config.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"circular 'base:' chain: {' -> '.join(str(p) for p in (*_seen, path))}")
    raw = load_yaml_mapping_text(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    bases = [base] if isinstance(base, str) else list(base)
    merged: dict = {}
    for b in bases:
        target = path.parent / str(b)
        if not target.exists():
            raise ConfigError(f"{path}: base: {b} names a config file that does not exist ({target.resolve()}); "
                              "a base path is relative to the file that names it")
        merged = deep_merge(merged, read_yaml(target, (*_seen, path)))
    return deep_merge(merged, raw)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, booleans, lists, null)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE with a dotted key, e.g. train.lr=1e-3 (got {item!r})")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set has an empty key in {item!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {key}: {p!r} is a value, not a section")
            node = node[p]
        node[parts[-1]] = parsed
    return out


def _model_at(loc: tuple, root: type[Section] = ExperimentConfig) -> type[Section] | None:
    """The Section class that owns the field at ``loc[:-1]`` (to list valid keys)."""
    model: Any = root
    for part in loc[:-1]:
        if not isinstance(part, str) or not hasattr(model, "model_fields") or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = getattr(ann, "__args__", None) or ()
        cands = [ann, *args]
        nxt = next((c for c in cands if isinstance(c, type) and issubclass(c, Section)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def _got(msg: str, value: Any) -> str:
    """`` (got VALUE)`` unless the message already states the value, or the value is a whole section (a dict: the
    user's own section, which would only repeat the file)."""
    if isinstance(value, dict) or "got " in msg or repr(value) in msg:
        return ""
    return f" (got {value!r})"


def empty_section(e: dict[str, Any], loc: tuple) -> bool:
    """Is error ``e`` a top-level section written with nothing under it (YAML ``train:`` is ``None``)?"""
    return (len(loc) == 1 and loc[0] in ExperimentConfig.model_fields and e.get("input") is None
            and e["type"] in ("model_type", "dict_type"))


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    lines = [f"invalid {source}:"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        dotted = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            owner = _model_at(loc)
            valid = sorted(owner.model_fields) if owner else []
            hint = closest(str(loc[-1]), valid) if valid else None
            msg = f"  - unknown key '{dotted}'"
            if hint:
                msg += f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (hint,))}'?)"
            if valid:
                msg += f"; valid keys here: {', '.join(valid)}"
            lines.append(msg)
        elif e["type"] == "missing":
            lines.append(f"  - missing required key '{dotted}'")
        elif empty_section(e, loc):  # `train:` with nothing under it
            keep = " or delete the line" if not ExperimentConfig.model_fields[loc[0]].is_required() else ""
            lines.append(f"  - {dotted}: the section is empty; give its keys (`bayespeft config {loc[0]}` lists "
                         f"them){keep}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {dotted}: {msg}{_got(msg, e.get('input'))}")
    return "\n".join(lines)


def validate(raw: dict, source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load, merge ``base:`` chains, apply ``--set`` overrides and validate."""
    raw = read_yaml(path)
    if not raw and not overrides:
        raise ConfigError(f"{path} is empty; a config needs at least the data, model and adapter sections (start "
                          "from one under configs/, e.g. configs/digits/lora.yaml; `bayespeft config` lists every key)")
    return validate(apply_overrides(raw, overrides), source=str(path))


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what a run directory stores)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
