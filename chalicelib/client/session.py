"""One `requests.Session` per remote server: its auth, headers, TLS settings and proxy.

Every call has explicit connect and read timeouts (the server's `Timeout`, else the global
`HttpTimeout`). Idempotent GETs are retried by urllib3 with backoff on connection errors and
502/503/504, not after a read timeout: the server's Timeout bounds the call (four attempts
made a 60 s Timeout four minutes, past API Gateway's 29 s many times over); a job step that
timed out is tried again by its runner. A STOW-RS POST is never retried here: the job step
retries the batch, knowing what the remote acknowledged (STYLE.md rule 23).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from chalicelib.client.http import RemoteError, remote_url
from chalicelib.client.registry import RemoteServer, stored_form
from chalicelib.config import Settings
from chalicelib.errors import BadGateway

CONNECT_TIMEOUT = 10.0

SELF_CALL_HEADER = "X-DicomWeb-Caller"
SELF_CALL_TOKEN = secrets.token_hex(16)
"""This process's token, sent in SELF_CALL_HEADER by each of its clients: the local server
runs a request carrying it even with every worker busy, since one of them waits for it
(`localserver.is_self_call`)."""


class _GetRetry(Retry):
    """urllib3's Retry, except that a read timeout ends the call (requests' ReadTimeout)."""

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        error = kwargs.get("error", args[3] if len(args) > 3 else None)
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(*args, **kwargs)


GET_RETRY = _GetRetry(
    total=3,
    backoff_factor=0.2,
    status_forcelist=(502, 503, 504),
    allowed_methods=frozenset({"GET"}),
    raise_on_status=False,
)


class _ClientCertificateAdapter(HTTPAdapter):
    """An adapter whose TLS context holds a client certificate with a key password (requests'
    `cert=` cannot take one)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


_REDIRECT_HEADERS = frozenset(
    {"accept", "accept-encoding", "user-agent", "connection"}
    | {"content-type", "content-length", "transfer-encoding"}  # a 307/308 keeps its body
)
"""What a redirect to another origin still carries."""


class _ServerSession(requests.Session):
    """Follows redirects (a 303 to a presigned S3 URL, as this project's AWS stage answers),
    but the server's credentials and headers (HttpHeaders, a call's own) go to its own origin
    only: requests itself drops just Authorization."""

    def __init__(self, server_url: str) -> None:
        super().__init__()
        url = urlsplit(server_url)
        self.origin = (url.scheme, url.netloc)

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        super().rebuild_auth(prepared_request, response)
        target = urlsplit(prepared_request.url)
        if (target.scheme, target.netloc) != self.origin:
            for name in list(prepared_request.headers):
                if name.lower() not in _REDIRECT_HEADERS:
                    del prepared_request.headers[name]


@dataclass(frozen=True)
class RemoteClient:
    """A server with its session; `timeout` is (connect, read) seconds."""

    server: RemoteServer
    session: requests.Session
    timeout: tuple[float, float]

    def get(
        self,
        uri: str,
        arguments: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """GET `uri`; raise RemoteError for a failure (4xx/5xx included). `stream`: the body
        is read later, through `chunks` (close the response)."""
        return self.request(
            "GET", remote_url(self.server, uri, arguments), headers=headers, stream=stream
        )

    def chunks(self, response: requests.Response, size: int) -> Iterator[bytes]:
        """The body of a streamed `response` in chunks of up to `size` bytes; raise
        RemoteError (transient) when the connection fails or times out on the way."""
        try:
            yield from response.iter_content(size)
        except requests.RequestException as exc:
            raise RemoteError(
                f"{response.request.method} {response.url} on server {self.server.name!r}: "
                f"the answer broke off ({_cause(exc)})",
                transient=True,
            ) from None

    def request(
        self, method: str, url: str, check_status: bool = True, **kwargs: Any
    ) -> requests.Response:
        """One call; raise RemoteError on no answer, and on a 4xx/5xx when `check_status`."""
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise RemoteError(
                f"{method} {url} on server {self.server.name!r}: no answer within "
                f"{self.timeout[1]:g} s",
                transient=True,
            ) from None
        except requests.RequestException as exc:
            raise RemoteError(
                f"{method} {url} on server {self.server.name!r}: cannot connect ({_cause(exc)})",
                transient=True,
            ) from None
        if check_status and response.status_code >= 400:
            text = response.text[:500].strip()
            raise RemoteError(
                f"{method} {url} on server {self.server.name!r} answered "
                f"{response.status_code} {response.reason}" + (f": {text}" if text else ""),
                status=response.status_code,
                transient=response.status_code == 429 or response.status_code >= 500,
            )
        return response


def _cause(exc: Exception) -> str:
    while exc.__context__ is not None and isinstance(exc.__context__, Exception):
        exc = exc.__context__
    return str(exc) or type(exc).__name__


_sessions: dict[str, requests.Session] = {}
_sessions_lock = threading.Lock()


def remote_client(server: RemoteServer, settings: Settings) -> RemoteClient:
    """The client of `server`; sessions are kept per server definition (a PUT that changes the
    server gets a new one)."""
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                stored_form(server),
                settings.https_verify_peers,
                settings.https_ca_certificates,
                settings.http_proxy,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()
    with _sessions_lock:
        session = _sessions.get(fingerprint)
        if session is None:
            session = _sessions[fingerprint] = _new_session(server, settings)
    read = float(server.timeout or settings.http_timeout)
    return RemoteClient(server, session, (min(CONNECT_TIMEOUT, read), read))


def _new_session(server: RemoteServer, settings: Settings) -> requests.Session:
    session = _ServerSession(server.url)
    session.trust_env = False  # HttpProxy, never the environment, decides the proxy
    session.headers.update(server.http_headers)
    session.headers[SELF_CALL_HEADER] = SELF_CALL_TOKEN
    if server.username:
        # In UTF-8 (RFC 7617 §2.1, charset="UTF-8"): requests' own ISO-8859-1 failed the call
        # with a 500 on any other character.
        session.auth = (server.username.encode(), server.password.encode())
    if settings.http_proxy:
        session.proxies = {"http": settings.http_proxy, "https": settings.http_proxy}
    session.verify = (
        (settings.https_ca_certificates or True) if settings.https_verify_peers else False
    )
    https_adapter = HTTPAdapter(max_retries=GET_RETRY)
    if server.certificate_file:
        if server.certificate_key_password:
            context = ssl.create_default_context(cafile=settings.https_ca_certificates or None)
            if not settings.https_verify_peers:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            try:
                context.load_cert_chain(
                    server.certificate_file,
                    server.certificate_key_file,
                    server.certificate_key_password,
                )
            except (OSError, ssl.SSLError) as exc:  # the message never holds the password
                raise BadGateway(
                    f"server {server.name!r}: cannot load CertificateFile "
                    f"{server.certificate_file!r} with CertificateKeyFile "
                    f"{server.certificate_key_file!r} ({exc.strerror or exc})"
                ) from None
            https_adapter = _ClientCertificateAdapter(context, max_retries=GET_RETRY)
        else:
            session.cert = (server.certificate_file, server.certificate_key_file)
    session.mount("https://", https_adapter)
    session.mount("http://", HTTPAdapter(max_retries=GET_RETRY))
    return session
