"""Why a rule of a sweep file (an ``exclude`` entry, a case's ``when``) matches no run: the reason, in words.

A rule ``{k1: [a, b], k2: [c]}`` matches a run when every key has one of its listed values. Given the configs the
rule was tested against, the reason it matched none is one of:

* a key never takes a listed value: ``adapter.r is never 8 (the runs have 2, 4)``; with a hint when the key is an
  adapter option dropped for the methods that do not read it, or (for ``exclude``) a key set only by cases, which
  apply after exclusion;
* every key matches some run but no run matches all of them: ``no run has adapter.r=8 and train.seed=2 together``;
* (cases) the runs it would match were all excluded: ``every run it would match is excluded by exclude[0]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .keys import MISSING, same_value, value_of

#: (raw config, base label) of each combination a rule was tested against
Tested = Sequence[tuple[dict, str]]


def _value(raw: dict, key: str, label: str) -> Any:
    return label if key == "base" else value_of(raw, key)


def _seen(raws: Tested, key: str) -> list[Any]:
    out: dict[str, Any] = {}
    for raw, label in raws:
        v = _value(raw, key, label)
        out.setdefault(json.dumps("<unset>" if v is MISSING else v, sort_keys=True, default=str), v)
    return list(out.values())


def _fmt(values: Sequence[Any], n: int = 6) -> str:
    shown = ", ".join("unset" if v is MISSING else str(v) for v in values[:n])
    return shown + (f", ... ({len(values)} values)" if len(values) > n else "")


def _rule_text(rule: dict[str, list[Any]]) -> str:
    return " and ".join(f"{k}={v[0] if len(v) == 1 else v}" for k, v in rule.items())


def why_no_match(rule: dict[str, list[Any]], tested: Tested, hint: Callable[[str], str] | None = None) -> str:
    """The reason ``rule`` matched none of ``tested`` (see the module docstring); ``hint(key)`` may add a clause
    for a key that never takes a listed value."""
    if not tested:
        return "there are no runs to match"
    reasons = []
    for key, accepted in rule.items():
        seen = _seen(tested, key)
        if not any(same_value(v, a) for v in seen for a in accepted):
            listed = accepted[0] if len(accepted) == 1 else f"any of {accepted}"
            extra = hint(key) if hint else ""
            reasons.append(f"{key} is never {listed} (the runs have {_fmt(seen)}){extra}")
    if reasons:
        return "; ".join(reasons)
    extra = "".join(hint(k) for k in rule) if hint else ""
    return f"no run has {_rule_text(rule)} together{extra}"


def dropped_hint(dropped: set[str]) -> Callable[[str], str]:
    """Hint for adapter options removed from the runs whose method does not read them."""
    return lambda key: (f"; {key} is dropped from the runs whose adapter method does not read it"
                        if key in dropped else "")


def set_by_cases_hint(case_keys: set[str]) -> Callable[[str], str]:
    """Hint for ``exclude`` keys that only cases set (exclusion is decided before cases apply)."""
    return lambda key: (f"; {key} is set by cases, which apply after exclude (exclude matches the axis and base "
                        "values only)" if key in case_keys else "")
