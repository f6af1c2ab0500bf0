"""Remote servers' secrets (ServersInDatabase): only a reference in the ConfigStore, the values
in the SecretStore (0600 file locally, Secrets Manager on AWS), never in an answer or a log."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.client.registry import NAMESPACE, SECRET_REF
from chalicelib.context import Context
from chalicelib.server.api import create_app
from tests.conftest import make_context

PASSWORD = "pa55-Zq8-secret"
HEADER_VALUE = "Bearer tok-7781-secret"
DEFINITION = {
    "Url": "http://127.0.0.1:9/dicom-web/",
    "Username": "ann",
    "Password": PASSWORD,
    "HttpHeaders": {"Authorization": HEADER_VALUE},
    "HasDelete": True,
}
SECRETS = (PASSWORD, "tok-7781-secret")


@pytest.fixture
def context(backend: str, tmp_path: Path) -> Context:
    return make_context(backend, tmp_path, servers_in_database=True)


def _call(client: Client, method: str, path: str, body: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    response = client.http.request(
        method, path, body=data, headers={"Content-Type": "application/json", "Accept": "*/*"}
    )
    for secret in SECRETS:
        assert secret.encode() not in response.body, f"{method} {path} answered a secret"
        assert all(secret not in v for v in response.headers.values()), (method, path)
    return response


def test_server_secrets_never_answered_nor_logged(
    context: Context, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = Client(create_app(lambda: context))
    assert _call(client, "PUT", "/dicom-web/servers/remote", DEFINITION).status_code == 200
    assert _call(client, "GET", "/dicom-web/servers?expand").status_code == 200
    assert _call(client, "GET", "/dicom-web/servers/remote").status_code == 200
    down = _call(client, "POST", "/dicom-web/servers/remote/get", {"Uri": "/studies"})
    assert down.status_code == 502
    bad = dict(DEFINITION, Timeout="soon")
    assert _call(client, "PUT", "/dicom-web/servers/other", bad).status_code == 400
    for secret in SECRETS:
        assert secret not in caplog.text

    stored = context.config_store.get_item(NAMESPACE, "remote")
    assert SECRET_REF in stored
    assert not any(secret in json.dumps(stored) for secret in SECRETS)
    # The definition still works: the registry joins the secrets back for outgoing calls.
    server = context.servers.get("remote")
    assert server.password == PASSWORD
    assert server.http_headers == {"Authorization": HEADER_VALUE}

    assert _call(client, "DELETE", "/dicom-web/servers/remote").status_code == 200


def test_server_secrets_file_is_owner_only(tmp_path: Path) -> None:
    context = make_context("local", tmp_path, servers_in_database=True)
    context.servers.put("remote", DEFINITION)
    path = tmp_path / "data" / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD in path.read_text()
    context.servers.delete("remote")
    assert PASSWORD not in path.read_text()


def test_server_without_secrets_has_no_reference(context: Context) -> None:
    context.servers.put("plain", {"Url": "http://127.0.0.1:9/dicom-web/"})
    assert SECRET_REF not in context.config_store.get_item(NAMESPACE, "plain")
    assert context.servers.get("plain").password == ""
