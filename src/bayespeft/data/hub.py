"""Text datasets from the Hugging Face hub, through ``datasets``, when ``data.root`` holds none of their local files.

``load_hub(...)`` calls ``datasets.load_dataset(hub_id, config)`` the usual way: the first call downloads the data
(with ``datasets``' own progress bars) into its cache (``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else
``~/.cache/huggingface/datasets``), later calls -- offline ones included -- read that cache. Offline
(``HF_DATASETS_OFFLINE=1``, or ``HF_HUB_OFFLINE=1`` when ``HF_DATASETS_OFFLINE`` is unset: the rule ``datasets``
follows) with nothing cached, or a download that fails, is one :class:`~bayespeft.errors.HubError` line naming the
dataset id, its config, the files ``data.root`` would need instead, and the cache. Online on a machine that cannot
reach the hub (:mod:`bayespeft.hub_reach`: one short probe of the endpoint), ``load_dataset`` runs in ``datasets``'
offline mode for that one call -- a cached copy loads at once, a missing one is that error line saying why --
instead of waiting out the retries of each file request.

The dataset modules turn the returned ``DatasetDict`` rows into the same examples their local files give, and
record where the data came from (:func:`hub_source`, :func:`local_source`) in ``metadata["source"]`` -- so in the
run's ``metrics.json`` (``data.source``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .. import hub_reach
from ..errors import HubError

log = logging.getLogger("bayespeft.data")
_TRUTHY = frozenset({"1", "ON", "YES", "TRUE"})
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face hub: ``datasets.load_dataset(hub_id, config)`` with the splits ``splits``."""

    hub_id: str
    config: str
    splits: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.hub_id!r} (config {self.config!r})"


def offline_reason() -> str | None:
    """``"HF_DATASETS_OFFLINE=1"`` / ``"HF_HUB_OFFLINE=1"`` (the value as set) when ``datasets`` may not download,
    else None."""
    name = "HF_DATASETS_OFFLINE" if os.environ.get("HF_DATASETS_OFFLINE") is not None else "HF_HUB_OFFLINE"
    value = os.environ.get(name, "").strip()
    return f"{name}={value}" if value.upper() in _TRUTHY else None


def datasets_cache() -> str:
    """The directory ``datasets`` caches prepared datasets in."""
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


def load_hub(name: str, hub: HubDataset, root: str | Path, expected: str) -> tuple[Any, dict[str, Any]]:
    """``(DatasetDict, source record)`` of ``hub``, for dataset ``name`` whose ``data.root`` (``root``) holds none
    of the ``expected`` local files. Every split of ``hub.splits`` must be present."""
    import datasets

    log.info("%s: data.root %s holds no local files; loading the Hugging Face dataset %s", name, root, hub)
    down = None if offline_reason() else hub_reach.unreachable()
    if down is not None:  # datasets' own message then says "(offline mode is enabled)": this line says why
        log.warning("%s: the Hugging Face hub %s cannot be reached (%s); reading %s from the datasets cache %s only",
                    name, hub_reach.endpoint(), down, hub, datasets_cache())
    try:
        with cache_only(down is not None):
            dd = datasets.load_dataset(hub.hub_id, hub.config)
    except Exception as e:  # datasets / huggingface_hub raise many types for offline, unreachable or unknown ids
        raise unavailable(name, hub, root, expected, e, down) from e
    missing = [s for s in hub.splits if s not in dd]
    if missing:
        raise HubError(f"{name}: the Hugging Face dataset {hub} has no split(s) {missing} (it has {sorted(dd)}); "
                       f"put the local files ({expected}) under data.root={str(root)!r} instead")
    return dd, hub_source(hub, dd)


@contextlib.contextmanager
def cache_only(on: bool) -> Iterator[None]:
    """While ``on``: ``datasets``' offline mode (``datasets.config.HF_HUB_OFFLINE``, which ``load_dataset`` reads at
    call time; ``HF_DATASETS_OFFLINE=1`` sets it at import), so only its cache is read. Restored afterwards."""
    if not on:
        yield
        return
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def unavailable(name: str, hub: HubDataset, root: str | Path, expected: str, cause: BaseException,
                down: str | None = None) -> HubError:
    """The one-line error for a dataset neither under ``data.root`` nor loadable from the hub now; ``down``: why the
    hub cannot be reached (:func:`bayespeft.hub_reach.unreachable`), None when it answered or was not asked."""
    text = str(cause).strip().splitlines()
    why = f"{type(cause).__name__}: {text[0].strip()}" if text else type(cause).__name__
    where = f"data.root={str(root)!r} holds none of the local files ({expected})"
    reason = offline_reason()
    if down is not None and not reason:
        return HubError(
            f"{name}: {where}, and the Hugging Face dataset {hub} cannot be downloaded: the hub "
            f"{hub_reach.endpoint()} cannot be reached ({down}) and it is not in the datasets cache "
            f"{datasets_cache()}. Fix: connect this machine to the hub (network, proxy, HF_ENDPOINT), or put the "
            f"files under data.root, or fill that cache from a connected machine (same HF_HOME) and set "
            f"HF_HUB_OFFLINE=1 to read only the cache"
        )
    if reason:
        return HubError(
            f"{name}: {where}, and the Hugging Face dataset {hub} is not in the datasets cache {datasets_cache()} "
            f"while downloads are off ({reason}; {why}). Fix: put the files under data.root, or run once with "
            f"network without {reason} so that `datasets` downloads and caches it"
        )
    return HubError(
        f"{name}: {where}, and loading the Hugging Face dataset {hub} failed ({why}). Fix: check the network (the "
        f"first download is cached in {datasets_cache()}), or put the files under data.root"
    )


def hub_source(hub: HubDataset, dd: Any) -> dict[str, Any]:
    """``{"kind": "hub", "hub_id", "config", "revision", "fingerprint"}``: the commit of the hub repo when the
    cached files name one (None otherwise) and the ``datasets`` fingerprint of each split."""
    revision = None
    for split in dd:
        for f in getattr(dd[split], "cache_files", None) or []:
            revision = revision or next((p for p in Path(f.get("filename", "")).parts if _COMMIT.match(p)), None)
    return {"kind": "hub", "hub_id": hub.hub_id, "config": hub.config, "revision": revision,
            "fingerprint": {s: getattr(dd[s], "_fingerprint", None) for s in dd}}


def local_source(directory: Path, files: dict[str, str]) -> dict[str, Any]:
    """``{"kind": "local files", "directory", "files"}``: which local file each split was read from."""
    return {"kind": "local files", "directory": str(directory), "files": dict(files)}
