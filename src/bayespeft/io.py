"""Atomic file writes and safetensors helpers (never pickle).

Tensor files written by :func:`save_tensors` carry, in their safetensors metadata (key :data:`CONTENT_SHA256`), a
SHA-256 of their contents (per tensor, in name order: name, dtype, shape, raw bytes); :func:`load_tensors` verifies
it, so a file whose tensor bytes were damaged with the header intact is an error naming the file instead of
silently wrong numbers. Files without the key (written elsewhere, or before it existed) load unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; on success it is renamed onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched. The file gets the mode an
    ordinary ``open`` would give it (``0o666`` less the process umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        default_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def default_mode(path: str | os.PathLike) -> None:
    """Give a file the mode ``open`` would have: ``0o666`` less the umask (for files made by ``mkstemp`` or by
    libraries that write private files)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process umask (read from /proc where available: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` onto ``dst`` atomically (``dst`` is either its old content or a full copy)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


#: safetensors metadata key holding :func:`tensors_sha256` of the file's tensors
CONTENT_SHA256 = "bayespeft_content_sha256"


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the tensors in name order: each name, dtype, shape and raw (CPU, contiguous) bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically (contiguous CPU copies), with their content SHA-256."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {**(metadata or {}), CONTENT_SHA256: tensors_sha256(data)}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; verify its content SHA-256 when it carries one (:class:`CheckpointError` if not)."""
    from safetensors import safe_open

    from .errors import CorruptFileError

    with safe_open(str(path), framework="pt") as f:
        recorded = (f.metadata() or {}).get(CONTENT_SHA256)
    tensors = load_file(str(path), device="cpu")
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise CorruptFileError(f"tensor file {path} is corrupted (SHA-256 mismatch); re-run the command that wrote it "
                              "or restore the file")
    return tensors if torch.device(device).type == "cpu" else {k: v.to(device) for k, v in tensors.items()}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
