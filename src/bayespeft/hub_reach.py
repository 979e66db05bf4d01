"""Can the Hugging Face hub be reached from here? One cheap request, asked before a download.

On a machine that is online but cannot reach the hub (a cluster node behind a firewall, a proxy that refuses it),
huggingface_hub retries every missing file 5 times with exponential backoff (1 + 2 + 4 + 8 + 8 s, a warning line per
try) before it gives up -- transformers asks for several files, so a run spent 35-57 s printing retry lines before
its error. Instead, where bayespeft is about to let a library download (online, a hub id, no local copy), it asks
:func:`unreachable` first: one ``HEAD`` of the hub endpoint through huggingface_hub's own HTTP client (so
``HF_ENDPOINT``, ``HTTPS_PROXY`` / ``NO_PROXY`` and its certificates apply exactly as for the downloads), waiting at
most :data:`PROBE_TIMEOUT_S` seconds (``HF_HUB_ETAG_TIMEOUT``, when set, instead: the libraries' own knob for how
long to wait for the hub's answer). The answer is kept for the process (one probe per endpoint).

Unreachable, the caller reads only the local cache (``local_files_only=True``, what ``HF_HUB_OFFLINE=1`` would
do): a cached model or dataset still loads at once, and a missing one is one error line saying the hub cannot be
reached and why. Reachable, nothing changes: the libraries download with their own progress bars and retries.
"""

from __future__ import annotations

import functools

#: Seconds the probe waits for the hub's answer when ``HF_HUB_ETAG_TIMEOUT`` is not set.
PROBE_TIMEOUT_S = 5.0


def endpoint() -> str:
    """The hub endpoint the libraries download from (``HF_ENDPOINT``, else ``https://huggingface.co``)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def probe_timeout() -> float:
    """``HF_HUB_ETAG_TIMEOUT`` when the user set it (huggingface_hub reads it at import), else
    :data:`PROBE_TIMEOUT_S`."""
    from huggingface_hub import constants

    if constants.HF_HUB_ETAG_TIMEOUT != constants.DEFAULT_ETAG_TIMEOUT:
        return float(constants.HF_HUB_ETAG_TIMEOUT)
    return PROBE_TIMEOUT_S


def unreachable() -> str | None:
    """None when the hub endpoint answers; else why not, in a few words (``"ConnectError: [Errno -2] Name or
    service not known"``, ``"ConnectTimeout: timed out"``, ``"HTTP 503"``). Probed once per endpoint and process."""
    return _probe(endpoint(), probe_timeout())


@functools.lru_cache(maxsize=None)
def _probe(url: str, timeout: float) -> str | None:
    """One ``HEAD url`` through huggingface_hub's shared client, no retries: any answer below 500 (a redirect, 401,
    404 included) means the hub is there; a transport error (DNS, refused, timeout, proxy, TLS) or a 5xx means not."""
    import httpx2
    from huggingface_hub.utils import get_session

    try:
        response = get_session().head(url, timeout=timeout, follow_redirects=False)
    except (httpx2.HTTPError, OSError) as e:  # OSError: huggingface_hub's OfflineModeIsEnabled, socket errors
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0].strip()}" if text else type(e).__name__
    return f"HTTP {response.status_code}" if response.status_code >= 500 else None


def forget() -> None:
    """Drop the remembered answers (the next :func:`unreachable` probes again)."""
    _probe.cache_clear()
