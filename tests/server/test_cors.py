"""CORS without Chalice's CORS configuration: preflights per route, headers on every answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chalice.test import Client

from chalicelib.server.api import create_app
from chalicelib.server.http import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, cors_headers
from tests.conftest import make_context

OHIF = "https://ohif.example"
RENDERED = "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered"


@pytest.fixture
def client(backend: str, tmp_path: Path) -> Client:
    context = make_context(backend, tmp_path, cors_allowed_origins=(OHIF,))
    return Client(create_app(lambda: context))


def test_cors_headers_rules() -> None:
    assert cors_headers(OHIF, ()) == {}
    assert cors_headers("", (OHIF,)) == {}
    assert cors_headers("https://evil.example", (OHIF,)) == {}
    assert cors_headers(OHIF, (OHIF,))["Access-Control-Allow-Origin"] == OHIF
    assert cors_headers(OHIF, (OHIF,))["Vary"] == "Origin"
    assert cors_headers(OHIF, ("*",))["Access-Control-Allow-Origin"] == "*"
    for name in ("Accept", "Authorization", "Range", "If-None-Match"):
        assert name in CORS_ALLOW_HEADERS
    for name in ("Warning", "ETag", "Content-Location"):
        assert name in CORS_EXPOSE_HEADERS


def test_preflight(client: Client) -> None:
    response = client.http.request(
        "OPTIONS",
        RENDERED,
        headers={
            "Origin": OHIF,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == OHIF
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == CORS_ALLOW_HEADERS
    assert "Access-Control-Max-Age" in response.headers


def test_preflight_on_base_uri_is_not_the_wadl(client: Client) -> None:
    response = client.http.request(
        "OPTIONS", "/dicom-web", headers={"Origin": OHIF, "Access-Control-Request-Method": "GET"}
    )
    assert response.status_code == 204 and response.body == b""
    assert response.headers["Access-Control-Allow-Origin"] == OHIF


def test_preflight_from_unknown_origin_has_no_cors(client: Client) -> None:
    response = client.http.request(
        "OPTIONS",
        RENDERED,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", RENDERED, 404),
        ("DELETE", "/dicom-web/studies", 405),
        ("GET", "/wado?requestType=WADO", 400),
        ("OPTIONS", RENDERED, 204),
        ("OPTIONS", "/dicom-web", 200),
    ],
)
def test_cors_headers_on_every_answer(client: Client, method: str, path: str, status: int) -> None:
    response = client.http.request(method, path, headers={"Origin": OHIF, "Accept": "*/*"})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == OHIF
    assert response.headers["Access-Control-Expose-Headers"] == CORS_EXPOSE_HEADERS


def test_cors_off_by_default(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path)
    client = Client(create_app(lambda: context))
    response = client.http.get(RENDERED, headers={"Origin": OHIF, "Accept": "*/*"})
    assert response.status_code == 404
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_on_strict_accept_error(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, strict_accept=True, cors_allowed_origins=("*",))
    client = Client(create_app(lambda: context))
    response = client.http.get(RENDERED, headers={"Origin": OHIF})
    assert response.status_code == 406
    assert response.headers["Access-Control-Allow-Origin"] == "*"


JOB_CANCEL = "/dicom-web/jobs/no-such-job/cancel"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"],
)
def test_cross_origin_form_post_is_refused(client: Client, content_type: str | None) -> None:
    """A page of another origin may make a browser POST a form (no preflight) with its Basic
    credentials: refused before the handler runs (here it would answer 404)."""
    headers = {"Origin": "https://evil.example", "Host": "pacs.example"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.http.request("POST", JOB_CANCEL, headers=headers, body=b"{}")
    assert response.status_code == 403
    assert "'https://evil.example'" in json.loads(response.body)["Message"]
    assert "CorsAllowedOrigins" in json.loads(response.body)["Message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://pacs.example:8042", "Content-Type": "text/plain"},  # the server's page
        {"Origin": OHIF, "Content-Type": "text/plain"},  # listed in CorsAllowedOrigins
        {"Origin": "https://evil.example", "Content-Type": "application/json"},  # preflighted
        {"Content-Type": "text/plain"},  # not a browser
    ],
)
def test_post_that_is_not_a_cross_origin_form_is_answered(
    client: Client, headers: dict[str, str]
) -> None:
    headers = {"Host": "pacs.example:8042", **headers}
    response = client.http.request("POST", JOB_CANCEL, headers=headers, body=b"{}")
    assert response.status_code == 404
