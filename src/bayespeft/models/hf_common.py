"""Shared Hugging Face plumbing: weight/config/tokenizer loading with clear errors.

``cfg.path`` (a local model directory) is read with ``local_files_only=True``. A name with a hub id
(``roberta-base``, ``bert-base-uncased``, ``phi-2`` = ``microsoft/phi-2``) is loaded by ``from_pretrained(hub_id)``:
downloaded into the Hugging Face hub cache when missing, or, offline (``HF_HUB_OFFLINE=1`` / ``model.offline:
true``), read from that cache only -- see :mod:`bayespeft.models.hub`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .config import ModelConfig
from .hub import hub_down, local_only, offline_reason, unavailable
from .registry import ModelEntry


def local_dir(path: str, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {p} is not a directory (expected a local Hugging Face model directory)")
    return str(p)


def weights_source(cfg: ModelConfig, entry: ModelEntry) -> str:
    """``cfg.path`` (must be a directory) or the registered hub id (downloaded or read from the hub cache)."""
    if cfg.path:
        return local_dir(cfg.path, "model.path")
    if entry.hub_id:
        return entry.hub_id
    raise ValueError(f"model {cfg.name!r} needs model.path (a local Hugging Face model directory) to load pretrained weights")


def hub_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """``local_files_only=True`` for ``cfg.path``, offline hub ids and a hub that cannot be reached (:func:`hub_down`:
    the cache serves at once, no retries); nothing online (the library downloads)."""
    return local_only(bool(cfg.path) or offline_reason(cfg) is not None or hub_down(cfg) is not None)


def load_error(cfg: ModelConfig, src: str, what: str, e: Exception, fix: str) -> Exception:
    """The error for ``what`` (weights, tokenizer) of ``cfg`` that ``from_pretrained(src)`` could not load: about
    the directory for ``cfg.path``; for a hub id, a :class:`~bayespeft.errors.HubError` naming id and cache when
    the files are missing (an ``OSError``: not cached offline, or not downloadable), else about the cached files."""
    if cfg.path:
        return CheckpointError(f"could not load {cfg.name!r} from {src}: {e}. {fix}")
    if isinstance(e, OSError):
        only = what == "tokenizer" and cfg.pretrained is False
        reason, down = offline_reason(cfg), hub_down(cfg)
        cause = None if down is not None and reason is None else e  # unreachable: the probe's cause says it all
        return unavailable(cfg.name, src, reason, cause, "tokenizer_only" if only else what, down)
    return CheckpointError(f"could not load {cfg.name!r} {what} {src!r} from the Hugging Face cache: {e}. {fix}")


def from_pretrained(auto_cls: Any, cfg: ModelConfig, entry: ModelEntry, head_modules: tuple[str, ...], **kw: Any):
    """``auto_cls.from_pretrained`` (see :func:`hub_kwargs`); warn about freshly initialised tensors outside the head.

    ``ignore_mismatched_sizes=True`` lets a checkpoint with another number of labels load (its head is replaced);
    any *other* mismatched tensor is an error, because it would be silently re-initialised.
    """
    src = weights_source(cfg, entry)
    hub = hub_kwargs(cfg)
    if hub.get("local_files_only"):  # transformers' own look-up of a PEFT adapter_config.json does not get this flag
        hub["adapter_kwargs"] = {"local_files_only": True}  # otherwise (peft installed): retried HEADs, 23 s unreachable
    try:
        model, info = auto_cls.from_pretrained(
            src, ignore_mismatched_sizes=True, output_loading_info=True, **hub, **kw
        )
    except Exception as e:  # transformers/safetensors raise many types for missing or corrupt files
        raise load_error(cfg, src, "weights", e, "Give model.path (a local model directory with config.json and "
                         "weights) or set model.pretrained: false with model.overrides to build from a config") from e

    def in_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in head_modules)

    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", [])]
    bad = [k for k in mismatched if not in_head(k)]
    if bad:
        raise CheckpointError(f"weights in {src} do not match the architecture outside the head: {bad[:5]}")
    fresh = [k for k in info.get("missing_keys", []) if not in_head(k)]
    if fresh:
        warnings.warn(f"{cfg.name}: {len(fresh)} tensors not in {src} were freshly initialised: {sorted(fresh)[:5]}", stacklevel=3)
    return model


def config_from(cfg: ModelConfig, default_cls: Any | None, **fixed: Any):
    """A transformers config for a from-scratch build.

    ``overrides`` may hold ``model_type`` (any transformers architecture, via ``AutoConfig.for_model``); otherwise
    ``cfg.path``'s ``config.json`` is the base, else ``default_cls()``. ``fixed`` (e.g. ``num_labels``) wins.
    """
    from transformers import AutoConfig

    over = dict(cfg.overrides)
    model_type = over.pop("model_type", None)
    if model_type is not None:
        try:
            conf = AutoConfig.for_model(model_type, **over)
        except ValueError as e:
            raise ValueError(f"model.overrides.model_type {model_type!r} is not a transformers architecture: {e}") from e
    elif cfg.path:
        conf = AutoConfig.from_pretrained(local_dir(cfg.path, "model.path"), local_files_only=True, **over)
    elif default_cls is not None:
        conf = default_cls(**over)
    else:
        raise ValueError(
            f"model {cfg.name!r} with pretrained: false needs model.overrides.model_type (e.g. gpt2, llama, bert) "
            "or model.path (a directory with config.json) to know the architecture"
        )
    for k, v in fixed.items():
        setattr(conf, k, v)
    unknown = [k for k in over if not hasattr(conf, k)]
    if unknown:
        raise ValueError(f"model.overrides {unknown} are not fields of {type(conf).__name__}")
    return conf


def load_tokenizer(cfg: ModelConfig, entry: ModelEntry, tokenizer: Any = None):
    """The tokenizer: the ``tokenizer`` argument, else ``cfg.tokenizer``, ``cfg.path``, the hub id (see :func:`hub_kwargs`).

    A missing pad token is set to the EOS token; padding is on the right (the batch convention).
    """
    from transformers import AutoTokenizer

    if tokenizer is None:
        src = cfg.tokenizer or cfg.path
        if src:
            src = local_dir(src, "model.tokenizer" if cfg.tokenizer else "model.path")
        elif entry.hub_id:
            src = entry.hub_id
        else:
            raise ValueError(
                f"model {cfg.name!r} needs a tokenizer: set model.tokenizer (or model.path) to a local directory "
                "with tokenizer files"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, **hub_kwargs(cfg))
        except (OSError, ValueError) as e:
            if not (cfg.tokenizer or cfg.path):
                raise load_error(cfg, src, "tokenizer", e, "Set model.tokenizer to a local tokenizer directory") from e
            raise FileNotFoundError(
                f"could not load a tokenizer for {cfg.name!r} from {src}: {e}. Set model.tokenizer (or "
                "model.path) to a local directory with the tokenizer files"
            ) from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def head_child(model: Any, candidates: tuple[str, ...] = ("classifier", "score")) -> str:
    """Name of the top-level classification head module of a transformers ``*For*Classification`` model."""
    children = dict(model.named_children())
    for c in candidates:
        if c in children:
            return c
    raise ValueError(f"{type(model).__name__} has none of the head modules {candidates}; children: {sorted(children)}")
