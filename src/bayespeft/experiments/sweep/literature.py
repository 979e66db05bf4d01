"""The literature check: published reference numbers (``literature.yaml``) against the sweep's matching runs.

For each entry, the runs whose config matches its ``match`` rule (dotted keys; unset keys at their defaults) and
whose record has its ``posterior`` (a label or glob) and ``split`` are its comparable runs. Their metric, in the
paper's unit (``error`` = 100 (1 - acc@1); otherwise ``scale`` x the metric), gives the measured mean and, from 2
runs on, its 95% t-interval (:func:`bayespeft.stats.t_interval`). The verdict:

* published interval ``[lo, hi]`` given (rule ``published interval``): ``within`` if ``lo <= mean <= hi``,
  ``below`` / ``above`` otherwise;
* only a published value (rule ``no interval reported: the published value against the runs' t-interval``):
  ``within`` if it lies inside the measured t-interval, ``below`` / ``above`` if the whole measured interval is
  below / above it; with a single run (no interval) ``undecided``;
* no matching run: ``no comparable run``; when runs of its ``match`` setting exist but with other posteriors or
  splits, the row's ``note`` names those (a misspelt ``posterior`` glob is then visible, not a silent miss).

``split`` must be one the runs are evaluated on (:data:`~bayespeft.experiments.records.SPLITS`).

Every row carries the numbers it was decided on and the rule (``rule``); there is no verdict without them.
"""

from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ...stats import t_interval
from ..records import SPLITS
from .keys import MISSING, check_key, same_value, value_of

ENTRY_KEYS = {"id", "metric", "scale", "value", "interval", "interval_note", "source", "match", "posterior", "split"}
METRICS = ("acc@1", "acc@5", "f1", "nll", "ece", "brier", "error")
RULE_INTERVAL = "published interval: the runs' mean inside it"
RULE_POINT = "no interval reported: the published value against the runs' t-interval"


def load_literature(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Read and check the reference file (default: the packaged ``literature.yaml``); ``ValueError`` naming the file
    for one that cannot be read, is not YAML or not a list of entries."""
    try:
        text = Path(path).read_text() if path else (resources.files(__package__) / "literature.yaml").read_text()
        entries = yaml.safe_load(text) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        what = "is not valid YAML" if isinstance(e, yaml.YAMLError) else "cannot be read"
        raise ValueError(f"reference file {path}: {what} ({why}); give a file in the format of the packaged "
                         "literature.yaml (a list of entries)") from None
    if not isinstance(entries, list):
        raise ValueError(f"reference file {path}: must be a list of entries (got a {type(entries).__name__}); see "
                         "the packaged literature.yaml")
    errors = []
    for i, e in enumerate(entries):
        where = f"entry {i} ({e.get('id', '?')})" if isinstance(e, dict) else f"entry {i}"
        if not isinstance(e, dict):
            errors.append(f"{where}: not a mapping")
            continue
        missing = {"id", "metric", "value", "source", "match"} - set(e)
        unknown = set(e) - ENTRY_KEYS
        if missing or unknown:
            errors.append(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if e.get("metric") not in METRICS:
            errors.append(f"{where}: metric must be one of {METRICS}")
        src = e.get("source") or {}
        if not all(src.get(k) for k in ("paper", "table", "setting")):
            errors.append(f"{where}: source needs paper, table and setting")
        iv = e.get("interval")
        if iv is not None and not (isinstance(iv, list) and len(iv) == 2 and iv[0] <= e.get("value", iv[0]) <= iv[1]):
            errors.append(f"{where}: interval must be [lo, hi] around the value")
        if e.get("split") is not None and e["split"] not in SPLITS:
            errors.append(f"{where}: split must be one of {SPLITS} (got {e['split']!r})")
        for k in e.get("match") or {}:
            msg = check_key(k)
            if msg:
                errors.append(f"{where}: match: {msg}")
    if errors:
        raise ValueError("invalid literature file:\n" + "\n".join(f"  - {x}" for x in errors))
    return entries


def _same_setting(rec: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Does the run's config match the entry's ``match`` rule (whatever its posterior and split)?"""
    for key, want in (entry.get("match") or {}).items():
        v = value_of(rec["config"], key)
        wants = want if isinstance(want, list) else [want]
        if v is MISSING or not any(same_value(v, w) for w in wants):
            return False
    return True


def _matches(rec: dict[str, Any], entry: dict[str, Any]) -> bool:
    if not _same_setting(rec, entry):
        return False
    if entry.get("posterior") and not fnmatch.fnmatchcase(rec["posterior"], entry["posterior"]):
        return False
    return not entry.get("split") or rec["split"] == entry["split"]


def measured_value(rec: dict[str, Any], entry: dict[str, Any]) -> float | None:
    if entry["metric"] == "error":
        acc = rec.get("acc@1")
        return None if acc is None else 100.0 * (1.0 - float(acc))
    v = rec.get(entry["metric"])
    return None if v is None else float(v) * float(entry.get("scale", 1))


def verdict(entry: dict[str, Any], values: list[float], level: float = 0.95) -> dict[str, Any]:
    """The decision of the module docstring for ``values`` (the comparable runs, in the paper's unit)."""
    iv = entry.get("interval")
    rule = RULE_INTERVAL if iv is not None else RULE_POINT
    if not values:
        return {"verdict": "no comparable run", "measured": None, "measured_interval": None, "runs": 0, "rule": rule}
    s = t_interval(values, level)
    mi = [s.lo, s.hi] if s.lo is not None else None
    if iv is not None:
        v = "within" if iv[0] <= s.mean <= iv[1] else "below" if s.mean < iv[0] else "above"
    elif mi is None:
        v = "undecided (1 run and no published interval)"
    else:
        v = "within" if mi[0] <= entry["value"] <= mi[1] else "below" if mi[1] < entry["value"] else "above"
    return {"verdict": v, "measured": s.mean, "measured_interval": mi, "runs": s.n, "rule": rule}


def check_literature(entries: list[dict[str, Any]], records: list[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """One row per reference: published value and interval, comparable runs, measured mean/interval, verdict."""
    out = []
    for e in entries:
        vals = [v for v in (measured_value(r, e) for r in records if _matches(r, e)) if v is not None]
        src = e["source"]
        out.append({"reference": e["id"], "metric": e["metric"], "published": e["value"], "interval": e.get("interval"),
                    "source": f"{src['paper']}; {src['table']}; {src['setting']}", **verdict(e, vals, level),
                    "note": "" if vals else near_miss(e, records)})
    return out


def near_miss(entry: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """For an entry without comparable runs: the posteriors and splits of the runs of its ``match`` setting
    (empty when there are none)."""
    near = [r for r in records if _same_setting(r, entry)]
    if not near:
        return ""
    posts, splits = sorted({r["posterior"] for r in near}), sorted({r["split"] for r in near})
    return (f"runs of its setting have posterior(s) {', '.join(posts)} on {', '.join(splits)}; it asks posterior "
            f"{entry.get('posterior') or 'any'!s} on {entry.get('split') or 'any split'}")
