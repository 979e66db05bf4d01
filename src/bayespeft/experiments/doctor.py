"""``bayespeft doctor [--quick]``: the health check to run when something is off.

Each check yields :class:`Check` lines ``OK`` / ``WARN`` / ``FAIL``, a one-line finding and, when not OK, what to
do. :func:`run_doctor` prints them and returns the exit status: 1 when any line is FAIL, else 0.

* versions: Python and every requirement of the installed ``bayespeft`` distribution against the ranges declared
  in its metadata (``importlib.metadata``: ``Requires-Python`` and ``Requires-Dist``; extras only when installed),
  so the supported ranges live in ``pyproject.toml`` alone;
* devices and threads: CUDA build and devices (memory, bf16), MPS, torch threads against the usable cores;
* directories: the output root, the bayespeft cache (``BAYESPEFT_CACHE``, default ``~/.cache/bayespeft``) and the
  Hugging Face hub cache: writable (a temporary file is created and removed; nothing else is written) and free
  space;
* local assets: which registered datasets are present under the data root (each dataset module's own locator) and
  which registered pretrained weights are in the local hub cache (plus the packaged MiniLM and the quickstart's
  cached upstream checkpoint); hub datasets absent locally and weights not cached are a WARN when downloads are
  off (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``), since a run that needs them then fails;
* the Hugging Face hub (online only): one short probe of the endpoint (:mod:`bayespeft.hub_reach`); unreachable is a
  WARN (cached models and datasets still load);
* smoke run (not with ``--quick``): micro ViT + LoRA forward/backward on real digits, one KFAC Laplace fit and a
  few SGLD steps, each timed, in memory only.
"""

from __future__ import annotations

import importlib.metadata as metadata
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Level = Literal["OK", "WARN", "FAIL"]
DIST = "bayespeft"
#: below this much free space a directory is a WARN
MIN_FREE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Check:
    level: Level
    what: str
    finding: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix and self.level != "OK" else ""
        return f"{self.level:<4}  {self.what}: {self.finding}{fix}"


# ---- versions ---------------------------------------------------------------------------------------------------
def version_checks() -> Iterator[Check]:
    """Python and each declared requirement against the installed distribution's metadata."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    try:
        meta = metadata.metadata(DIST)
        requires = metadata.requires(DIST) or []
    except metadata.PackageNotFoundError:
        yield Check("WARN", "bayespeft", "not installed as a distribution: the supported version ranges cannot be "
                    "read", "install it (pip install -e . in the repository, or make venv)")
        return
    py = ".".join(map(str, sys.version_info[:3]))
    spec = meta.get("Requires-Python") or ""
    ok = SpecifierSet(spec).contains(py, prereleases=True)
    yield Check("OK" if ok else "FAIL", "python", f"{py} (supported: {spec or 'any'})",
                f"use a Python {spec} interpreter for the virtual environment")
    yield Check("OK", "bayespeft", metadata.version(DIST))
    extras = set()
    for raw in requires:
        req = Requirement(raw)
        extra = _extra_of(req)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if extra is None:
                yield Check("FAIL", req.name, f"not installed (required: {req.specifier or 'any'})",
                            f"pip install '{req.name}{req.specifier}'")
            else:
                extras.add(extra)
            continue
        rng = str(req.specifier) or "any"
        if req.specifier.contains(have, prereleases=True):
            yield Check("OK", req.name, f"{have} (supported: {rng}{f', extra {extra}' if extra else ''})")
        else:
            yield Check("FAIL" if extra is None else "WARN", req.name,
                        f"{have} is outside the supported range {rng}{f' (extra {extra})' if extra else ''}",
                        f"pip install '{req.name}{req.specifier}'")
    if extras:
        yield Check("OK", "optional extras", f"not installed: {', '.join(sorted(extras))} "
                    f"(pip install 'bayespeft[{','.join(sorted(extras))}]' when needed)")


def _extra_of(req) -> str | None:
    """The extra a requirement belongs to (``; extra == "dev"``), or None for a core requirement."""
    if req.marker is None:
        return None
    for name in ("dev", "ray"):
        if req.marker.evaluate({"extra": name}) and not req.marker.evaluate({"extra": ""}):
            return name
    return None


# ---- devices and threads ----------------------------------------------------------------------------------------
def device_checks() -> Iterator[Check]:
    import torch

    cuda = torch.version.cuda
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            bf16 = torch.cuda.is_bf16_supported() if i == torch.cuda.current_device() else None
            yield Check("OK", f"cuda:{i}", f"{p.name}, {p.total_memory / 1024**3:.1f} GiB, compute capability "
                        f"{p.major}.{p.minor}{', bf16' if bf16 else ''} (torch built for CUDA {cuda})")
    elif cuda:
        yield Check("WARN", "cuda", f"torch is built for CUDA {cuda} but no GPU is visible: running on CPU",
                    "check nvidia-smi and CUDA_VISIBLE_DEVICES; the tiny configs and the quickstart run on CPU")
    else:
        yield Check("OK", "devices", "CPU only (CPU build of torch): the tiny configs and the quickstart run here; "
                    "full-scale configs need a GPU")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        yield Check("OK", "mps", "Apple GPU available (train.device=mps)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = torch.get_num_threads()
    if threads > cores:
        yield Check("WARN", "threads", f"torch uses {threads} threads but only {cores} cores are usable",
                    f"set OMP_NUM_THREADS={cores} (oversubscription slows every CPU run)")
    else:
        yield Check("OK", "threads", f"torch {threads} thread(s), {cores} usable core(s)")


# ---- directories ------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The bayespeft cache: ``$BAYESPEFT_CACHE``, default ``~/.cache/bayespeft`` (the quickstart's upstream model)."""
    from .quickstart import cache_dir as quickstart_cache

    return quickstart_cache()


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def not_writable(path: Path) -> str | None:
    """Why files cannot be created under ``path`` (created later if missing), or None when they can: a temporary
    file is created in the directory or in its nearest existing ancestor, then removed."""
    base = nearest_existing(path)
    if not base.is_dir():
        return f"{base} is not a directory"
    try:
        fd, tmp = tempfile.mkstemp(dir=base, prefix=".bayespeft-doctor-")
    except OSError as e:
        return f"cannot create a file in {base} ({e.strerror or e})"
    os.close(fd)
    os.unlink(tmp)
    return None


def directory_check(what: str, path: Path, fix: str, required: bool = True) -> Check:
    why = not_writable(path)
    if why is not None:
        return Check("FAIL" if required else "WARN", what, f"{path}: {why}", fix)
    free = shutil.disk_usage(nearest_existing(path)).free
    state = "exists" if path.exists() else "will be created"
    if free < MIN_FREE_BYTES:
        return Check("WARN", what, f"{path} ({state}) has only {free / 1024**3:.2f} GiB free",
                     "free some space or point it elsewhere (checkpoints and sample stores can be large)")
    return Check("OK", what, f"{path} ({state}, writable, {free / 1024**3:.1f} GiB free)")


def directory_checks(output_root: Path) -> Iterator[Check]:
    yield directory_check("output root", output_root, "pass a writable --output-root, or set output.root in the "
                          "config (CLI: --set output.root=DIR)")
    yield directory_check("bayespeft cache", cache_dir(), "set BAYESPEFT_CACHE to a writable directory")
    yield directory_check("Hugging Face cache", hf_cache_dir(), "set HF_HOME (or HF_HUB_CACHE) to a writable "
                          "directory; only needed to download weights", required=False)


# ---- local assets -----------------------------------------------------------------------------------------------
def _dataset_locators() -> dict[str, Callable[[Path], object]]:
    """How each dataset module finds its files (its own function; raises FileNotFoundError naming the layout)."""
    from ..data.arc import arc_dir
    from ..data.cifar import _check_files
    from ..data.glue import mrpc_dir

    return {"digits": lambda root: "bundled with scikit-learn",
            "cifar10": lambda root: _check_files("cifar10", root, verify=False),
            "cifar100": lambda root: _check_files("cifar100", root, verify=False),
            "mrpc": mrpc_dir,
            "arc_easy": lambda root: arc_dir(root, "ARC-Easy"),
            "arc_challenge": lambda root: arc_dir(root, "ARC-Challenge")}


def dataset_checks(data_root: Path) -> Iterator[Check]:
    from ..data import DATASETS
    from ..data.hub import offline_reason as data_offline_reason

    locate = _dataset_locators()
    present, absent, unknown = [], [], []
    for name in DATASETS.names():
        if name not in locate:
            unknown.append(name)
            continue
        try:
            locate[name](data_root)
            present.append(name)
        except (FileNotFoundError, NotADirectoryError):
            absent.append(name)
    msg = f"under {data_root}: present {', '.join(present) or 'none'}; absent {', '.join(absent) or 'none'}"
    if unknown:
        msg += f"; not checked {', '.join(unknown)}"
    hub = [n for n in absent if n in ("mrpc", "arc_easy", "arc_challenge")]
    if not hub:
        yield Check("OK", "local data", msg)
        return
    reason = data_offline_reason()
    if reason is None:
        yield Check("OK", "local data", f"{msg} ({', '.join(hub)}: loaded from the Hugging Face hub through "
                    "`datasets` when absent)")
        return
    yield Check("WARN", "local data", f"{msg}; downloads are off ({reason}): a run on {', '.join(hub)} fails unless "
                "`datasets` cached it on an earlier online run",
                f"put the files under the data root, or run once with network without {reason}")


def weights_checks() -> Iterator[Check]:
    from huggingface_hub import try_to_load_from_cache

    from ..assets import find_minilm_dir
    from ..models import MODELS
    from ..models.hub import env_flag
    from ..models.vision import timm_hub_id

    present, absent = [], []
    for name in MODELS.names():
        entry = MODELS.get(name)
        if not entry.hub_id:
            continue
        hub_id = (timm_hub_id(name) or entry.hub_id) if entry.family == "timm" else entry.hub_id  # timm's tagged repo
        repo, _, revision = hub_id.partition("@")
        cached = try_to_load_from_cache(repo, "config.json", cache_dir=str(hf_cache_dir()), revision=revision or None)
        (present if isinstance(cached, str) else absent).append(name)
    found = f"in the local hub cache: {', '.join(present) or 'none'}; not cached: {', '.join(absent) or 'none'}"
    flag = env_flag("HF_HUB_OFFLINE")
    if absent and flag:
        yield Check("WARN", "pretrained weights", f"{found}; downloads are off ({flag}=1): a run that needs the "
                    "pretrained weights or tokenizer of one not cached fails",
                    f"run once with network without {flag}=1, or `hf download HUB_ID` on a connected machine (same "
                    "HF_HOME), or give model.path (model.tokenizer for a tokenizer only)")
    else:
        yield Check("OK", "pretrained weights", f"{found} (downloaded on first use when online; offline -- "
                    "HF_HUB_OFFLINE=1 or model.offline: true -- only the cache is read: `hf download HUB_ID` on a "
                    "connected machine, or model.path)")
    try:
        yield Check("OK", "MiniLM (packaged)", str(find_minilm_dir()))
    except FileNotFoundError:
        yield Check("OK", "MiniLM (packaged)", "not installed (only the tests use it: pip install 'bayespeft[dev]')")
    up = sorted((cache_dir() / "quickstart").glob("micro_vit_upstream_*.safetensors"))
    yield Check("OK", "quickstart upstream", f"cached: {up[-1]}" if up else "not cached yet (the quickstart and the "
                "digits configs train it once, about a minute on a CPU)")


def hub_check() -> Iterator[Check]:
    """Whether the Hugging Face hub answers (:func:`bayespeft.hub_reach.unreachable`, one short probe); not asked
    when downloads are off."""
    from .. import hub_reach
    from ..models.hub import env_flag

    flag = env_flag("HF_HUB_OFFLINE")
    if flag:
        yield Check("OK", "Hugging Face hub", f"not asked: downloads are off ({flag}=1)")
        return
    down = hub_reach.unreachable()
    if down is None:
        yield Check("OK", "Hugging Face hub", f"{hub_reach.endpoint()} answers (models and datasets not cached are "
                    "downloaded on first use)")
        return
    yield Check("WARN", "Hugging Face hub", f"{hub_reach.endpoint()} cannot be reached ({down}): cached models and "
                "datasets load, a run that needs one not cached fails",
                "connect this machine to the hub (network, proxy, HF_ENDPOINT), or fill the caches from a connected "
                "machine (same HF_HOME) and set HF_HUB_OFFLINE=1")


# ---- smoke run --------------------------------------------------------------------------------------------------
def smoke_checks() -> Iterator[Check]:
    """Micro ViT + LoRA on 64 real digits: forward/backward, one KFAC Laplace fit, five SGLD steps (timed)."""
    import torch

    from ..config import validate
    from .run import build

    cfg = {"name": "doctor", "data": {"name": "digits", "max_train": 64, "batch_size": 32},
           "model": {"name": "micro_vit", "pretrained": False}, "adapter": {"method": "lora", "r": 2}}
    built = []
    yield from _timed("build micro ViT + LoRA, load digits", lambda: built.append(build(validate(cfg))) or "")
    if not built:
        return
    model, loader = built[0].model, built[0].loaders.train
    yield from _timed("micro ViT forward/backward", lambda: _forward_backward(model, next(iter(loader))))
    yield from _timed("Laplace fit (kfac, all LoRA params)", lambda: _laplace(model, loader))
    yield from _timed("SGLD (5 steps)", lambda: _sgld(model, loader, torch))


def _timed(what: str, fn: Callable[[], str]) -> Iterator[Check]:
    t0 = time.perf_counter()
    try:
        note = fn()
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        yield _smoke_fail(what, e)
        return
    yield Check("OK", what, f"{time.perf_counter() - t0:.2f} s{f' ({note})' if note else ''}")


def _smoke_fail(what: str, e: Exception) -> Check:
    return Check("FAIL", what, f"{type(e).__name__}: {e}", "rerun with BAYESPEFT_DEBUG=1 for the traceback; check "
                 "the version lines above")


def _forward_backward(model, batch) -> str:
    import torch

    from ..batch import split_batch

    inputs, labels = split_batch(batch)
    loss = torch.nn.functional.cross_entropy(model(**inputs), labels)
    loss.backward()
    value = loss.item()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not math.isfinite(value) or any(g is None or not torch.isfinite(g).all() for g in grads):
        raise FloatingPointError(f"the loss ({value}) or a gradient of the trainable parameters is not finite")
    model.zero_grad(set_to_none=True)
    return f"loss {value:.3f}, {len(grads)} trainable tensors"


def _laplace(model, loader) -> str:
    from .. import laplace as bl

    post = bl.fit(model, loader, structure="kfac", subset="all", progress=False)
    return f"{post.mean.numel()} parameters, {post.n_data} examples"


def _sgld(model, loader, torch) -> str:
    from .. import sgmcmc

    log_prob = sgmcmc.model_log_prob(model, len(loader.dataset))
    s = sgmcmc.build("sgld", log_prob, lr=1e-5, seed=0)
    state = s.init({k: v.detach() for k, v in sgmcmc.trainable_params(model).items()})
    batches = iter(loader)
    for _ in range(5):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        state = s.step(state, batch)
    if not torch.isfinite(state.log_prob):
        raise FloatingPointError(f"log_prob is {float(state.log_prob)} after 5 steps")
    return f"log_prob {float(state.log_prob):.1f}"


# ---- driver -----------------------------------------------------------------------------------------------------
def checks(quick: bool = False, output_root: str | Path = "runs", data_root: str | Path = "data") -> Iterator[Check]:
    """Every check in order; the smoke run only when not ``quick``."""
    yield from version_checks()
    yield from device_checks()
    yield from directory_checks(Path(output_root))
    yield from dataset_checks(Path(data_root))
    yield from weights_checks()
    yield from hub_check()
    if not quick:
        yield from smoke_checks()


def run_doctor(quick: bool = False, output_root: str | Path = "runs", data_root: str | Path = "data",
               echo: Callable[[str], None] = print) -> int:
    """Print every check line as it is made, then a summary; 1 when any line is FAIL, else 0."""
    counts = {"OK": 0, "WARN": 0, "FAIL": 0}
    for c in checks(quick, output_root, data_root):
        counts[c.level] += 1
        echo(c.line())
    echo(f"doctor: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL"
         f"{' (quick: smoke run skipped)' if quick else ''}")
    return 1 if counts["FAIL"] else 0
