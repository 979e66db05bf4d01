"""The hub reachability probe (:mod:`bayespeft.hub_reach`) against real local sockets: a closed port, an HTTP server
answering with a chosen status, and a server that accepts connections but never answers. The probe goes through
huggingface_hub's own HTTP client to huggingface_hub's endpoint (``HF_ENDPOINT``), once per endpoint."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from huggingface_hub import constants

from bayespeft import hub_reach
from hub_net import closed_port


@pytest.fixture()
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite sets HF_HUB_OFFLINE=1 before the import
    hub_reach.forget()
    yield monkeypatch
    hub_reach.forget()


@pytest.fixture()
def server():
    """A local HTTP server answering every HEAD with ``server.status``; ``server.paths`` records the paths asked."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            Server.paths.append(self.path)
            self.send_response(Server.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    class Server:
        status = 200
        paths: list[str] = []
        url = f"http://127.0.0.1:{httpd.server_address[1]}"

    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Server
    httpd.shutdown()
    httpd.server_close()


def test_closed_port_is_unreachable_with_the_cause(online):
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    why = hub_reach.unreachable()
    assert why is not None and why.startswith("ConnectError: ") and "refused" in why.lower() and "\n" not in why


@pytest.mark.parametrize("status, down", [(200, None), (302, None), (401, None), (404, None), (503, "HTTP 503")])
def test_an_answer_below_500_is_reachable(status, down, online, server):
    online.setattr(constants, "ENDPOINT", server.url + "/")
    server.status = status
    assert hub_reach.endpoint() == server.url
    assert hub_reach.unreachable() == down
    assert server.paths == ["/"]


def test_probed_once_per_endpoint_until_forgotten(online, server):
    online.setattr(constants, "ENDPOINT", server.url)
    assert hub_reach.unreachable() is None and hub_reach.unreachable() is None
    assert len(server.paths) == 1
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # another endpoint: asked anew
    assert hub_reach.unreachable() is not None
    online.setattr(constants, "ENDPOINT", server.url)
    assert hub_reach.unreachable() is None and len(server.paths) == 1  # remembered
    hub_reach.forget()
    assert hub_reach.unreachable() is None and len(server.paths) == 2


def test_a_server_that_never_answers_times_out_after_hf_hub_etag_timeout(online):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert hub_reach.probe_timeout() == hub_reach.PROBE_TIMEOUT_S  # HF_HUB_ETAG_TIMEOUT not set
        online.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
        assert hub_reach.probe_timeout() == 1.0
        why = hub_reach.unreachable()
    assert why is not None and why.startswith("ReadTimeout")


def test_huggingface_hub_offline_mode_is_unreachable_without_a_request(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    hub_reach.forget()
    try:
        assert hub_reach.unreachable().startswith("OfflineModeIsEnabled")
    finally:
        hub_reach.forget()
