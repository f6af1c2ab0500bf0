"""The outgoing URL guard and the per-server session."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chalice.test import Client

from chalicelib.client.http import RemoteError, remote_url
from chalicelib.client.registry import parse_server
from chalicelib.client.session import remote_client
from chalicelib.config import Settings
from chalicelib.context import Context
from chalicelib.errors import BadRequest
from chalicelib.server.api import create_app
from tests.client.loopback import answer, loopback_server
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

    def do_get(handler: BaseHTTPRequestHandler) -> None:
        received.append({k.lower(): v for k, v in handler.headers.items()})
        time.sleep(delay)
        if location and not handler.path.endswith("/moved"):
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        answer(handler, 200, b"[]", "application/dicom+json")

    with loopback_server(do_get) as origin:
        yield origin, received


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


def _proxy_get_on_aws(origin: str, tmp_path: Path) -> tuple[Any, Context]:
    """POST servers/peer/get of /studies on an AWS context with InlineLimit 1 byte."""
    ctx = make_context("aws", tmp_path, servers={"peer": [f"{origin}/dicom-web/"]}, inline_limit=1)
    response = Client(create_app(lambda: ctx)).http.post(
        "/dicom-web/servers/peer/get",
        body=b'{"Uri": "/studies"}',
        headers={"Content-Type": "application/json"},
    )
    return response, ctx


def test_proxy_get_answer_over_inline_limit_is_a_303_to_s3(aws_env: None, tmp_path: Path) -> None:
    """On AWS a remote's answer larger than a Lambda answer (6 MB: a series by WADO-RS) made
    API Gateway answer 502; over InlineLimit it goes to S3 as our own retrieves do."""
    with _loopback() as (origin, _):
        response, ctx = _proxy_get_on_aws(origin, tmp_path)
    assert response.status_code == 303, response.body
    path = urlsplit(response.headers["Location"]).path
    assert "/tmp/" in path
    assert ctx.blobs.get(path[path.index("tmp/") :]) == b"[]"


def test_proxy_get_error_over_inline_limit_keeps_its_status(aws_env: None, tmp_path: Path) -> None:
    """A remote's 404 over InlineLimit became a 303 to an S3 copy answered 200: the status
    was lost. An answer other than 200 is passed on as it is."""
    body = b'{"Message": "no such study"}'
    with loopback_server(lambda handler: answer(handler, 404, body, "application/json")) as origin:
        response, _ = _proxy_get_on_aws(origin, tmp_path)
    assert response.status_code == 404
    assert response.body == body


def test_basic_credentials_are_sent_in_utf8() -> None:
    """RFC 7617 §2.1: requests encodes them in ISO-8859-1, and a password with any other
    character failed every call with a UnicodeEncodeError (500)."""
    with _loopback() as (origin, seen):
        server = parse_server("peer", [f"{origin}/dicom-web/", "jürgen", "pa☃ss"])
        remote_client(server, Settings()).get("/studies")
    expected = base64.b64encode("jürgen:pa☃ss".encode()).decode()
    assert seen[0]["authorization"] == f"Basic {expected}"
