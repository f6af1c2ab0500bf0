"""The outgoing URL guard and the per-server session."""

from __future__ import annotations

import pytest

from chalicelib.client.http import remote_url
from chalicelib.client.registry import parse_server
from chalicelib.client.session import remote_client
from chalicelib.config import Settings
from chalicelib.errors import BadRequest

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
    assert client.session.auth == ("u", "p")
    assert client.session.headers["X-Token"] == "t"
    assert client.session.proxies == {"http": "http://proxy:3128", "https": "http://proxy:3128"}
    assert client.session.verify is False and client.session.trust_env is False
    assert client.timeout == (4.0, 4.0)
    assert remote_client(server, settings).session is client.session
    assert remote_client(server, Settings()).timeout == (4.0, 4.0)
    assert remote_client(parse_server("x", ["http://h/"]), Settings()).timeout == (10.0, 60.0)
