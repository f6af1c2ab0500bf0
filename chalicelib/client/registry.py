"""The remote DICOMweb servers (`DicomWeb.Servers`) and the one place that holds their secrets.

A server is configured as in the Orthanc DICOMweb plugin's manual ("Client-related options"):
`name: [url, username, password]` or `name: {Url, Username, Password, HttpHeaders, Timeout,
HasDelete, ChunkedTransfers, HasWadoRsUniversalTransferSyntax, CertificateFile,
CertificateKeyFile, CertificateKeyPassword}`; any other key is kept as a user property, and
`Pkcs11` is refused (no hardware token can reach a Lambda).

Secrets (Password, CertificateKeyPassword, the values of HttpHeaders) live in `RemoteServer`
only: `public_view` is what every route answers, with `Password: null` and header names only.

With `DicomWeb.ServersInDatabase` the list lives in the ConfigStore (namespace `servers`) and
survives restarts; the configured servers seed it only when it is empty. Otherwise PUT and
DELETE change this process's copy, as in Orthanc. In the ConfigStore a server's secrets are
replaced by a `SecretRef`: the secrets themselves go to the SecretStore (Secrets Manager on
AWS, a 0600 file locally).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from chalicelib.errors import BadRequest, NotFound
from chalicelib.storage import ports

log = logging.getLogger(__name__)

NAMESPACE = "servers"
_BOOL_KEYS = {
    "HasDelete": "has_delete",
    "ChunkedTransfers": "chunked_transfers",
    "HasWadoRsUniversalTransferSyntax": "has_universal_transfer_syntax",
}
_TEXT_KEYS = {
    "Username": "username",
    "Password": "password",
    "CertificateFile": "certificate_file",
    "CertificateKeyFile": "certificate_key_file",
    "CertificateKeyPassword": "certificate_key_password",
}


SECRET_KEYS = ("Password", "CertificateKeyPassword", "HttpHeaders")
"""The keys of a stored server whose values are kept in the SecretStore."""
SECRET_REF = "SecretRef"


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A field name is a token (RFC 9110 §5.1)."""

MAX_TIMEOUT = 86_400
"""Seconds; a larger `Timeout` is a mistake (and past ~10**11 the socket cannot take it)."""
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.@+=-]{1,128}")
"""What `PUT /servers/{name}` accepts: the characters an AWS Secrets Manager name takes
(`{TABLE}/servers/{name}` holds a server's secrets) but '/', at most 128 of them (the
ConfigStore's DynamoDB sort key stops at 1,024 bytes)."""


def header_problem(name: str, value: str) -> str | None:
    """Why `name: value` cannot be sent as an HTTP header field, or None; the value (maybe a
    secret) is never quoted."""
    if not _HEADER_NAME.fullmatch(name):
        return f"HttpHeaders {name!r}: a header name is letters, digits and !#$%&'*+-.^_`|~"
    if any(c in value for c in "\r\n\0"):
        return f"HttpHeaders {name!r}: a header value cannot hold a line break or NUL"
    if value != value.strip(" \t"):
        # requests refuses it with the value in its message, which an error answer repeated
        return f"HttpHeaders {name!r}: a header value cannot start or end with a space or tab"
    if any(ord(c) > 255 or (ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        # http.client sends values in ISO-8859-1: any other character failed the call (500)
        return (
            f"HttpHeaders {name!r}: a header value is ISO-8859-1 text without control "
            f"characters (RFC 9110 §5.5)"
        )
    return None


class InvalidServer(ValueError):
    """A server definition that cannot be used; the message names the key and the rule."""


@dataclass(frozen=True)
class RemoteServer:
    name: str
    url: str
    """The server's DICOMweb root, always ending with '/'."""
    username: str = ""
    password: str = ""
    http_headers: Mapping[str, str] = field(default_factory=dict)
    timeout: int = 0
    """Seconds; 0: the global `HttpTimeout`."""
    has_delete: bool = False
    chunked_transfers: bool = True
    has_universal_transfer_syntax: bool = True
    certificate_file: str = ""
    certificate_key_file: str = ""
    certificate_key_password: str = ""
    user_properties: Mapping[str, Any] = field(default_factory=dict)

    def operations(self) -> list[str]:
        """What `GET /servers/{name}` answers, in Orthanc's order."""
        return ["get", "retrieve", "stow", "wado", "qido"] + (["delete"] if self.has_delete else [])


def parse_server(name: str, value: Any, lenient: bool = False) -> RemoteServer:
    """A server from its configuration (list or object form); raise InvalidServer.

    `lenient` is for a definition already configured or stored: what an earlier version
    accepted and requests sent anyway is normalised instead of refused (header values'
    leading and trailing spaces and tabs stripped, RFC 9110 §5.5; spaces in the Url
    percent-encoded; a Timeout over MAX_TIMEOUT capped). Input (PUT) is strict.
    """
    if not name or "/" in name:
        raise InvalidServer(f"server name {name!r} must be non-empty and contain no '/'")
    if isinstance(value, list):
        if not 1 <= len(value) <= 3 or not all(isinstance(v, str) for v in value):
            raise InvalidServer(
                f"server {name!r}: the list form is [url] or [url, username, password]"
            )
        value = dict(zip(("Url", "Username", "Password"), value, strict=False))
    if not isinstance(value, dict):
        raise InvalidServer(f"server {name!r} must be a list or an object, not {value!r}")
    if value.get("Pkcs11"):
        raise InvalidServer(
            f"server {name!r}: Pkcs11 client authentication is not supported (no hardware "
            f"token reaches this server); use CertificateFile and CertificateKeyFile"
        )
    url = value.get("Url")
    if lenient and isinstance(url, str):
        url = url.replace(" ", "%20")
    url = _url(name, url)
    options: dict[str, Any] = {}
    for key, attr in _TEXT_KEYS.items():
        if value.get(key) is not None:
            if not isinstance(value[key], str):
                raise InvalidServer(f"server {name!r}: {key} must be a string")
            options[attr] = value[key]
    for key, attr in _BOOL_KEYS.items():
        if key in value:
            options[attr] = _boolean(name, key, value[key])
    headers = value.get("HttpHeaders")
    headers = {} if headers is None else headers
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidServer(f"server {name!r}: HttpHeaders must map header names to strings")
    if lenient:
        headers = {k: v.strip(" \t") for k, v in headers.items()}
    for problem in filter(None, (header_problem(k, v) for k, v in headers.items())):
        raise InvalidServer(f"server {name!r}: {problem}")
    timeout = value.get("Timeout", 0)
    if lenient and not isinstance(timeout, bool) and isinstance(timeout, int):
        timeout = min(timeout, MAX_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_TIMEOUT:
        raise InvalidServer(
            f"server {name!r}: Timeout must be a whole number of seconds from 0 to {MAX_TIMEOUT}"
        )
    if bool(options.get("certificate_file")) != bool(options.get("certificate_key_file")):
        raise InvalidServer(f"server {name!r}: CertificateFile and CertificateKeyFile go together")
    known = {"Url", "HttpHeaders", "Timeout", "Pkcs11", *_TEXT_KEYS, *_BOOL_KEYS}
    return RemoteServer(
        name=name,
        url=url if url.endswith("/") else url + "/",
        http_headers=dict(headers),
        timeout=timeout,
        user_properties={k: v for k, v in value.items() if k not in known},
        **options,
    )


def _url(name: str, url: Any) -> str:
    """`url` checked as a server's DICOMweb root; raise InvalidServer naming the problem."""
    if not isinstance(url, str) or not url:
        raise InvalidServer(f"server {name!r}: Url is required")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidServer(
            f"server {name!r}: Url {url!r} holds a space or a control character (percent-encode it)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not 0 to 65535)
    except ValueError as exc:  # an unclosed '[' of an IPv6 host, a port out of range
        raise InvalidServer(f"server {name!r}: Url {url!r} is not a URL ({exc})") from None
    if parts.username or parts.password:
        raise InvalidServer(
            f"server {name!r}: Url must not hold credentials; give Username and Password"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidServer(
            f"server {name!r}: Url {url!r} must be an absolute http:// or https:// URL "
            f"with a host, without query or fragment"
        )
    return url


def server_name_problem(name: str) -> str | None:
    """Why `name` cannot name a new server (`PUT /servers/{name}`), or None."""
    if _SERVER_NAME.fullmatch(name) and name not in (".", ".."):
        return None
    return (
        f"server name {name[:140]!r} must be 1 to 128 letters, digits and _.@+=- (not '.' or '..')"
    )


def _boolean(name: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise InvalidServer(f"server {name!r}: {key} must be true or false, not {value!r}")


def public_view(server: RemoteServer) -> dict[str, Any]:
    """The server as `GET /servers?expand` shows it: no secret, header names only (Orthanc's
    `WebServiceParameters::FormatPublic` shape)."""
    view: dict[str, Any] = {
        **server.user_properties,
        "Url": server.url,
        "HttpHeaders": sorted(server.http_headers),
        "Pkcs11": False,
        "Timeout": server.timeout,
        "HasDelete": server.has_delete,
        "ChunkedTransfers": server.chunked_transfers,
        "HasWadoRsUniversalTransferSyntax": server.has_universal_transfer_syntax,
    }
    if server.username:
        view |= {"Username": server.username, "Password": None}
    if server.certificate_file:
        view |= {
            "CertificateFile": server.certificate_file,
            "CertificateKeyFile": server.certificate_key_file,
            "CertificateKeyPassword": None,
        }
    return view


def stored_form(server: RemoteServer) -> dict[str, Any]:
    """The full definition, secrets included, as the ConfigStore keeps it."""
    form: dict[str, Any] = {
        **server.user_properties,
        "Url": server.url,
        "HttpHeaders": dict(server.http_headers),
        "Timeout": server.timeout,
    }
    form |= {key: getattr(server, attr) for key, attr in {**_TEXT_KEYS, **_BOOL_KEYS}.items()}
    return form


class ServerRegistry:
    """The servers this process knows: the configuration's, or the ConfigStore's."""

    def __init__(
        self,
        configured: Mapping[str, Any],
        store: ports.ConfigStore,
        in_database: bool,
        secrets: ports.SecretStore,
    ) -> None:
        self._store = store if in_database else None
        self._secrets = secrets
        self._lock = threading.Lock()
        self._servers = {
            name: parse_server(name, value, lenient=True) for name, value in configured.items()
        }
        if self._store is not None and not self._store.list_items(NAMESPACE):
            for server in self._servers.values():
                self._save(server)

    def _save(self, server: RemoteServer) -> None:
        """Into the ConfigStore, the secrets replaced by a reference to the SecretStore."""
        assert self._store is not None
        form = stored_form(server)
        secret = {key: form.pop(key) for key in SECRET_KEYS if form.get(key)}
        for key in SECRET_KEYS:
            form.pop(key, None)
        if secret:
            form[SECRET_REF] = self._secrets.put_secret(f"{NAMESPACE}/{server.name}", secret)
        else:
            self._secrets.delete_secret(f"{NAMESPACE}/{server.name}")
        self._store.put_item(NAMESPACE, server.name, form)

    def _load(self, name: str, form: dict[str, Any]) -> RemoteServer:
        reference = form.pop(SECRET_REF, None)
        if reference is not None:
            form |= self._secrets.get_secret(reference)
        return parse_server(name, form, lenient=True)

    def servers(self) -> dict[str, RemoteServer]:
        """The servers, without those stored that no longer pass `parse_server` (saved under
        an earlier version's rules), which are logged: one of them made every listing a 500."""
        if self._store is None:
            with self._lock:
                return dict(sorted(self._servers.items()))
        servers = {}
        for name, value in self._store.list_items(NAMESPACE).items():
            try:
                servers[name] = self._load(name, value)
            except InvalidServer as exc:
                log.warning("stored %s; left out of the list (PUT it again or DELETE it)", exc)
        return servers

    def get(self, name: str) -> RemoteServer:
        """Raise NotFound (404) naming the server, BadRequest (400) for a stored definition that
        is no longer valid."""
        if self._store is None:
            with self._lock:
                server = self._servers.get(name)
        else:
            try:
                server = self._load(name, self._store.get_item(NAMESPACE, name))
            except ports.NotFound:
                server = None
            except InvalidServer as exc:
                raise BadRequest(
                    f"the stored definition of {exc}: PUT a new one or DELETE it"
                ) from None
        if server is None:
            raise NotFound(f"no remote DICOMweb server named {name!r} (see GET servers/)")
        return server

    def put(self, name: str, value: Any) -> RemoteServer:
        """Add or replace a server; raise BadRequest naming what is wrong. The name rule is
        for a new server: one named before it can still be replaced."""
        problem = server_name_problem(name)
        if problem and not self._exists(name):
            raise BadRequest(problem)
        try:
            server = parse_server(name, value)
        except InvalidServer as exc:
            raise BadRequest(str(exc)) from None
        if self._store is None:
            with self._lock:
                self._servers[name] = server
        else:
            self._save(server)
        return server

    def _exists(self, name: str) -> bool:
        if self._store is None:
            with self._lock:
                return name in self._servers
        try:
            self._store.get_item(NAMESPACE, name)
        except ports.NotFound:
            return False
        return True

    def delete(self, name: str) -> None:
        """Raise NotFound (404). A stored definition is removed without being read, so that
        one that is no longer valid can be."""
        missing = NotFound(f"no remote DICOMweb server named {name!r} (see GET servers/)")
        if self._store is None:
            with self._lock:
                if self._servers.pop(name, None) is None:
                    raise missing
            return
        try:
            self._store.delete_item(NAMESPACE, name)
        except ports.NotFound:
            raise missing from None
        self._secrets.delete_secret(f"{NAMESPACE}/{name}")
