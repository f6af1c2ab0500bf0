"""The Chalice application: every service's routes, registered once per path.

`create_app` is what `app.py` calls; tests call it with their own context factory (inject,
don't patch). Each path is registered with all methods on one view that hands the request to
`RouteTable.dispatch`, so 404/405/OPTIONS and errors are answered the same way everywhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from chalice import (
    AuthResponse,
    Chalice,
    CognitoUserPoolAuthorizer,
    IAMAuthorizer,
    Response,
)
from chalice.app import Authorizer, AuthRequest, CaseInsensitiveMapping, Request

from chalicelib.config import Settings
from chalicelib.context import Context, default_context
from chalicelib.errors import NotAcceptable
from chalicelib.server import (
    bulkdata,
    capabilities,
    delete,
    frames,
    jobs,
    metadata,
    qido,
    rendered,
    servers,
    stow,
    uploads,
    wado_rs,
    wado_uri,
    webapp,
)
from chalicelib.server.delivery import StreamedBody
from chalicelib.server.http import (
    ALL_METHODS,
    PUBLIC,
    SECURITY_HEADERS,
    RouteTable,
    WebRequest,
    WebResponse,
    cors_headers,
    error_response,
    json_response,
)
from chalicelib.server.urls import api_base_url, stage_prefix

log = logging.getLogger(__name__)
access_log = logging.getLogger("chalicelib.access")
"""One JSON line per request (method, path, status, duration, bytes, request id)."""
access_log.setLevel(logging.INFO)


def build_route_table(settings: Settings) -> RouteTable:
    root = settings.root
    services = [
        (root, stow.service),
        (root, wado_rs.service),
        (root, rendered.service),
        (root, capabilities.service),
        (root, qido.service),
        (root, webapp.service),
    ]
    services += [(root, m.service) for m in (metadata, frames, bulkdata, servers, jobs, uploads)]
    if settings.enable_delete:
        services.append((root, delete.service))
    if settings.enable_wado:
        services.append((settings.wado_root, wado_uri.service))
    return RouteTable(services)


def to_web_request(request: Request, ctx: Context, streams: bool = False) -> WebRequest:
    headers = {k.lower(): v for k, v in request.headers.items()}
    query: list[tuple[str, str]] = []
    if request.query_params:
        for name in request.query_params:
            query += [(name, value) for value in request.query_params.getlist(name)]
    event = request.to_original_event()
    request_context = event.get("requestContext") or {}
    base = api_base_url(
        ctx.settings,
        headers,
        stage_prefix(event),
        peer=(request_context.get("identity") or {}).get("sourceIp") or "",
        api_gateway="stage" in request_context,
    )
    body = request.raw_body if request.method in ("POST", "PUT", "PATCH") else b""
    return WebRequest(
        method=request.method,
        path=(event.get("requestContext") or {}).get("path") or request.path,
        headers=headers,
        query=query,
        body=body if isinstance(body, bytes) else body.encode("utf-8"),
        base_url=base,
        dicomweb_root=base + ctx.settings.root,
        context=ctx,
        request_context=request_context,
        streams=streams,
    )


class StreamedResponse(Response):
    """A Response whose body is a `StreamedBody`, passed as it is in the response dict to
    the local server, which writes it (Chalice would serialize any body but str and bytes)."""

    def to_dict(self, binary_types: list[str] | None = None) -> dict[str, Any]:
        body, self.body = self.body, b""
        response = super().to_dict()
        response["body"] = self.body = body
        return response


def to_chalice_response(response: WebResponse) -> Response:
    headers = dict(response.headers)
    if response.content_type:
        headers["Content-Type"] = response.content_type
    elif response.body:
        headers["Content-Type"] = "application/octet-stream"
    kind = StreamedResponse if isinstance(response.body, StreamedBody) else Response
    return kind(body=response.body, status_code=response.status, headers=headers)


def api_gateway_authorizer(app: Chalice, settings: Settings) -> Authorizer | None:
    """The API Gateway authorizer of every route but OPTIONS (`DicomWeb.Authorizer`): API
    Gateway refuses a call it does not verify before the Lambda runs; the app then checks the
    route's scope (`auth.py`)."""
    if settings.authorizer == "iam":
        return IAMAuthorizer()
    if settings.authorizer == "cognito":
        return CognitoUserPoolAuthorizer("cognito", [settings.cognito_user_pool_arn])
    if settings.authorizer != "oidc":
        return None
    from chalicelib.server.oidc import InvalidToken, TokenVerifier

    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)

    @app.authorizer(name="oidc", ttl_seconds=300)
    def oidc(auth_request: AuthRequest) -> AuthResponse:
        """A token authorizer: Lambda authorizer input/output, API Gateway Developer Guide."""
        scheme, _, token = (auth_request.token or "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken("the Authorization header is not a Bearer token")
            claims = verifier.verify(token.strip())
        except InvalidToken as exc:
            log.info("token refused: %s", exc)
            raise Exception("Unauthorized") from None  # API Gateway answers 401
        scope = claims.get("scope", claims.get("scp", ""))
        scope = " ".join(scope) if isinstance(scope, list) else str(scope)
        return AuthResponse(["*"], str(claims.get("sub", "")), {"scope": scope})

    return oidc


class ThreadSafeChalice(Chalice):
    """Chalice with `current_request` per thread. Chalice keeps it on the app object; the
    local server answers requests in threads, so concurrent requests read each other's
    (issue 11's DELETE race: a GET dispatched as a DELETE answered 405, a STOW 204). On
    Lambda one request runs at a time and nothing changes."""

    @property  # type: ignore[override]
    def current_request(self) -> Request | None:
        return getattr(self._requests(), "request", None)

    @current_request.setter
    def current_request(self, request: Request | None) -> None:
        self._requests().request = request

    def _requests(self) -> threading.local:
        return self.__dict__.setdefault("_thread_requests", threading.local())


def create_app(
    context_factory: Callable[[], Context] = default_context,
    app_name: str = "dicomweb",
    settings: Settings | None = None,
    streams: bool = False,
) -> Chalice:
    """The app on the contexts `context_factory` gives; `settings` (default: the context's)
    decide the routes, so that `app.py` builds no context, hence no AWS client, at import.
    `streams`: the server writes streamed bodies itself (`localserver`, `WebRequest.streams`)."""
    app = ThreadSafeChalice(app_name=app_name)
    # Chalice does not treat image/* as a wildcard: every answer is binary (DESIGN.md).
    app.api.binary_types = ["*/*"]
    settings = settings or context_factory().settings
    table = build_route_table(settings)

    def internal_error(request: Request) -> Response:
        response = json_response(
            {"Status": 500, "Message": "internal error; the server log has the details"}, 500
        )
        origin = request.headers.get("origin", "")
        response.headers.update(cors_headers(origin, settings.cors_allowed_origins))
        response.headers.update(SECURITY_HEADERS)
        return to_chalice_response(response)

    @app.middleware("http")
    def answer_every_request(request: Request, get_response: Callable) -> Response:
        """The outermost layer: an error anywhere (middleware, request conversion, context)
        gets our JSON 500 with CORS headers; every answer carries `X-Request-Id` (API
        Gateway's request id on AWS, a new one locally), a 5xx body carries it as
        `RequestId` so that a user can quote it, and one JSON log line records the call."""
        started = time.perf_counter()
        request_id = (request.context or {}).get("requestId") or uuid.uuid4().hex
        try:
            response = get_response(request)
        except Exception:
            log.exception("unhandled error on %s %s [%s]", request.method, request.path, request_id)
            response = internal_error(request)
        if response.status_code >= 500:
            response.body = _with_request_id(response.body, request_id)
        response.headers["X-Request-Id"] = request_id
        body = response.body
        size = body.length if isinstance(body, StreamedBody) else None
        access_log.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": request.method,
                    "path": (request.context or {}).get("path") or request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "bytes": size or (len(body) if isinstance(body, bytes | str) else 0),
                }
            )
        )
        return response

    @app.middleware("http")
    def accept_missing_is_any(request: Request, get_response: Callable) -> Response:
        """A request without Accept is treated as `*/*`: a documented deviation from
        PS3.18 §8.7.5 (2025b), which says 406, for clients that send none;
        `DicomWeb.StrictAccept` restores 406 for retrievals."""
        if "accept" not in request.headers:
            asked = "accept" in (request.query_params or {})  # PS3.18 §8.3.3.1
            if settings.strict_accept and request.method == "GET" and not asked:
                response = error_response(
                    NotAcceptable("the request has no Accept header (DicomWeb.StrictAccept)")
                )
                origin = request.headers.get("origin", "")
                response.headers.update(cors_headers(origin, settings.cors_allowed_origins))
                return to_chalice_response(response)
            request.headers = CaseInsensitiveMapping({**request.headers, "accept": "*/*"})
        return get_response(request)

    authorizer = api_gateway_authorizer(app, settings)

    def register(path: str) -> None:
        def view(**params: str) -> Response:
            try:
                web_request = to_web_request(app.current_request, context_factory(), streams)
            except Exception:  # Chalice would answer its own 500, without JSON or CORS
                log.exception("cannot build the request for %s", app.current_request.path)
                return internal_error(app.current_request)
            return to_chalice_response(table.dispatch(path, web_request, params))

        name = "route" + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
        if authorizer is None:
            app.route(path, methods=ALL_METHODS, name=name, content_types=["*/*"])(view)
            return
        # One view per scope, so that API Gateway checks a Cognito token's scope itself; the
        # OPTIONS view and `public` views have no authorizer: a CORS preflight carries no
        # credentials, and a browser's navigation to the web app cannot send a token.
        by_scope: dict[str, list[str]] = {}
        for method in ALL_METHODS:
            if method != "OPTIONS":
                scope = table.scopes[path].get("GET" if method == "HEAD" else method, "")
                by_scope.setdefault(scope, []).append(method)
        for scope, methods in by_scope.items():
            scoped: Authorizer | None = None if scope == PUBLIC else authorizer
            if scope and isinstance(scoped, CognitoUserPoolAuthorizer):
                scoped = authorizer.with_scopes([settings.scope_prefix + scope])
            app.route(
                path,
                methods=methods,
                name=f"{name}_{scope or 'any'}",
                content_types=["*/*"],
                authorizer=scoped,
            )(view)
        app.route(path, methods=["OPTIONS"], name=f"{name}_options", content_types=["*/*"])(view)

    for path in table.routes:
        register(path)
    app.route_table = table  # the local server answers unknown paths with it
    return app


def _with_request_id(body: bytes | str, request_id: str) -> bytes | str:
    """A JSON error body with `RequestId` added; any other body as it is."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return body
    if not isinstance(document, dict):
        return body
    document["RequestId"] = request_id
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
