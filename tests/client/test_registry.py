"""Remote server definitions (`DicomWeb.Servers`) and the registry, with ServersInDatabase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.client.registry import (
    MAX_TIMEOUT,
    InvalidServer,
    RemoteServer,
    ServerRegistry,
    parse_server,
    public_view,
)
from chalicelib.config import ConfigError, load_settings
from chalicelib.errors import BadRequest, NotFound
from tests.conftest import make_context


def test_parse_server_list_form() -> None:
    server = parse_server("peer", ["http://h:8042/dicom-web", "alice", "pw"])
    assert (server.url, server.username, server.password) == (
        "http://h:8042/dicom-web/",
        "alice",
        "pw",
    )
    assert server.has_universal_transfer_syntax and server.chunked_transfers
    assert not server.has_delete


def test_parse_server_object_form_keeps_user_properties() -> None:
    server = parse_server(
        "peer",
        {
            "Url": "https://h/dw/",
            "HasDelete": True,
            "ChunkedTransfers": False,
            "HasWadoRsUniversalTransferSyntax": False,
            "Timeout": 3,
            "Site": {"Room": 4},
        },
    )
    assert server.has_delete and not server.chunked_transfers
    assert not server.has_universal_transfer_syntax and server.timeout == 3
    assert server.user_properties == {"Site": {"Room": 4}}
    assert public_view(server)["Site"] == {"Room": 4}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Url": "http://h/", "Pkcs11": True}, "Pkcs11"),
        ({"Url": "http://u:p@h/"}, "credentials"),
        ({"Url": "http://h/?a=1"}, "without query"),
        ({"Url": "http://h/", "CertificateFile": "c.pem"}, "go together"),
        ({"Url": "http://h/", "HttpHeaders": {"X": 1}}, "HttpHeaders"),
        ({"Url": "http://h/", "HttpHeaders": {"X": "a\r\nInjected: 1"}}, "HttpHeaders 'X'"),
        ({"Url": "http://h/", "HttpHeaders": {"Bad Name": "v"}}, "HttpHeaders 'Bad Name'"),
        ({"Url": "http://h/", "HttpHeaders": {"X": " s3cret"}}, "start or end with a space"),
        ({"Url": "http://h/", "HttpHeaders": {"X": "s3cret\t"}}, "start or end with a space"),
        ({"Url": "http://h/", "HttpHeaders": {"X": "sn☃w"}}, "ISO-8859-1 text"),
        ({"Url": "http://h/", "HttpHeaders": {"X": "a\x7fb"}}, "ISO-8859-1 text"),
        ("http://h/", "list or an object"),
        ({"Url": "http://[::1/"}, "not a URL"),
        ({"Url": "http://h:99999/"}, "not a URL"),
        ({"Url": "http://h:port/"}, "not a URL"),
        ({"Url": "http://:80/"}, "with a host"),
        ({"Url": "http://h/a b"}, "space or a control character"),
        ({"Url": "http://h/\r\nX: 1"}, "space or a control character"),
        ({"Url": "http://h/\x00"}, "space or a control character"),
        ({"Url": "http://h/", "Timeout": 10**20}, "from 0 to 86400"),
        ({"Url": "http://h/", "HttpHeaders": []}, "HttpHeaders"),
    ],
)
def test_parse_server_refuses(value: object, message: str) -> None:
    with pytest.raises(InvalidServer, match=message):
        parse_server("peer", value)


def test_load_settings_rejects_a_bad_server() -> None:
    document = {"DicomWeb": {"Servers": {"peer": {"Url": "http://h/", "Pkcs11": True}}}}
    with pytest.raises(ConfigError, match=r"DicomWeb\.Servers: server 'peer': Pkcs11"):
        load_settings({"DICOMWEB_CONFIG": json.dumps(document)})


def test_load_settings_reads_client_options() -> None:
    document = {
        "HttpTimeout": 7,
        "HttpsVerifyPeers": False,
        "HttpProxy": "http://proxy:3128",
        "DicomWeb": {"StowMaxInstances": 2, "StowMaxSize": 1, "ServersInDatabase": True},
    }
    settings = load_settings({"DICOMWEB_CONFIG": json.dumps(document)})
    assert (settings.http_timeout, settings.https_verify_peers) == (7, False)
    assert settings.http_proxy == "http://proxy:3128"
    assert (settings.stow_max_instances, settings.stow_max_size) == (2, 1)
    assert settings.servers_in_database


def test_servers_in_database_survive_a_new_context(backend: str, tmp_path: Path) -> None:
    configured = {"seed": ["http://h/dicom-web/"]}
    first = make_context(backend, tmp_path, servers=configured, servers_in_database=True)
    first.servers.put("added", {"Url": "http://added/", "Password": "pw", "Username": "u"})
    first.servers.delete("seed")
    again = ServerRegistry(configured, first.config_store, True, first.servers._secrets)
    assert list(again.servers()) == ["added"]
    assert again.get("added").password == "pw"


def test_servers_without_database_are_per_process(tmp_path: Path) -> None:
    configured = {"seed": ["http://h/dicom-web/"]}
    first = make_context("local", tmp_path, servers=configured)
    first.servers.put("added", ["http://added/"])
    again = ServerRegistry(configured, first.config_store, False, first.servers._secrets)
    assert list(again.servers()) == ["seed"]
    with pytest.raises(NotFound):
        again.get("added")


EARLIER_VERSION_DEFINITION = {
    "Url": "http://h/dicom web/",
    "HttpHeaders": {"X-Key": "k3y \t"},
    "Timeout": 86_401,
}
"""Accepted before the stricter input rules and sent by requests anyway (the space as %20,
the value's trailing whitespace ignored)."""


def _assert_normalised(server: RemoteServer) -> None:
    assert server.url == "http://h/dicom%20web/"
    assert dict(server.http_headers) == {"X-Key": "k3y"}
    assert server.timeout == MAX_TIMEOUT


def test_stored_definition_of_an_earlier_version_lists_and_can_be_edited(
    backend: str, tmp_path: Path
) -> None:
    ctx = make_context(backend, tmp_path, servers_in_database=True)
    ctx.config_store.put_item("servers", "legacy", dict(EARLIER_VERSION_DEFINITION))
    assert list(ctx.servers.servers()) == ["legacy"]
    _assert_normalised(ctx.servers.servers()["legacy"])
    _assert_normalised(ctx.servers.get("legacy"))
    ctx.servers.put("legacy", {"Url": "http://h/dicom-web/", "Username": "u", "Password": "new"})
    assert ctx.servers.get("legacy").password == "new"
    with pytest.raises(BadRequest, match="space or a control character"):
        ctx.servers.put("legacy", EARLIER_VERSION_DEFINITION)


def test_configured_definition_of_an_earlier_version_starts(tmp_path: Path) -> None:
    document = {"DicomWeb": {"Servers": {"legacy": EARLIER_VERSION_DEFINITION}}}
    settings = load_settings({"DICOMWEB_CONFIG": json.dumps(document)})
    ctx = make_context("local", tmp_path, servers=settings.servers)
    _assert_normalised(ctx.servers.get("legacy"))


def test_server_named_before_the_name_rule_can_be_replaced(backend: str, tmp_path: Path) -> None:
    ctx = make_context(backend, tmp_path, servers_in_database=True)
    ctx.config_store.put_item("servers", "my peer", {"Url": "http://h/", "Timeout": 0})
    ctx.servers.put("my peer", {"Url": "http://h/", "Username": "u", "Password": "changed"})
    assert ctx.servers.get("my peer").password == "changed"
    with pytest.raises(BadRequest, match="must be 1 to 128 letters"):
        ctx.servers.put("new peer", {"Url": "http://h/"})
    in_memory = make_context("local", tmp_path / "mem", servers={"my peer": ["http://h/"]})
    in_memory.servers.put("my peer", ["http://h/", "u", "changed"])
    assert in_memory.servers.get("my peer").password == "changed"
