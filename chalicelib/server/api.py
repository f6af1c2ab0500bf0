"""The Chalice application: every service's routes, registered once per path.

`create_app` is what `app.py` calls; tests call it with their own context factory (inject,
don't patch). Each path is registered with all methods on one view that hands the request to
`RouteTable.dispatch`, so 404/405/OPTIONS and errors are answered the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from chalice import Chalice, Response
from chalice.app import CaseInsensitiveMapping, Request

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
    services += [(root, m.service) for m in (metadata, frames, bulkdata, servers, jobs)]
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


def create_app(
    context_factory: Callable[[], Context] = default_context, app_name: str = "dicomweb"
) -> Chalice:
    app = Chalice(app_name=app_name)
    # Chalice does not treat image/* as a wildcard: every answer is binary (DESIGN.md).
    app.api.binary_types = ["*/*"]
    settings = context_factory().settings
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

    def register(path: str) -> None:
        def view(**params: str) -> Response:
            ctx = context_factory()
            web_request = to_web_request(app.current_request, ctx)
            return to_chalice_response(table.dispatch(path, web_request, params))

        name = "route" + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
        app.route(path, methods=ALL_METHODS, name=name, content_types=["*/*"])(view)

    for path in table.routes:
        register(path)
    app.route_table = table  # the local server answers unknown paths with it
    return app
