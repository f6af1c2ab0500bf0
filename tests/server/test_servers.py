"""The client API routes through chalice.test.Client, on both backends: servers registry,
proxy-call guards, job routes' errors. Calls that reach a remote run against a real local HTTP
server (tests/client/remote.py), never a mock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.server.api import create_app
from tests.conftest import make_context
from tests.peers import refused_port

PASSWORD = "s3cr3t-Pa55"
KEY_PASSWORD = "k3y-Pa55"
TOKEN = "Bearer t0k3n-value"
SERVERS = {
    "list-form": ["http://127.0.0.1:9/dicom-web/", "alice", PASSWORD],
    "object-form": {
        "Url": "http://127.0.0.1:9/other",
        "Username": "bob",
        "Password": PASSWORD,
        "HttpHeaders": {"Authorization": TOKEN},
        "HasDelete": True,
        "Timeout": 7,
        "CertificateFile": "client.crt",
        "CertificateKeyFile": "client.key",
        "CertificateKeyPassword": KEY_PASSWORD,
        "Site": "north",
    },
}
SECRETS = (PASSWORD, KEY_PASSWORD, "t0k3n-value")


@pytest.fixture
def servers_client(backend: str, tmp_path: Path) -> Client:
    ctx = make_context(backend, tmp_path, servers=SERVERS)
    return Client(create_app(lambda: ctx))


def call(client: Client, method: str, path: str, body: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    response = client.http.request(
        method, path, body=data, headers={"Content-Type": "application/json"}
    )
    for secret in SECRETS:
        assert secret.encode() not in response.body, f"{method} {path} echoed a secret"
    return response


def test_list_servers_names(servers_client: Client) -> None:
    response = call(servers_client, "GET", "/dicom-web/servers")
    assert response.status_code == 200
    assert json.loads(response.body) == ["list-form", "object-form"]


def test_list_servers_expand_hides_secrets(servers_client: Client) -> None:
    response = call(servers_client, "GET", "/dicom-web/servers?expand")
    servers = json.loads(response.body)
    assert servers["list-form"]["Url"] == "http://127.0.0.1:9/dicom-web/"
    assert servers["list-form"]["Password"] is None
    detail = servers["object-form"]
    assert detail["Url"] == "http://127.0.0.1:9/other/"
    assert detail["Username"] == "bob" and detail["Password"] is None
    assert detail["HttpHeaders"] == ["Authorization"]
    assert detail["CertificateKeyPassword"] is None
    assert detail["Site"] == "north" and detail["Timeout"] == 7 and detail["HasDelete"] is True


def test_server_operations_with_and_without_delete(servers_client: Client) -> None:
    assert json.loads(call(servers_client, "GET", "/dicom-web/servers/list-form").body) == [
        "get",
        "retrieve",
        "stow",
        "wado",
        "qido",
    ]
    operations = json.loads(call(servers_client, "GET", "/dicom-web/servers/object-form").body)
    assert operations[-1] == "delete"


def test_unknown_server_is_404_on_every_route(servers_client: Client) -> None:
    assert call(servers_client, "GET", "/dicom-web/servers/nope").status_code == 404
    assert call(servers_client, "DELETE", "/dicom-web/servers/nope").status_code == 404
    for operation in ("get", "qido", "wado", "delete", "stow", "retrieve"):
        response = call(servers_client, "POST", f"/dicom-web/servers/nope/{operation}", {})
        assert response.status_code == 404, operation
        assert "nope" in json.loads(response.body)["Message"]


def test_put_then_delete_server(servers_client: Client) -> None:
    body = {"Url": "http://127.0.0.1:9/x/", "Username": "carol", "Password": PASSWORD}
    assert json.loads(call(servers_client, "PUT", "/dicom-web/servers/new", body).body) == {}
    names = json.loads(call(servers_client, "GET", "/dicom-web/servers").body)
    assert "new" in names
    assert json.loads(call(servers_client, "DELETE", "/dicom-web/servers/new").body) == {}
    assert call(servers_client, "GET", "/dicom-web/servers/new").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Username": "x"}, "Url is required"),
        ({"Url": "ftp://host/"}, "http://"),
        ({"Url": "http://h/", "Pkcs11": True}, "Pkcs11"),
        ({"Url": "http://h/", "HasDelete": "maybe"}, "HasDelete"),
        ({"Url": "http://h/", "Timeout": -1}, "Timeout"),
        (["http://h/", "a", "b", "c"], "list form"),
        ({"Url": "http://[::1/"}, "is not a URL"),
        ({"Url": "http://h:99999/"}, "is not a URL"),
        ({"Url": "http://h/\r\n"}, "control character"),
    ],
)
def test_put_server_rejects_bad_definitions(
    servers_client: Client, body: Any, message: str
) -> None:
    response = call(servers_client, "PUT", "/dicom-web/servers/bad", body)
    assert response.status_code == 400
    assert message in json.loads(response.body)["Message"]


@pytest.mark.parametrize(
    "name",
    ["a%20b", "%C3%A9t%C3%A9", "a%00b", "a%0Ab", "%2E%2E", "x" * 129, "y" * 1500],
    ids=lambda name: name[:12] + (f"...{len(name)}" if len(name) > 12 else ""),
)
def test_put_server_refuses_names_secrets_manager_cannot_take(
    servers_client: Client, name: str
) -> None:
    body = {"Url": "http://127.0.0.1:9/", "Password": PASSWORD}
    response = call(servers_client, "PUT", f"/dicom-web/servers/{name}", body)
    assert response.status_code == 400, name
    assert "1 to 128 letters, digits and _.@+=-" in json.loads(response.body)["Message"]
    assert json.loads(call(servers_client, "GET", "/dicom-web/servers").body) == list(SERVERS)


def test_put_server_takes_every_allowed_character(servers_client: Client) -> None:
    name = "Site_2.north@pacs+a=b-" + "x" * 106
    body = {"Url": "http://127.0.0.1:9/", "Password": PASSWORD}
    assert call(servers_client, "PUT", f"/dicom-web/servers/{name}", body).status_code == 200
    assert name in json.loads(call(servers_client, "GET", "/dicom-web/servers").body)


def test_get_on_post_routes_is_405_with_allow(servers_client: Client) -> None:
    for operation in ("get", "qido", "wado", "delete", "stow", "retrieve"):
        response = call(servers_client, "GET", f"/dicom-web/servers/list-form/{operation}")
        assert response.status_code == 405
        assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example/studies",
        "//evil.example/studies",
        "/../studies",
        "/studies/../../x",
        "/studies/%2e%2e/%2e%2e/x",
        "/studies//x",
        "/studies?PatientID=1",
    ],
)
def test_proxy_uri_must_stay_under_the_server(servers_client: Client, uri: str) -> None:
    for operation in ("get", "qido", "wado"):
        response = call(
            servers_client, "POST", f"/dicom-web/servers/list-form/{operation}", {"Uri": uri}
        )
        assert response.status_code == 400, (operation, uri)


@pytest.mark.parametrize("body", [{}, {"Uri": ""}, {"Uri": "/"}, {"Uri": None}])
def test_proxy_without_uri_is_400_naming_it(servers_client: Client, body: dict) -> None:
    for operation in ("get", "qido", "wado"):
        response = call(servers_client, "POST", f"/dicom-web/servers/list-form/{operation}", body)
        assert response.status_code == 400, (operation, body, response.body)
        assert "Uri" in json.loads(response.body)["Message"]


@pytest.mark.parametrize("headers", [{"X-Token": "a\r\nInjected: 1"}, {"Bad Name": "v"}])
def test_proxy_header_that_cannot_be_sent_is_400(servers_client: Client, headers: dict) -> None:
    bodies = {
        "get": {"Uri": "/studies"},
        "qido": {"Uri": "/studies"},
        "wado": {"Uri": "/studies/1.2.3"},
        "retrieve": {"Resources": [{"Study": "1.2.3"}]},
    }
    for operation, body in bodies.items():
        response = call(
            servers_client,
            "POST",
            f"/dicom-web/servers/list-form/{operation}",
            {**body, "HttpHeaders": headers},
        )
        assert response.status_code == 400, (operation, response.body)
        message = json.loads(response.body)["Message"]
        assert "HttpHeaders" in message and "Injected" not in message, message


@pytest.mark.parametrize("value", [None, True, {"a": 1}, ["1"]])
def test_proxy_argument_that_is_not_text_is_400(servers_client: Client, value: Any) -> None:
    for key in ("Arguments", "HttpHeaders"):
        body = {"Uri": "/studies", key: {"PatientID": value}}
        response = call(servers_client, "POST", "/dicom-web/servers/list-form/get", body)
        assert response.status_code == 400, (key, value, response.body)
        assert key in json.loads(response.body)["Message"]


def test_unreadable_client_certificate_is_502_naming_the_server(servers_client: Client) -> None:
    response = call(servers_client, "POST", "/dicom-web/servers/object-form/get", {"Uri": "/x"})
    assert response.status_code == 502
    message = json.loads(response.body)["Message"]
    assert "'object-form'" in message and "CertificateFile" in message, message


def test_proxy_get_remote_down_is_502_naming_the_server(backend: str, tmp_path: Path) -> None:
    servers = {"down": [f"http://127.0.0.1:{refused_port()}/dicom-web/"]}
    ctx = make_context(backend, tmp_path, servers=servers, http_timeout=5)
    client = Client(create_app(lambda: ctx))
    response = call(client, "POST", "/dicom-web/servers/down/get", {"Uri": "/studies"})
    assert response.status_code == 502
    assert "cannot connect" in json.loads(response.body)["Message"]


def test_delete_needs_has_delete(servers_client: Client) -> None:
    body = {"Level": "Study", "StudyInstanceUID": "1.2.3"}
    response = call(servers_client, "POST", "/dicom-web/servers/list-form/delete", body)
    assert response.status_code == 400
    assert "HasDelete" in json.loads(response.body)["Message"]


def test_retrieve_instance_without_series_is_400(servers_client: Client) -> None:
    body = {"Resources": [{"Study": "1.2.3", "Instance": "1.2.3.4"}]}
    response = call(servers_client, "POST", "/dicom-web/servers/list-form/retrieve", body)
    assert response.status_code == 400
    assert "Series" in json.loads(response.body)["Message"]


def test_stow_unknown_resource_is_404(servers_client: Client) -> None:
    body = {"Resources": ["6ca4c9f3-5e895cb3-4d82c6da-09e060fe-9c59f228"]}
    response = call(servers_client, "POST", "/dicom-web/servers/list-form/stow", body)
    assert response.status_code == 404
    assert "6ca4c9f3" in json.loads(response.body)["Message"]


def test_jobs_empty_and_unknown_job_404(servers_client: Client) -> None:
    assert json.loads(call(servers_client, "GET", "/dicom-web/jobs").body) == []
    assert json.loads(call(servers_client, "GET", "/dicom-web/jobs?expand").body) == []
    assert call(servers_client, "GET", "/dicom-web/jobs/nope").status_code == 404
    for action in ("cancel", "pause", "resume", "resubmit"):
        assert call(servers_client, "POST", f"/dicom-web/jobs/nope/{action}").status_code == 404


def test_stored_server_no_longer_valid_is_left_out_and_can_be_removed(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server stored under an earlier version's rules (a port out of range was accepted)
    made every listing a 500: the listing leaves it out and logs it, a call on it is a 400
    naming the problem, and DELETE removes it."""
    ctx = make_context(backend, tmp_path, servers=SERVERS, servers_in_database=True)
    ctx.config_store.put_item("servers", "old", {"Url": "http://h:99999/", "Timeout": 0})
    client = Client(create_app(lambda: ctx))
    listing = call(client, "GET", "/dicom-web/servers?expand")
    assert listing.status_code == 200, listing.body
    assert sorted(json.loads(listing.body)) == sorted(SERVERS)
    assert "server 'old'" in caplog.text and "left out of the list" in caplog.text
    response = call(client, "POST", "/dicom-web/servers/old/get", {"Uri": "/studies"})
    assert response.status_code == 400
    assert "stored definition of server 'old'" in json.loads(response.body)["Message"]
    assert call(client, "DELETE", "/dicom-web/servers/old").status_code == 200
    assert call(client, "DELETE", "/dicom-web/servers/old").status_code == 404
    assert call(client, "GET", "/dicom-web/servers/old").status_code == 404


@pytest.mark.parametrize("value", [" t0k3n-value", "t0k3n-value ", "t0k3n-value☃"])
def test_proxy_header_value_that_cannot_be_sent_is_400_without_the_value(
    servers_client: Client, value: str
) -> None:
    """requests refused a value with a leading space with the value in its message, which
    the 502 answer repeated; a character beyond ISO-8859-1 was a 500."""
    body = {"Uri": "/studies", "HttpHeaders": {"X-Token": value}}
    response = call(servers_client, "POST", "/dicom-web/servers/list-form/get", body)
    assert response.status_code == 400
    assert "HttpHeaders 'X-Token'" in json.loads(response.body)["Message"]
