"""Saving and loading adapters.

Directory layout written by :func:`save_adapter`:

* lora / normtune / hybrid: PEFT's own ``adapter_model.safetensors`` + ``adapter_config.json`` (``save_pretrained``),
  loadable by plain ``peft.PeftModel.from_pretrained(base_backbone, dir)``;
* full / linear: ``model.safetensors`` holding :func:`trainable_state_dict` (names in the TaskModel namespace);
* always ``bayespeft_meta.json``: method, backbone name, family, task, num_classes, the AdapterConfig, head modules,
  a fingerprint of the frozen base weights, ``sha256`` (``{weights file name: SHA-256 of its bytes}``, verified on
  load: a damaged tensor file is an error naming it) and the caller's ``metadata``. It is written last; PEFT never
  reads it, so plain PEFT loading is unaffected.

Every file is replaced atomically (temp file + rename); other files in the directory are left alone. Loading never
writes. A missing, unreadable or mismatched checkpoint raises :class:`~bayespeft.errors.CheckpointError` naming the
file and what does not match, before any tensor of the model is changed.

Base fingerprint: for each frozen base tensor ``w`` (PEFT wrappers stripped from the name, head excluded),
``sum(|w.flatten()[:256]|)`` in float64. Loading compares it with ``rtol=1e-2`` (robust to bf16/fp32 casts, not to
another random initialisation or another checkpoint), because an adapter is only meaningful on the base it was
trained on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError, CheckpointMismatchError, CorruptFileError
from ..io import default_mode, load_tensors, save_tensors, sha256_file, write_json
from ..models.task import TaskModel
from ..state_dict import describe_mismatch
from .config import AdapterConfig
from .methods import ADAPTERS, apply_adapter

META = "bayespeft_meta.json"
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
FULL_WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1
_PEFT_TAGS = (".lora_", ".modules_to_save.", ".ln_tuning_layers.")
_STRIP = (".original_module", ".base_layer")


# ---------------------------------------------------------------------------------------------------------------
# trainable state (trainer checkpoints, full/linear adapters)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{qualified name: tensor}`` of every trainable parameter, plus the buffers of modules that own trainable
    parameters (e.g. BatchNorm running statistics when the BatchNorm is tuned). Tensors are detached, not copied.
    A tensor shared by several modules (tied embeddings) appears once, under its first name."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for mname, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not any(p.requires_grad for _, p in own):
            continue
        prefix = mname + "." if mname else ""
        for pname, p in own:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out[prefix + pname] = p.detach()
        for bname, b in module.named_buffers(recurse=False):
            if bname not in module._non_persistent_buffers_set:
                out[prefix + bname] = b.detach()
    return out


def _mismatch_message(source: str, expected: dict[str, torch.Size], got: dict[str, torch.Size]) -> str | None:
    what = describe_mismatch(expected, got, source="checkpoint")
    return f"{source} does not match the model: {what}" if what else None


def load_trainable_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True, source: str = "state dict"
) -> dict[str, list[str]]:
    """Copy ``state`` into the model's trainable tensors (see :func:`trainable_state_dict`).

    ``strict``: the key sets must be equal. Shapes must always match. Nothing is copied unless every check passes.
    Returns ``{"missing": [...], "unexpected": [...]}`` (empty when strict).
    """
    own = trainable_state_dict(model)
    expected = {k: v.shape for k, v in own.items()}
    got = {k: v.shape for k, v in state.items()}
    if strict:
        msg = _mismatch_message(source, expected, got)
    else:
        common = set(expected) & set(got)
        msg = _mismatch_message(source, {k: expected[k] for k in common}, {k: got[k] for k in common})
    if msg:
        raise CheckpointError(msg)
    with torch.no_grad():
        for k, v in state.items():
            if k in own:
                own[k].copy_(v.to(device=own[k].device, dtype=own[k].dtype))
    return {"missing": sorted(set(expected) - set(got)), "unexpected": sorted(set(got) - set(expected))}


# ---------------------------------------------------------------------------------------------------------------
# base fingerprint


def base_fingerprint(model: TaskModel) -> dict[str, float]:
    """Fingerprint of the frozen base weights (see the module docstring); works before and after PEFT wrapping."""
    net = model.base_network
    heads = tuple(model.head_modules)
    out: dict[str, float] = {}
    for name, p in net.named_parameters():
        if any(t in "." + name for t in _PEFT_TAGS):
            continue
        canon = name
        for s in _STRIP:
            canon = canon.replace(s, "")
        if any(canon == h or canon.startswith(h + ".") for h in heads):
            continue
        if getattr(model, "adapter_method", None) is not None and p.requires_grad:
            continue  # e.g. method "full": trained tensors are not part of the base
        out[canon] = p
    if not out:
        return {}
    vals = torch.stack([p.detach().flatten()[:256].abs().double().sum() for p in out.values()]).cpu().tolist()
    return dict(zip(out, vals))


def _check_fingerprint(model: TaskModel, saved: dict[str, float] | None, where: Path) -> None:
    if not saved:
        return
    now = base_fingerprint(model)
    shared = [k for k in saved if k in now]
    if not shared:
        raise CheckpointError(f"{where}: none of the base tensors recorded in the checkpoint exist in the model")
    gone, new = [k for k in saved if k not in now], [k for k in now if k not in saved]
    if gone or new:
        parts = ([f"{len(gone)} base tensor(s) of the trained model are not in this one (e.g. {gone[0]})"] if gone
                 else []) + ([f"{len(new)} are new (e.g. {new[0]})"] if new else [])
        raise CheckpointError(
            f"{where}: the model's architecture differs from the one the adapter was trained on: "
            f"{' and '.join(parts)}; build it with the training run's model settings (model.name, model.overrides, model.image_size: see "
            "config.yaml in its run directory)"
        )
    bad = [k for k in shared if not math.isclose(saved[k], now[k], rel_tol=1e-2, abs_tol=1e-4)]
    if bad:
        raise CheckpointError(
            f"{where}: the base weights of the model differ from those the adapter was trained on ({len(bad)} of "
            f"{len(shared)} tensors, e.g. {bad[0]}: {now[bad[0]]:.6g} vs {saved[bad[0]]:.6g}); build the model with "
            "the same pretrained weights / seed (model.path, model.pretrained, train.seed), or skip this check "
            "(CLI: --skip-base-check; Python: load_adapter(..., check_base=False))"
        )


# ---------------------------------------------------------------------------------------------------------------
# save / load


def _adapter_state_expected(model: TaskModel) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model.backbone, save_embedding_layers=False)


def save_adapter(model: TaskModel, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write the adapter of ``model`` to ``out_dir`` (layout in the module docstring); returns the directory."""
    method = getattr(model, "adapter_method", None)
    if method is None:
        raise ValueError("the model has no adapter; call apply_adapter(model, cfg) before save_adapter")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "bayespeft_version": __version__,
        "method": method,
        "backbone": model.name,
        "family": model.family,
        "task": model.task,
        "num_classes": model.num_classes,
        "adapter": model.adapter_config.model_dump(mode="json"),
        "head_modules": list(model.head_modules),
        "weights": PEFT_WEIGHTS if ADAPTERS.get(method).uses_peft else FULL_WEIGHTS,
        "base_fingerprint": base_fingerprint(model),
        "metadata": metadata or {},
    }
    json.dumps(meta, default=str)  # fail before writing anything if metadata is not serialisable
    if ADAPTERS.get(method).uses_peft:
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".peft-"))
        try:
            # save_embedding_layers=False: with ``lm_head`` (or an embedding) as a LoRA target, PEFT's default ("auto")
            # also saves the frozen base weight of that layer -- 262 MB per Phi-2 adapter -- which the base model has
            model.backbone.save_pretrained(str(tmp), save_embedding_layers=False)
            for f in sorted(tmp.iterdir()):
                default_mode(f)  # safetensors writes its files private (0o600)
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stale = out / FULL_WEIGHTS
    else:
        save_tensors(out / FULL_WEIGHTS, trainable_state_dict(model), metadata={"format": "bayespeft-trainable"})
        stale = out / PEFT_WEIGHTS
    if stale.exists():  # a previous save with another method
        stale.unlink()
    meta["sha256"] = {meta["weights"]: sha256_file(out / meta["weights"])}
    write_json(out / META, meta)
    return out


def read_meta(ckpt: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``bayespeft_meta.json`` of a checkpoint directory."""
    path = Path(ckpt)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    mfile = path / META
    if not mfile.is_file():
        raise CheckpointError(f"{path} is not a bayespeft adapter checkpoint: {META} is missing")
    try:
        meta = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mfile} is not valid JSON ({e})") from e
    need = ("method", "backbone", "num_classes", "adapter", "weights")
    lacking = [k for k in need if k not in (meta if isinstance(meta, dict) else {})]
    if lacking:
        raise CheckpointError(f"{mfile} lacks the fields {lacking}")
    return meta


def _verify_sha256(file: Path, recorded: str | None) -> None:
    if recorded is not None and sha256_file(file) != recorded:
        raise CheckpointError(f"checkpoint file {file} is corrupted (SHA-256 mismatch); re-run training or restore it")


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"checkpoint file {file} is missing")
    try:
        return load_tensors(file)
    except CorruptFileError:
        raise CheckpointError(f"checkpoint file {file} is corrupted (SHA-256 mismatch); re-run training or restore it") from None
    except Exception as e:  # safetensors raises its own error types on garbage / truncated files
        raise CheckpointError(f"{file} is not a readable safetensors file ({type(e).__name__}: {e})") from e


def _structure(cfg: AdapterConfig) -> dict[str, Any]:
    """The settings that decide the adapter's tensors and predictions (dropout only acts in training)."""
    return cfg.model_dump(exclude={"dropout"})


def load_adapter(model: TaskModel, ckpt_dir: str | os.PathLike, *, check_base: bool = True) -> TaskModel:
    """Load an adapter saved by :func:`save_adapter` into ``model`` (mutated and returned).

    ``model`` is a fresh ``build_model`` result (the recorded adapter is applied first) or one already adapted with
    the same method and settings. Raises CheckpointError (naming the file) for a missing/corrupt file, another
    backbone or number of classes, other adapter settings, missing/unexpected keys or shape mismatches, or (with
    ``check_base``) base weights that differ from those the adapter was trained on.
    """
    path = Path(ckpt_dir)
    meta = read_meta(path)
    mfile = path / META
    if meta["backbone"] != model.name or int(meta["num_classes"]) != model.num_classes:
        raise CheckpointMismatchError(
            f"{mfile}: checkpoint is for backbone {meta['backbone']!r} with {meta['num_classes']} classes, the model "
            f"is {model.name!r} with {model.num_classes} classes"
        )
    try:
        acfg = AdapterConfig.dropping_unread(meta["adapter"])
    except Exception as e:
        raise CheckpointError(f"{mfile}: invalid adapter settings ({e})") from e
    current = getattr(model, "adapter_config", None)
    if current is not None and _structure(current) != _structure(acfg):
        raise CheckpointMismatchError(
            f"{mfile}: the model was adapted with {_structure(current)} but the checkpoint holds {_structure(acfg)}"
        )
    uses_peft = ADAPTERS.get(acfg.method).uses_peft
    wfile = path / (PEFT_WEIGHTS if uses_peft else FULL_WEIGHTS)
    state = _read_weights(wfile)
    if uses_peft:
        cfile = path / PEFT_CONFIG
        try:
            peft_cfg = json.loads(cfile.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfile} is missing or not valid JSON ({e})") from e
        want = {"lora": "LORA", "hybrid": "LORA", "normtune": "LN_TUNING"}[acfg.method]
        if peft_cfg.get("peft_type") != want:
            raise CheckpointError(f"{cfile}: peft_type {peft_cfg.get('peft_type')!r}, expected {want!r} for {acfg.method}")
    if check_base:
        _check_fingerprint(model, meta.get("base_fingerprint"), mfile)
    if current is None:
        apply_adapter(model, acfg)
    if uses_peft:
        from peft import set_peft_model_state_dict

        expected = _adapter_state_expected(model)
        msg = _mismatch_message(str(wfile), {k: v.shape for k, v in expected.items()}, {k: v.shape for k, v in state.items()})
        if msg:
            raise CheckpointError(msg)
        # after the structural checks (a file of another shape is reported as such), before any tensor is copied
        _verify_sha256(wfile, (meta.get("sha256") or {}).get(wfile.name))
        set_peft_model_state_dict(model.backbone, state)
    else:
        own = trainable_state_dict(model)
        msg = _mismatch_message(str(wfile), {k: v.shape for k, v in own.items()}, {k: v.shape for k, v in state.items()})
        if msg:
            raise CheckpointError(msg)
        _verify_sha256(wfile, (meta.get("sha256") or {}).get(wfile.name))
        load_trainable_state_dict(model, state, strict=True, source=str(wfile))
    return model


__all__ = [
    "base_fingerprint",
    "load_adapter",
    "load_trainable_state_dict",
    "read_meta",
    "save_adapter",
    "trainable_state_dict",
]
