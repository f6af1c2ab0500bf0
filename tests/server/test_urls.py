"""The one URL builder, and the API Gateway event path (base64 bodies, stage prefix)."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.config import Settings
from chalicelib.context import Context
from chalicelib.server.api import create_app
from chalicelib.server.urls import api_base_url, stage_prefix
from tests.apigateway import api_gateway_event
from tests.conftest import testdata
from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

SETTINGS = Settings(trusted_proxies=("10.0.0.0/8",))
PROXY = "10.1.2.3"


@pytest.mark.parametrize(
    ("settings", "headers", "expected"),
    [
        pytest.param(SETTINGS, {"host": "h:8042"}, "http://h:8042", id="host"),
        pytest.param(
            SETTINGS,
            {"host": "internal", "x-forwarded-host": "pacs.example", "x-forwarded-proto": "https"},
            "https://pacs.example",
            id="x-forwarded",
        ),
        pytest.param(
            SETTINGS,
            {"host": "internal", "forwarded": 'for=1.2.3.4;proto=https;host="a.example:8443"'},
            "https://a.example:8443",
            id="forwarded",
        ),
        pytest.param(
            SETTINGS,
            {
                "host": "internal",
                "forwarded": "proto=http;host=first.example, proto=https;host=second",
                "x-forwarded-host": "ignored",
            },
            "http://first.example",
            id="forwarded-wins-first-element",
        ),
        pytest.param(
            Settings(host="fixed.example", ssl=True, trusted_proxies=("10.0.0.0/8",)),
            {"host": "internal", "x-forwarded-host": "other"},
            "https://fixed.example",
            id="option-host-ssl",
        ),
        pytest.param(
            Settings(public_root="https://public.example/pacs/dicom-web/"),
            {"host": "internal"},
            "https://public.example/pacs",
            id="public-root",
        ),
    ],
)
def test_api_base_url(settings: Settings, headers: dict[str, str], expected: str) -> None:
    assert api_base_url(settings, headers, peer=PROXY) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "h", "x-forwarded-host": "evil.example", "x-forwarded-proto": "https"},
        {"host": "h", "forwarded": "proto=https;host=evil.example"},
    ],
)
@pytest.mark.parametrize("peer", ["203.0.113.9", "", "not-an-address"])
def test_api_base_url_ignores_forwarding_from_untrusted_peers(
    headers: dict[str, str], peer: str
) -> None:
    assert api_base_url(SETTINGS, headers, peer=peer) == "http://h"
    assert api_base_url(Settings(), headers, peer=PROXY) == "http://h"


def test_api_base_url_api_gateway_sets_the_scheme() -> None:
    headers = {"host": "abc.execute-api.example", "x-forwarded-proto": "https"}
    assert api_base_url(Settings(), headers, peer="203.0.113.9", api_gateway=True) == (
        "https://abc.execute-api.example"
    )
    headers["x-forwarded-host"] = "evil.example"
    assert api_base_url(Settings(), headers, "/api", "203.0.113.9", True) == (
        "https://abc.execute-api.example/api"
    )


def test_stage_prefix_fromapi_gateway_event() -> None:
    event = {"path": "/dicom-web/studies", "requestContext": {"path": "/api/dicom-web/studies"}}
    assert stage_prefix(event) == "/api"
    assert stage_prefix({"requestContext": {"path": "/dicom-web/studies"}}) == ""


def test_api_gateway_event_stow_and_retrieve(context: Context) -> None:
    app = create_app(lambda: context)
    data = testdata("2020-08-12-Christopher.dcm").read_bytes()
    headers = {
        "Host": "abc.execute-api.us-east-1.amazonaws.com",
        "Content-Type": STOW_CONTENT_TYPE,
        "Accept": "application/dicom+json",
        "X-Forwarded-Proto": "https",
    }
    event = api_gateway_event(
        "POST", "/dicom-web/studies", "/dicom-web/studies", {}, headers, stow_body(data)
    )
    answer = app(event, None)
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    document = json.loads(base64.b64decode(answer["body"]))
    url = document["00081199"]["Value"][0]["00081190"]["Value"][0]
    assert url.startswith("https://abc.execute-api.us-east-1.amazonaws.com/api/dicom-web/studies/")

    path = url.removeprefix("https://abc.execute-api.us-east-1.amazonaws.com/api")
    _, study, _, series, _, instance = path.removeprefix("/dicom-web/").split("/")
    resource = "/dicom-web/studies/{study}/series/{series}/instances/{instance}"
    get_headers = {"Host": headers["Host"], "Accept": "*/*"}
    params = {"study": study, "series": series, "instance": instance}
    answer = app(api_gateway_event("GET", path, resource, params, get_headers, None), None)
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    assert data in base64.b64decode(answer["body"])


def test_api_gateway_event_without_accept_is_any(context: Context) -> None:
    app = create_app(lambda: context)
    resource = "/dicom-web/studies/{study}"
    event = api_gateway_event(
        "GET", "/dicom-web/studies/1.2.3", resource, {"study": "1.2.3"}, {"Host": "h"}, None
    )
    answer = app(event, None)
    assert answer["statusCode"] == 404
    assert json.loads(base64.b64decode(answer["body"]))["Message"]
