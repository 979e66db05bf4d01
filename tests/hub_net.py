"""Fixtures for the Hugging Face hub's network boundary (imported by tests/conftest.py).

``hub_reachable``: online, and the reachability probe of :mod:`bayespeft.hub_reach` answers "reachable" without a
request -- for tests that replace the download calls themselves (``from_pretrained``, ``hf_hub_download``,
``load_dataset``).

``hub_unreachable``: online as far as every library knows (huggingface_hub, transformers and ``datasets`` offline
flags off), with the hub endpoint -- ``HF_ENDPOINT`` as huggingface_hub and ``datasets`` read it -- at a closed local
port, as on a machine whose firewall refuses the hub. Every HTTP request any library sends is recorded in
``.requests`` (``httpx2.Client.send``, the transport boundary), so a test can check that nothing but the one probe
was asked.
"""

from __future__ import annotations

import socket

import pytest


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def hub_reachable(monkeypatch):
    from bayespeft import hub_reach

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub_reach, "unreachable", lambda: None)


@pytest.fixture()
def hub_unreachable(monkeypatch):
    import datasets
    import httpx2
    from huggingface_hub import constants

    from bayespeft import hub_reach

    class Net:
        endpoint = f"http://127.0.0.1:{closed_port()}"
        requests: list[str] = []

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", Net.endpoint)
    template = Net.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", Net.endpoint)
    send = httpx2.Client.send

    def recording_send(self, request, *a, **k):
        Net.requests.append(f"{request.method} {request.url}")
        return send(self, request, *a, **k)

    monkeypatch.setattr(httpx2.Client, "send", recording_send)
    hub_reach.forget()
    yield Net
    hub_reach.forget()
