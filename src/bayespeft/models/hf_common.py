"""Shared Hugging Face plumbing: offline weight/config/tokenizer loading with clear errors.

Everything is loaded with ``local_files_only=True``: from ``cfg.path`` (a local model directory) or, for names with a
hub id (``roberta-base``, ``bert-base-uncased``, ``phi-2``), from the local hub cache. Nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .config import ModelConfig
from .registry import ModelEntry


def local_dir(path: str, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {p} is not a directory (expected a local Hugging Face model directory)")
    return str(p)


def weights_source(cfg: ModelConfig, entry: ModelEntry) -> str:
    """``cfg.path`` (must be a directory) or the registered hub id (resolved in the local cache)."""
    if cfg.path:
        return local_dir(cfg.path, "model.path")
    if entry.hub_id:
        return entry.hub_id
    raise ValueError(f"model {cfg.name!r} needs model.path (a local Hugging Face model directory) to load pretrained weights")


def from_pretrained(auto_cls: Any, cfg: ModelConfig, entry: ModelEntry, head_modules: tuple[str, ...], **kw: Any):
    """``auto_cls.from_pretrained`` offline; warn about freshly initialised tensors outside the head.

    ``ignore_mismatched_sizes=True`` lets a checkpoint with another number of labels load (its head is replaced);
    any *other* mismatched tensor is an error, because it would be silently re-initialised.
    """
    src = weights_source(cfg, entry)
    try:
        model, info = auto_cls.from_pretrained(
            src, local_files_only=True, ignore_mismatched_sizes=True, output_loading_info=True, **kw
        )
    except Exception as e:  # transformers/safetensors raise many types for missing or corrupt files
        where = src if cfg.path else f"the local Hugging Face hub cache ({src})"
        err = CheckpointError if cfg.path else FileNotFoundError
        raise err(
            f"could not load {cfg.name!r} from {where}: {e}. Give model.path (a local model directory with "
            "config.json and weights) or set model.pretrained: false with model.overrides to build from a config"
        ) from e

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
    """The tokenizer: the ``tokenizer`` argument, else ``cfg.tokenizer``, ``cfg.path``, the hub id (local cache).

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
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"could not load a tokenizer for {cfg.name!r} from {src} (offline): {e}. Set model.tokenizer (or "
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
