"""``bayespeft config``: every key of a config section with its type, default and help text."""

from __future__ import annotations

from ..section import Section


def describe_section(section: type[Section], prefix: str = "") -> list[str]:
    """One line per field: dotted key, type, default and help text (used by `bayespeft config`)."""
    out = []
    for name, f in section.model_fields.items():
        ann = f.annotation
        args = getattr(ann, "__args__", None) or ()
        sub = next((c for c in (ann, *args) if isinstance(c, type) and issubclass(c, Section)), None)
        if sub is not None:
            out.append(f"{prefix}{name}: section — {f.description or ''}")
            out.extend(describe_section(sub, prefix=f"{prefix}{name}."))
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        tname = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        out.append(f"{prefix}{name} ({tname}, default {default}): {f.description or ''}")
    return out
