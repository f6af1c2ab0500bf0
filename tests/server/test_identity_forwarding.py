"""Outgoing calls never forward the caller's credentials: a remote server gets its own
`Username`/`Password` or the `HttpHeaders` configured or given in the call, nothing else.
The remote is a real HTTP server on loopback that records what it receives."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.server.api import create_app
from tests.conftest import make_context

CALLER = ("admin", "caller-pa55")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def remote() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append({k.lower(): v for k, v in self.headers.items()})
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web/", received
    server.shutdown()
    server.server_close()


def _client(tmp_path: Path, servers: dict[str, Any]) -> Client:
    context = make_context(
        "local",
        tmp_path,
        authentication_enabled=True,
        registered_users=dict([CALLER]),
        servers=servers,
    )
    return Client(create_app(lambda: context))


def _get(client: Client, server: str, **call: Any) -> Any:
    return client.http.post(
        f"/dicom-web/servers/{server}/get",
        body=json.dumps({"Uri": "/studies", **call}).encode(),
        headers={"Authorization": _basic(*CALLER), "Content-Type": "application/json"},
    )


def test_caller_credentials_are_not_forwarded(tmp_path: Path, remote: Any) -> None:
    url, received = remote
    servers = {"plain": {"Url": url}, "own": {"Url": url, "Username": "svc", "Password": "svc-pw"}}
    client = _client(tmp_path, servers)
    assert _get(client, "plain").status_code == 200
    assert _get(client, "own").status_code == 200
    assert len(received) == 2
    assert "authorization" not in received[0]
    assert received[1]["authorization"] == _basic("svc", "svc-pw")
    assert all("caller-pa55" not in json.dumps(headers) for headers in received)


def test_call_http_headers_are_sent_as_given(tmp_path: Path, remote: Any) -> None:
    url, received = remote
    client = _client(tmp_path, {"plain": {"Url": url}})
    response = _get(client, "plain", HttpHeaders={"Authorization": "Bearer chosen"})
    assert response.status_code == 200
    assert received[0]["authorization"] == "Bearer chosen"
