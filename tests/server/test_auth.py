"""Authentication and scopes on every route of the table: 401, 403, and admitted."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.config import SCOPES, ConfigError, Settings, load_settings
from chalicelib.server.api import build_route_table, create_app
from chalicelib.server.auth import Principal, authenticate
from chalicelib.server.http import PUBLIC, RouteTable
from chalicelib.server.http import SCOPES as ROUTE_SCOPES
from tests.conftest import make_context

USERS = {scope: f"{scope}-password" for scope in SCOPES} | {"all": "all-password"}
USER_SCOPES = {scope: [scope] for scope in SCOPES}
OHIF = "https://ohif.example"


def every_option_on() -> dict[str, Any]:
    """Every boolean option true, so that every optional route (DELETE, WADO-URI, remote
    servers, jobs, web app) is in the table."""
    return {f.name: True for f in dataclasses.fields(Settings) if isinstance(f.default, bool)}


def basic(user: str, password: str | None = None) -> str:
    token = f"{user}:{USERS[user] if password is None else password}".encode()
    return "Basic " + base64.b64encode(token).decode()


def concrete(path: str) -> str:
    """A request path for a route path: UIDs for UID parameters, 1 for frames, tags for bulk."""
    path = re.sub(r"\{frames\}", "1", path)
    path = re.sub(r"\{p\d+\}", "7FE00010", path)
    return re.sub(r"\{[a-z_]+\}", "1.2.3", path)


def table_calls(table: RouteTable) -> list[tuple[str, str, str]]:
    calls = [
        (method, path, table.scope(path, method))
        for path, handlers in table.routes.items()
        for method in handlers
    ]
    calls += [("HEAD", p, table.scope(p, "HEAD")) for p, h in table.routes.items() if "GET" in h]
    return calls


def options(**extra: Any) -> dict[str, Any]:
    return every_option_on() | {
        "strict_accept": False,
        "registered_users": USERS,
        "user_scopes": USER_SCOPES,
        **extra,
    }


@pytest.fixture
def client(tmp_path: Path) -> Client:
    context = make_context("local", tmp_path, **options())
    return Client(create_app(lambda: context))


ALL_CALLS = table_calls(build_route_table(Settings(**options())))
CALLS = [call for call in ALL_CALLS if call[2] != PUBLIC]
PUBLIC_CALLS = [call for call in ALL_CALLS if call[2] == PUBLIC]
WEB_APP_PATHS = {"/dicom-web/app/client", "/dicom-web/app/client/{file}"}


def test_table_calls_cover_every_route() -> None:
    assert len(CALLS) > 30
    assert {scope for _, _, scope in CALLS} == set(SCOPES)
    assert {scope for _, _, scope in ALL_CALLS} == set(ROUTE_SCOPES)


def test_only_the_web_app_is_public() -> None:
    """The web app's static files carry no patient data; no other route may be open."""
    assert {path for _, path, _ in PUBLIC_CALLS} == WEB_APP_PATHS
    assert {(m, p) for m, p, _ in PUBLIC_CALLS} == {
        (m, p) for p in WEB_APP_PATHS for m in ("GET", "HEAD")
    }


@pytest.mark.parametrize("path", ["/dicom-web/app/client", "/dicom-web/app/client/index.html"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_public_route_is_open(client: Client, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": basic("read", "nope")}):
        response = _call(client, method, path, **headers)
        assert response.status_code in (200, 302), (headers, response.body)


def test_public_route_other_methods_need_credentials(client: Client) -> None:
    response = client.http.request("POST", "/dicom-web/app/client/index.html")
    assert response.status_code == 401


def _call(client: Client, method: str, path: str, **headers: str) -> Any:
    return client.http.request(method, concrete(path), headers={"Accept": "*/*", **headers})


@pytest.mark.parametrize(("method", "path", "scope"), CALLS)
def test_route_without_credentials_is_401(
    client: Client, method: str, path: str, scope: str
) -> None:
    response = _call(client, method, path)
    assert response.status_code == 401, response.body
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    if method != "HEAD":
        assert "Basic" in json.loads(response.body)["Message"]


@pytest.mark.parametrize(("method", "path", "scope"), CALLS)
def test_route_with_wrong_scope_is_403(client: Client, method: str, path: str, scope: str) -> None:
    for other in SCOPES:
        if other == scope:
            continue
        response = _call(client, method, path, Authorization=basic(other))
        assert response.status_code == 403, (other, response.body)
        if method != "HEAD":
            assert f"'{scope}' scope" in json.loads(response.body)["Message"]


@pytest.mark.parametrize(("method", "path", "scope"), CALLS)
def test_route_with_right_scope_is_admitted(
    client: Client, method: str, path: str, scope: str
) -> None:
    for user in (scope, "all"):
        response = _call(client, method, path, Authorization=basic(user))
        assert response.status_code not in (401, 403), (user, response.body)


def test_wrong_password_and_unknown_user_are_401(client: Client) -> None:
    for header in (
        basic("read", "nope"),
        "Basic " + base64.b64encode(b"nobody:read-password").decode(),
        "Basic !!notbase64",
        "Bearer abc",
    ):
        response = client.http.get("/dicom-web/studies", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "WWW-Authenticate" in response.headers


def test_preflight_stays_open(client: Client) -> None:
    response = client.http.request(
        "OPTIONS",
        "/dicom-web/studies",
        headers={"Origin": OHIF, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204


def test_unsupported_method_needs_credentials(client: Client) -> None:
    assert client.http.request("PATCH", "/dicom-web/studies").status_code == 401
    response = client.http.request(
        "PATCH", "/dicom-web/studies", headers={"Authorization": basic("read")}
    )
    assert response.status_code == 405


def test_authentication_off_admits_anyone(tmp_path: Path) -> None:
    context = make_context("local", tmp_path)
    client = Client(create_app(lambda: context))
    assert client.http.get("/dicom-web/studies").status_code == 204


# On AWS: the API Gateway authorizer's verdict in requestContext -------------------------------


def aws_settings(authorizer: str, **extra: Any) -> Settings:
    return Settings(authorizer=authorizer, **extra)


@pytest.mark.parametrize(
    ("authorizer", "request_context", "expected"),
    [
        (
            "cognito",
            {"authorizer": {"claims": {"sub": "s1", "scope": "dicomweb/read dicomweb/admin"}}},
            Principal("s1", frozenset({"read", "admin"})),
        ),
        (
            "cognito",
            {"authorizer": {"claims": {"username": "ann", "scope": "openid other/write"}}},
            Principal("ann", frozenset()),
        ),
        (
            "oidc",
            {"authorizer": {"principalId": "user@idp", "scope": "dicomweb/write"}},
            Principal("user@idp", frozenset({"write"})),
        ),
        (
            "iam",
            {"identity": {"userArn": "arn:aws:iam::1:user/ann"}},
            Principal("arn:aws:iam::1:user/ann", frozenset(SCOPES)),
        ),
    ],
)
def test_authenticate_reads_the_authorizer(
    authorizer: str, request_context: dict, expected: Principal
) -> None:
    assert authenticate(aws_settings(authorizer), {}, request_context) == expected


def test_authenticate_iam_scopes_by_arn() -> None:
    arn = "arn:aws:iam::1:role/viewer"
    settings = aws_settings("iam", user_scopes={arn: ["read"]})
    principal = authenticate(settings, {}, {"identity": {"userArn": arn}})
    assert principal.scopes == {"read"}


def _event(path: str, method: str, request_context: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the Lambda receives it behind the stage `api`."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "abc.execute-api.us-east-1.amazonaws.com", "Accept": "*/*"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": "/api" + path,
            "stage": "api",
            **request_context,
        },
        "body": None,
        "isBase64Encoded": False,
    }


@pytest.mark.parametrize(
    ("method", "scope_claim", "status"),
    [
        ("GET", "", 401),
        ("GET", "dicomweb/write", 403),
        ("GET", "dicomweb/read", 204),
        ("DELETE", "dicomweb/read dicomweb/write", 403),
    ],
)
def test_api_gateway_event_with_cognito_claims(
    aws_env: None, tmp_path: Path, method: str, scope_claim: str, status: int
) -> None:
    context = make_context("aws", tmp_path, authorizer="cognito")
    app = create_app(lambda: context)
    claims = {"claims": {"sub": "abc", "scope": scope_claim}} if scope_claim else {}
    path = "/dicom-web/studies" if method == "GET" else "/dicom-web/studies/{study}"
    event = _event(path, method, {"authorizer": claims} if claims else {})
    if method == "DELETE":
        event["path"] = event["requestContext"]["path"] = "/dicom-web/studies/1.2.3"
        event["requestContext"]["path"] = "/api/dicom-web/studies/1.2.3"
        event["pathParameters"] = {"study": "1.2.3"}
    response = app(event, None)
    assert response["statusCode"] == status, response
    if status == 401:
        assert response["headers"]["WWW-Authenticate"].startswith("Bearer")


# Configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"AuthenticationEnabled": True}, "RegisteredUsers is empty"),
        ({"RegisteredUsers": {"ann": ""}}, "non-empty password"),
        ({"DicomWeb": {"UserScopes": {"ann": ["delete"]}}}, "list of read, write, admin"),
        ({"DicomWeb": {"Authorizer": "magic"}}, "none, cognito, oidc, iam"),
        ({"DicomWeb": {"TrustedProxies": ["proxy.local"]}}, "not an IP address"),
    ],
)
def test_load_settings_rejects_bad_auth(document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"DICOMWEB_CONFIG": json.dumps(document)})


def test_load_settings_orthanc_users() -> None:
    document = {
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"ann": "secret"},
        "DicomWeb": {"UserScopes": {"ann": ["read"]}},
    }
    settings = load_settings({"DICOMWEB_CONFIG": json.dumps(document)})
    assert settings.authentication_enabled
    assert settings.registered_users == {"ann": "secret"}
    assert settings.user_scopes == {"ann": ["read"]}


@pytest.mark.parametrize("authorizer", ["cognito", "iam"])
def test_api_gateway_routes_web_app_without_authorizer(
    aws_env: None, tmp_path: Path, authorizer: str
) -> None:
    """On an authorizer stage, API Gateway lets a browser load the web app (no token); every
    other route keeps the authorizer (test_oidc.py)."""
    context = make_context("aws", tmp_path, authorizer=authorizer)
    app = create_app(lambda: context, settings=context.settings)
    for path in WEB_APP_PATHS:
        assert app.routes[path]["GET"].authorizer is None, path
        assert app.routes[path]["HEAD"].authorizer is None, path
        assert app.routes[path]["POST"].authorizer is not None, path
