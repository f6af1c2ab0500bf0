"""The outgoing URL guard and the per-server session."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chalice.test import Client

from chalicelib.client.http import RemoteError, remote_url
from chalicelib.client.registry import parse_server
from chalicelib.client.session import remote_client
from chalicelib.config import Settings
from chalicelib.errors import BadRequest
from chalicelib.server.api import create_app
from tests.conftest import make_context

SERVER = parse_server("peer", ["http://h:8042/dicom-web/", "alice", "pw"])


@pytest.mark.parametrize(
    ("uri", "arguments", "url"),
    [
        ("/studies", None, "http://h:8042/dicom-web/studies"),
        ("studies/1.2/series", None, "http://h:8042/dicom-web/studies/1.2/series"),
        (
            "/series",
            {"00100010": "KNIX*", "limit": 5},
            "http://h:8042/dicom-web/series?00100010=KNIX%2A&limit=5",
        ),
        (
            "/studies/1.2/rendered",
            {"viewport": "64,64", "PatientName": "DOE JOHN"},
            "http://h:8042/dicom-web/studies/1.2/rendered?viewport=64,64&PatientName=DOE%20JOHN",
        ),
    ],
)
def test_remote_url_under_the_server(uri: str, arguments: dict | None, url: str) -> None:
    assert remote_url(SERVER, uri, arguments) == url


@pytest.mark.parametrize(
    "uri",
    [
        "https://other/x",
        "//other/x",
        "/../x",
        "/a/%2E%2E/%2e%2e/x",
        "/a//b",
        "/a?b=1",
        "/a#b",
        "\\\\other\\x",
        "/..",
        5,
        None,
        "",
        "/",
    ],
)
def test_remote_url_refuses_paths_that_leave_the_server(uri: object) -> None:
    with pytest.raises(BadRequest):
        remote_url(SERVER, uri)  # type: ignore[arg-type]


def test_session_carries_auth_headers_proxy_and_timeouts() -> None:
    server = parse_server(
        "peer",
        {
            "Url": "https://h/dw/",
            "Username": "u",
            "Password": "p",
            "HttpHeaders": {"X-Token": "t"},
            "Timeout": 4,
        },
    )
    settings = Settings(http_proxy="http://proxy:3128", https_verify_peers=False)
    client = remote_client(server, settings)
    assert client.session.auth == (b"u", b"p")
    assert client.session.headers["X-Token"] == "t"
    assert client.session.proxies == {"http": "http://proxy:3128", "https": "http://proxy:3128"}
    assert client.session.verify is False and client.session.trust_env is False
    assert client.timeout == (4.0, 4.0)
    assert remote_client(server, settings).session is client.session
    assert remote_client(server, Settings()).timeout == (4.0, 4.0)
    assert remote_client(parse_server("x", ["http://h/"]), Settings()).timeout == (10.0, 60.0)


@contextmanager
def _loopback(
    location: str | None = None, delay: float = 0
) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server that records each request's headers and answers `[]` after `delay`
    seconds, or a 302 to `location` (kept relative when it starts with '/'); yields its origin
    and the records."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append({k.lower(): v for k, v in self.headers.items()})
            time.sleep(delay)
            if location and not self.path.endswith("/moved"):
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_redirect_to_another_origin_carries_no_credentials_or_headers() -> None:
    with (
        _loopback() as (elsewhere, seen_elsewhere),
        _loopback(f"{elsewhere}/moved") as (origin, seen_at_origin),
    ):
        server = parse_server(
            "peer",
            {
                "Url": f"{origin}/dicom-web/",
                "Username": "u",
                "Password": "p",
                "HttpHeaders": {"X-Api-Key": "k3y"},
            },
        )
        client = remote_client(server, Settings())
        answer = client.get("/studies", headers={"X-Call-Token": "t0k"})
    assert answer.json() == []
    assert seen_at_origin[0]["x-api-key"] == "k3y" and "authorization" in seen_at_origin[0]
    assert len(seen_elsewhere) == 1
    leaked = {"authorization", "x-api-key", "x-call-token"} & set(seen_elsewhere[0])
    assert not leaked, seen_elsewhere[0]
    assert seen_elsewhere[0]["accept"] == "*/*"


def test_redirect_within_the_origin_keeps_credentials_and_headers() -> None:
    with _loopback("/dicom-web/moved") as (origin, seen):
        server = parse_server(
            "peer", {"Url": f"{origin}/dicom-web/", "HttpHeaders": {"X-Api-Key": "k3y"}}
        )
        remote_client(server, Settings()).get("/studies")
    assert [request["x-api-key"] for request in seen] == ["k3y", "k3y"]


def test_get_that_times_out_is_not_sent_again() -> None:
    """The server's Timeout bounds a call: urllib3 tried a timed-out GET three times more
    (a 60 s Timeout took four minutes), and said "cannot connect" of a server that answered
    the connection."""
    with _loopback(delay=3) as (origin, seen):
        server = parse_server("slow", {"Url": f"{origin}/dicom-web/", "Timeout": 1})
        with pytest.raises(RemoteError, match="'slow': no answer within 1 s") as failure:
            remote_client(server, Settings()).get("/studies")
    assert len(seen) == 1
    assert failure.value.transient


def test_proxy_get_answer_over_inline_limit_is_a_303_to_s3(aws_env: None, tmp_path: Path) -> None:
    """On AWS a remote's answer larger than a Lambda answer (6 MB: a series by WADO-RS) made
    API Gateway answer 502; over InlineLimit it goes to S3 as our own retrieves do."""
    with _loopback() as (origin, _):
        servers = {"peer": [f"{origin}/dicom-web/"]}
        ctx = make_context("aws", tmp_path, servers=servers, inline_limit=1)
        response = Client(create_app(lambda: ctx)).http.post(
            "/dicom-web/servers/peer/get",
            body=b'{"Uri": "/studies"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 303, response.body
    path = urlsplit(response.headers["Location"]).path
    assert "/tmp/" in path
    assert ctx.blobs.get(path[path.index("tmp/") :]) == b"[]"


def test_basic_credentials_are_sent_in_utf8() -> None:
    """RFC 7617 §2.1: requests encodes them in ISO-8859-1, and a password with any other
    character failed every call with a UnicodeEncodeError (500)."""
    with _loopback() as (origin, seen):
        server = parse_server("peer", [f"{origin}/dicom-web/", "jürgen", "pa☃ss"])
        remote_client(server, Settings()).get("/studies")
    expected = base64.b64encode("jürgen:pa☃ss".encode()).decode()
    assert seen[0]["authorization"] == f"Basic {expected}"
