"""The HTTP layer shared by every service: request wrapper, responses, route table, errors.

Handlers take a `WebRequest` and return a `WebResponse`; they raise `DicomWebError`s, which
`dispatch` turns into a JSON error answer. Every path is registered once on the Chalice app
with all methods, so that a known path with an unsupported method gets our 405 with `Allow`
(not Chalice's), and OPTIONS answers `Allow` too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from chalicelib.config import SCOPES as SETTINGS_SCOPES
from chalicelib.errors import (
    DicomWebError,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
)
from chalicelib.server.auth import ANONYMOUS, Principal, authenticate, require_scope

if TYPE_CHECKING:
    from chalicelib.server.delivery import StreamedBody

log = logging.getLogger(__name__)

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]

# CORS (Fetch standard, "CORS protocol"): DICOMweb viewers such as OHIF send Authorization,
# Range and If-None-Match, and read Warning, ETag and Content-Location.
CORS_ALLOW_HEADERS = "Accept, Authorization, Content-Type, Range, If-None-Match, If-Modified-Since"
CORS_EXPOSE_HEADERS = (
    "Warning, ETag, Content-Location, Location, Content-Length, Allow, WWW-Authenticate"
)
CORS_MAX_AGE = "600"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}
"""On every answer: a browser never sniffs a JSON error or a DICOM body into HTML."""

WARNING_MAX_VALUES = 20
"""At most this many `Warning` values, then one that counts the rest: ~700 refused STOW
parts would make a header line over 64 KB, more than `requests` (http.client) reads."""
WARNING_MAX_TEXT = 300


@dataclass
class WebRequest:
    method: str
    path: str
    """The request path below the API root (e.g. `/dicom-web/studies/1.2`)."""
    headers: dict[str, str]
    """Names lower-cased."""
    query: list[tuple[str, str]]
    """Decoded query parameters in arrival order, repeated names kept."""
    body: bytes
    base_url: str
    """Absolute URL of the API root as the client sees it (scheme, host, stage prefix)."""
    dicomweb_root: str = ""
    """Absolute URL of the DICOMweb root (base_url + `DicomWeb.Root`), for links."""
    context: Any = None
    """The `chalicelib.context.Context` (ports and settings) serving this request."""
    route_table: RouteTable | None = None
    """The table of the app serving this request (set by `RouteTable.dispatch`)."""
    request_context: dict[str, Any] = field(default_factory=dict)
    """API Gateway's `requestContext` (authorizer verdict, caller identity); {} locally."""
    principal: Principal = ANONYMOUS
    """The authenticated caller, set by `RouteTable.dispatch` before the handler runs."""
    streams: bool = False
    """The transport writes a `delivery.StreamedBody` piece by piece (the local
    server); elsewhere (Lambda, Chalice's test client) every body is bytes."""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def query_values(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]

    @property
    def accept(self) -> str:
        """The acceptable media types: the `accept` query parameter when there is one, which
        replaces the Accept header (Accept Query Parameter, PS3.18 §8.3.3.1, 2025b)."""
        values = self.query_values("accept")
        return ", ".join(values) if values else self.header("accept")


@dataclass
class WebResponse:
    status: int = 200
    body: bytes | StreamedBody = b""
    """A `StreamedBody` only where the request `streams` (`delivery.deliver`)."""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""


def json_response(
    document: Any,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> WebResponse:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return WebResponse(status, body, dict(headers or {}), content_type)


def header_text(text: str) -> str:
    """`text` as printable ASCII, others escaped (`\\xe9`): header values are sent as
    Latin-1, and a NUL or a character beyond it closed the connection with no answer."""
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)


def warning_header(host: str, texts: Sequence[str]) -> dict[str, str]:
    """A `Warning` header (RFC 9111 §5.5 as PS3.18 §8.3.4.5 uses it, 2025b): one `299` value
    per text, as quoted-strings, printable ASCII, each text and their number capped."""
    if not texts:
        return {}
    agent = header_text(host).replace(" ", "") or "-"
    shown = list(texts[:WARNING_MAX_VALUES])
    if len(texts) > WARNING_MAX_VALUES:
        shown.append(f"and {len(texts) - WARNING_MAX_VALUES} more")
    values = []
    for text in shown:
        text = header_text(text)
        if len(text) > WARNING_MAX_TEXT:
            text = text[: WARNING_MAX_TEXT - 3] + "..."
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        values.append(f'299 {agent} "{quoted}"')
    return {"Warning": ", ".join(values)}


def head_of(response: WebResponse) -> None:
    """The GET answer made a HEAD answer: its headers, with the Content-Length of the body it
    drops where that is known without building the body (a streamed body with a part still
    to build has none), and no body (RFC 9110 §9.3.2)."""
    body = response.body
    length = len(body) if isinstance(body, bytes) else body.length
    if length is not None:
        response.headers["Content-Length"] = str(length)
    response.body = b""


def error_response(error: DicomWebError) -> WebResponse:
    document = {"Status": error.status, "Message": error.message}
    return json_response(document, error.status, headers=error.headers)


def cors_headers(origin: str, allowed_origins: Iterable[str]) -> dict[str, str]:
    """The CORS headers of an answer to `origin`; none when the origin is not allowed
    (`DicomWeb.CorsAllowedOrigins`: exact origins, or `*` for any). Only a listed origin may
    send credentials (`Access-Control-Allow-Credentials`); `*` never (Fetch standard §3.2.5)."""
    allowed = tuple(allowed_origins)
    if not origin or not allowed:
        return {}
    if "*" in allowed:
        value = "*"
    elif origin in allowed:
        value = origin
    else:
        return {}
    headers = {
        "Access-Control-Allow-Origin": value,
        "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
    }
    if value != "*":
        headers["Vary"] = "Origin"
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def request_cors_headers(request: WebRequest) -> dict[str, str]:
    settings = getattr(request.context, "settings", None)
    return cors_headers(request.header("origin"), getattr(settings, "cors_allowed_origins", ()))


FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
"""The Content-Types a browser sends cross-origin without a CORS preflight (Fetch standard,
"CORS-safelisted request-header")."""


def refuse_cross_origin_form(request: WebRequest) -> None:
    """Raise Forbidden for a POST that a page of another origin made a browser send without
    a CORS preflight: a form's Content-Type, or none, and an `Origin` that is neither this
    server's nor listed in `DicomWeb.CorsAllowedOrigins`.

    Such a request carries the browser's Basic credentials of this server (or needs none on
    a loopback server without authentication): a page anywhere could otherwise make a
    signed-in user's browser POST `servers/{name}/delete`, `/stow` or `jobs/{id}/cancel`
    (cross-site request forgery). Every other cross-origin call has a preflight first, which
    CorsAllowedOrigins answers; clients that are not browsers send no Origin."""
    origin = request.header("origin")
    if request.method != "POST" or not origin:
        return
    content_type = request.header("content-type").split(";")[0].strip().lower()
    if content_type and content_type not in FORM_CONTENT_TYPES:
        return
    allowed = getattr(request.context.settings, "cors_allowed_origins", ())
    own = {request.header("host").lower(), urlsplit(request.base_url).netloc.lower()}
    if origin in allowed or urlsplit(origin).netloc.lower() in own - {""}:
        return
    raise Forbidden(
        f"a POST from the page of {origin!r} without a CORS preflight (Content-Type "
        f"{content_type or 'none'}) is refused: send it from this server's own pages, with "
        f"Content-Type application/json, or list the origin in DicomWeb.CorsAllowedOrigins"
    )


def not_modified(request: WebRequest, etag: str) -> bool:
    """`If-None-Match` names `etag` (or `*`): the answer is 304 (RFC 9110 §13.1.2)."""
    header = request.header("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


Handler = Callable[..., WebResponse]

Scope = Literal["read", "write", "admin", "public"]
PUBLIC: Scope = "public"
SCOPES: tuple[Scope, ...] = (*SETTINGS_SCOPES, PUBLIC)  # type: ignore[assignment]
"""Who may call a route: `read` (search and retrieve), `write` (store), `admin` (delete,
remote servers, proxies and jobs), or `public`: anyone, without credentials, on every
transport (no API Gateway authorizer) — only the web app's static files, which carry no
patient data and must load before a browser can sign in. Every route declares one; see
`RouteTable.scope`."""


class Service:
    """The routes of one DICOMweb service module (a lighter Chalice Blueprint)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: dict[str, dict[str, Handler]] = {}
        self.scopes: dict[str, dict[str, Scope]] = {}

    def route(self, path: str, *methods: str, scope: Scope) -> Callable[[Handler], Handler]:
        if scope not in SCOPES:
            raise ValueError(f"{path}: scope must be one of {SCOPES}, not {scope!r}")

        def register(handler: Handler) -> Handler:
            for method in methods:
                self.routes.setdefault(path, {})[method] = handler
                self.scopes.setdefault(path, {})[method] = scope
            return handler

        return register


class RouteTable:
    """Every path of the API with its handlers per method."""

    def __init__(self, services: Iterable[tuple[str, Service]]) -> None:
        self.routes: dict[str, dict[str, Handler]] = {}
        self.scopes: dict[str, dict[str, Scope]] = {}
        for prefix, service in services:
            for path, handlers in service.routes.items():
                full = (prefix + path) if path != "/" else (prefix or "/")
                existing = self.routes.setdefault(full, {})
                clash = set(existing) & set(handlers)
                if clash:
                    raise ValueError(f"{full}: {sorted(clash)} registered twice")
                existing.update(handlers)
                self.scopes.setdefault(full, {}).update(service.scopes[path])

    def scope(self, path: str, method: str) -> Scope:
        """The scope a call of `method` on `path` needs (HEAD as GET)."""
        return self.scopes[path]["GET" if method == "HEAD" else method]

    def allowed(self, path: str) -> list[str]:
        methods = set(self.routes[path])
        if "GET" in methods:
            methods.add("HEAD")
        methods.add("OPTIONS")
        return [m for m in ALL_METHODS if m in methods]

    def dispatch(self, path: str, request: WebRequest, params: dict[str, str]) -> WebResponse:
        """Call the handler of `path` for the request's method; never raise.

        A CORS preflight and a `public` route are answered for anyone; every other call is
        authenticated (401) and needs the route's scope (403); all pass the request limits."""
        handlers = self.routes[path]
        method = request.method
        request.route_table = self
        cors = request_cors_headers(request)
        try:
            if not (method == "OPTIONS" and request.header("access-control-request-method")):
                self._admit(path, request)
            allow = ", ".join(self.allowed(path))
            if method == "OPTIONS" and request.header("access-control-request-method"):
                # A CORS preflight: answered here for every path, before any OPTIONS handler.
                response = WebResponse(204, headers={"Allow": allow})
                if cors:
                    response.headers |= {
                        "Access-Control-Allow-Methods": allow,
                        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                        "Access-Control-Max-Age": CORS_MAX_AGE,
                    }
            elif method == "OPTIONS" and "OPTIONS" not in handlers:
                response = WebResponse(204, headers={"Allow": allow})
            else:
                handler = handlers.get("GET" if method == "HEAD" else method)
                if handler is None:
                    raise MethodNotAllowed(
                        f"{method} is not supported on {request.path}; allowed: {allow}",
                        headers={"Allow": allow},
                    )
                response = handler(request, **params)
        except DicomWebError as error:
            response = error_response(error)
        except Exception:
            log.exception("unhandled error on %s %s", method, request.path)
            response = json_response(
                {"Status": 500, "Message": "internal error; the server log has the details"},
                500,
            )
        if method == "HEAD":
            head_of(response)
        response.headers.update(cors)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _admit(self, path: str, request: WebRequest) -> None:
        """Authenticate the caller (not on a `public` route), check the route's scope and the
        request's size limits."""
        settings = request.context.settings
        refuse_cross_origin_form(request)
        method = "GET" if request.method == "HEAD" else request.method
        scope = self.scopes[path].get(method)
        if scope != PUBLIC:
            request.principal = authenticate(settings, request.headers, request.request_context)
            require_scope(request.principal, scope, request.method, request.path)
        length = sum(len(k) + len(v) + 2 for k, v in request.query)
        if length > settings.max_query_string:
            raise UriTooLong(
                f"the query string has about {length} characters; the limit is "
                f"{settings.max_query_string} (DicomWeb.MaxQueryString)"
            )
        if len(request.body) > settings.max_request_body:
            raise PayloadTooLarge(
                f"the request body has {len(request.body)} bytes; the limit is "
                f"{settings.max_request_body} (DicomWeb.MaxRequestBody)"
            )
