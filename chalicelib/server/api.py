"""The Chalice application: every service's routes, registered once per path.

`create_app` is what `app.py` calls; tests call it with their own context factory (inject,
don't patch). Each path is registered with all methods on one view that hands the request to
`RouteTable.dispatch`, so 404/405/OPTIONS and errors are answered the same way everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
from chalicelib.server.http import (
    ALL_METHODS,
    RouteTable,
    WebRequest,
    WebResponse,
    cors_headers,
    error_response,
)
from chalicelib.server.urls import api_base_url, stage_prefix

log = logging.getLogger(__name__)


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


def to_web_request(request: Request, ctx: Context) -> WebRequest:
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
    )


def to_chalice_response(response: WebResponse) -> Response:
    headers = dict(response.headers)
    if response.content_type:
        headers["Content-Type"] = response.content_type
    elif response.body:
        headers["Content-Type"] = "application/octet-stream"
    return Response(body=response.body, status_code=response.status, headers=headers)


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


def create_app(
    context_factory: Callable[[], Context] = default_context,
    app_name: str = "dicomweb",
    settings: Settings | None = None,
) -> Chalice:
    """The app on the contexts `context_factory` gives; `settings` (default: the context's)
    decide the routes, so that `app.py` builds no context, hence no AWS client, at import."""
    app = Chalice(app_name=app_name)
    # Chalice does not treat image/* as a wildcard: every answer is binary (DESIGN.md).
    app.api.binary_types = ["*/*"]
    settings = settings or context_factory().settings
    table = build_route_table(settings)

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
            ctx = context_factory()
            web_request = to_web_request(app.current_request, ctx)
            return to_chalice_response(table.dispatch(path, web_request, params))

        name = "route" + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
        if authorizer is None:
            app.route(path, methods=ALL_METHODS, name=name, content_types=["*/*"])(view)
            return
        # One view per scope, so that API Gateway checks a Cognito token's scope itself; the
        # OPTIONS view has no authorizer: a CORS preflight carries no credentials.
        by_scope: dict[str, list[str]] = {}
        for method in ALL_METHODS:
            if method != "OPTIONS":
                scope = table.scopes[path].get("GET" if method == "HEAD" else method, "")
                by_scope.setdefault(scope, []).append(method)
        for scope, methods in by_scope.items():
            scoped = authorizer
            if scope and isinstance(authorizer, CognitoUserPoolAuthorizer):
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
