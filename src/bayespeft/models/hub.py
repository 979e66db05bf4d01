"""Where pretrained weights named by a Hugging Face hub id come from: the hub (online) or only its local cache.

Online (the default), backbones with a hub id (``roberta-base``, ``microsoft/phi-2``, ``timm/vit_base_patch16_224...``)
load the way the libraries do by themselves -- ``from_pretrained(hub_id)`` / ``timm.create_model(arch,
pretrained=True)`` -- so missing files are downloaded, with the libraries' own progress bars, into the Hugging Face
hub cache (:func:`hub_cache`: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and read
from there afterwards.

Offline -- ``HF_HUB_OFFLINE=1`` in the environment or ``model.offline: true`` in the config -- only that cache is
read (``local_files_only=True``; timm's weights file is looked up in the cache here and handed to timm as a file).
Online on a machine that cannot reach the hub (:mod:`bayespeft.hub_reach`: one short probe of the endpoint before the
first download), the cache is read as offline -- a cached model loads at once -- instead of waiting out the
libraries' retries. Either way a model that is neither cached nor downloadable is one
:class:`~bayespeft.errors.HubError` line naming the hub id, the cache directory, the cause (offline, hub unreachable,
download failed) and how to fix it. A ``model.path`` (a local copy) never touches the hub.
"""

from __future__ import annotations

import os
from typing import Any

from .. import hub_reach
from ..errors import HubError

#: Values of ``HF_HUB_OFFLINE`` that mean "offline" (the set huggingface_hub itself accepts).
TRUTHY = frozenset({"1", "ON", "YES", "TRUE"})


def env_flag(*names: str) -> str | None:
    """The first of the environment variables ``names`` set to a true value (``1``, ``yes``, ``on``, ``true``)."""
    for name in names:
        if os.environ.get(name, "").strip().upper() in TRUTHY:
            return name
    return None


def offline_reason(cfg: Any) -> str | None:
    """Why downloads are off for the model section ``cfg``: ``"model.offline: true"``, the environment variable as
    set (``"HF_HUB_OFFLINE=1"``, ``"HF_HUB_OFFLINE=true"``) or None (online). Read at call time, so a changed environment takes effect without re-importing anything."""
    if getattr(cfg, "offline", False):
        return "model.offline: true"
    flag = env_flag("HF_HUB_OFFLINE")
    return f"{flag}={os.environ[flag].strip()}" if flag else None


def hub_cache() -> str:
    """The directory the Hugging Face libraries cache hub downloads in (``huggingface_hub.constants.HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_down(cfg: Any) -> str | None:
    """Online (no :func:`offline_reason`): why the hub cannot be reached now (:func:`bayespeft.hub_reach.unreachable`,
    probed once per process), else None. Offline it is not asked: nothing is downloaded anyway."""
    return None if offline_reason(cfg) is not None else hub_reach.unreachable()


def local_only(offline: bool) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: ``local_files_only=True`` offline, nothing online (the libraries'
    defaults, i.e. download what is missing)."""
    return {"local_files_only": True} if offline else {}


def first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception (library messages span several lines)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0].strip()}" if text else type(e).__name__


_TOKENIZER_FILES = "{id} --include '*.json' '*.txt' '*.model'"  # tokenizer and config files, no weights
# what a from_pretrained call could not find -> (how to name it, `hf download` arguments, the local alternative)
_MISSING = {
    "weights": ("the pretrained weights {id!r}", "{id}", "give model.path (a local copy)"),
    # pretrained weights wanted too (they load after the tokenizer): the whole model is to be fetched
    "tokenizer": ("the tokenizer files of {id!r}", "{id}", "give model.path (a local copy of the model and its "
                  "tokenizer; model.tokenizer for a separate tokenizer directory)"),
    # pretrained: false builds the weights from a config: the tokenizer is all that is read from the hub
    "tokenizer_only": ("the tokenizer files of {id!r}", _TOKENIZER_FILES, "set model.tokenizer to a local tokenizer "
                       "directory (model.pretrained is false: the pretrained weights are not needed)"),
}


def unavailable(name: str, hub_id: str, reason: str | None, cause: BaseException | None = None,
                what: str = "weights", down: str | None = None) -> HubError:
    """The one-line error for the files ``what`` (a key of ``_MISSING``) of hub id ``hub_id`` of backbone
    ``name`` that could not be had, naming what is missing and the config key that gives a local copy instead.

    ``reason`` is :func:`offline_reason`, ``down`` is :func:`hub_down` (both None: online and the hub answered, so
    the download itself failed)."""
    cache = hub_cache()
    why = f" ({first_line(cause)})" if cause is not None else ""
    noun, download, local = (t.format(id=hub_id) for t in _MISSING[what])
    if reason is None and down is not None:
        return HubError(
            f"{name}: could not download {noun}: the Hugging Face hub {hub_reach.endpoint()} cannot be reached "
            f"({down}) and they are not in its cache {cache}. Fix: connect this machine to the hub (network, proxy, "
            f"HF_ENDPOINT), or fill that cache from a connected machine (`hf download {download}`, same HF_HOME) and "
            f"set HF_HUB_OFFLINE=1 to read only the cache, or {local}"
        )
    if reason is not None:
        return HubError(
            f"{name}: {noun} are not in the Hugging Face cache {cache} and downloads are off ({reason}){why}. "
            f"Fix: {local}, or run once with network without {reason} to download them there, or copy them into "
            f"that cache from a connected machine (`hf download {download}`, same HF_HOME)"
        )
    return HubError(
        f"{name}: could not download {noun} from the Hugging Face hub into {cache}{why}. Fix: check the network and "
        f"the id (a private or gated repo needs `hf auth login`), or {local}; model.offline: true reads only the cache"
    )


def cached_weights_file(name: str, hub_id: str, filenames: tuple[str, ...], reason: str | None,
                        down: str | None = None) -> str:
    """Offline (``reason``) or with the hub unreachable (``down``): the first of ``filenames`` present in the hub
    cache for ``hub_id`` (``repo`` or ``repo@revision``), without any network access; :class:`HubError` when none is
    cached."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    for filename in filenames:
        try:
            return hf_hub_download(repo, filename, revision=revision or None, local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError):
            continue
    raise unavailable(name, hub_id, reason, down=down)
