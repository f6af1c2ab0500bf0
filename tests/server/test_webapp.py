"""The web app's files: content types, caching headers, the settings the page carries."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from chalice.test import Client

from chalicelib.config import ConfigError, load_settings
from chalicelib.server.api import build_route_table, create_app
from chalicelib.server.webapp import CONTENT_TYPES, WEB_DIR
from tests.apigateway import api_gateway_event
from tests.conftest import make_context

APP = "/dicom-web/app/client"
OHIF = "https://viewer.example/viewer?StudyInstanceUIDs={uid}"


@pytest.fixture
def client(tmp_path: Path) -> Client:
    context = make_context("local", tmp_path, viewer_url_template=OHIF, servers_in_database=True)
    return Client(create_app(lambda: context))


def _files() -> list[Path]:
    files = sorted(p for p in WEB_DIR.iterdir() if p.is_file())
    assert files, f"no file in {WEB_DIR}"
    return files


def test_app_file_every_file_with_its_content_type(client: Client) -> None:
    for path in _files():
        response = client.http.get(f"{APP}/{path.name}", headers={"Accept": "*/*"})
        assert response.status_code == 200, path.name
        assert response.headers["Content-Type"] == CONTENT_TYPES[path.suffix], path.name
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["ETag"])
        if path.name != "index.html":
            assert response.body == path.read_bytes()


def test_app_file_etag_answers_304(client: Client) -> None:
    first = client.http.get(f"{APP}/app.js")
    etag = first.headers["ETag"]
    again = client.http.get(f"{APP}/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.body == b""
    other = client.http.get(f"{APP}/app.js", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200


def test_app_file_index_carries_the_settings(client: Client) -> None:
    response = client.http.get(f"{APP}/index.html")
    page = response.body.decode("utf-8")
    viewer = OHIF.replace("&", "&amp;")
    assert f'name="dicomweb-viewer-url-template" content="{viewer}"' in page
    assert 'name="dicomweb-servers-in-database" content="true"' in page
    assert "{{" not in page
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'self'
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_app_file_index_carries_the_sign_in_settings(tmp_path: Path) -> None:
    """The provider the page signs in with, and a CSP that lets it fetch the provider."""
    issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"
    context = make_context(
        "local", tmp_path, webapp_oidc_authority=issuer, webapp_oidc_client_id="c1&2"
    )
    response = Client(create_app(lambda: context)).http.get(f"{APP}/index.html")
    page = response.body.decode()
    assert f'name="dicomweb-oidc-authority" content="{issuer}"' in page
    assert 'name="dicomweb-oidc-client-id" content="c1&amp;2"' in page
    scopes = "openid dicomweb/read dicomweb/write dicomweb/admin"
    assert f'name="dicomweb-oidc-scopes" content="{scopes}"' in page
    policy = response.headers["Content-Security-Policy"]
    assert policy.endswith(
        "; connect-src 'self' https: https://cognito-idp.eu-west-1.amazonaws.com"
    )


def test_app_file_index_without_sign_in(client: Client) -> None:
    response = client.http.get(f"{APP}/index.html")
    assert 'name="dicomweb-oidc-authority" content=""' in response.body.decode()
    assert "connect-src" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"WebAppOidcAuthority": "cognito-idp.example/pool", "WebAppOidcClientId": "c"}, "http"),
        ({"WebAppOidcAuthority": "https://idp.example"}, "go together"),
        ({"WebAppOidcClientId": "c"}, "go together"),
    ],
)
def test_sign_in_settings_are_checked(document: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"DICOMWEB_CONFIG": json.dumps({"DicomWeb": document})})


def test_sign_in_settings_from_the_environment() -> None:
    """The stack sets them on the Lambdas (infra/stack.py)."""
    issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_x"
    settings = load_settings({"WEBAPP_OIDC_AUTHORITY": issuer, "WEBAPP_OIDC_CLIENT_ID": "c"})
    assert (settings.webapp_oidc_authority, settings.webapp_oidc_client_id) == (issuer, "c")


def test_app_file_index_escapes_the_template(tmp_path: Path) -> None:
    template = '/viewer?a=1&b="x"&uid={uid}'
    context = make_context("local", tmp_path, viewer_url_template=template)
    page = Client(create_app(lambda: context)).http.get(f"{APP}/index.html").body.decode()
    assert 'content="/viewer?a=1&amp;b=&quot;x&quot;&amp;uid={uid}"' in page
    assert 'name="dicomweb-servers-in-database" content="false"' in page


def test_app_file_unknown_is_404(client: Client) -> None:
    for name in ("missing.js", "..", "%2e%2e%2fapp.py", "api.py"):
        response = client.http.get(f"{APP}/{name}")
        assert response.status_code == 404, name
        assert b"index.html" in response.body


def test_open_app_redirects_to_the_page(client: Client) -> None:
    response = client.http.get(APP, headers={"Host": "pacs.test"})
    assert response.status_code == 302
    assert response.headers["Location"] == "http://pacs.test/dicom-web/app/client/index.html"


def test_app_routes_public_scope() -> None:
    """The page and its modules load before a browser can sign in: no credentials needed."""
    table = build_route_table(load_settings({}))
    assert table.scope(f"{APP}/{{file}}", "GET") == "public"
    assert table.scope(APP, "GET") == "public"


def test_app_file_api_gateway_event(tmp_path: Path) -> None:
    """On API Gateway the page is a base64 body, as every answer (binary_types */*)."""
    app = create_app(lambda: make_context("local", tmp_path))
    headers = {"Host": "abc.execute-api.us-east-1.amazonaws.com", "Accept": "text/html"}
    path = f"{APP}/index.html"
    event = api_gateway_event("GET", path, f"{APP}/{{file}}", {"file": "index.html"}, headers, None)
    answer = app(event, None)
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    assert b'<script type="module" src="app.js">' in base64.b64decode(answer["body"])
