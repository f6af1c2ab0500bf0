"""Retrieve Capabilities, PS3.18 §8.9 (2025b): OPTIONS on the base URI.

Answers the Capabilities Description of PS3.18 Annex H (2025b), a WADL document
(`application/vnd.sun.wadl+xml`) built from the route table actually served (so a disabled
service is absent): one `resource` per path with its template parameters, one `method` per
HTTP method with its query parameters and representations. DELETE and the objectUID-only
WADO-URI form are marked as extensions. OPTIONS on any other path answers `Allow` (done by
`RouteTable.dispatch`); a CORS preflight on the base URI is answered as a preflight.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from chalicelib.server.http import Handler, RouteTable, Service, WebRequest, WebResponse

service = Service("capabilities")

WADL_MEDIA_TYPE = "application/vnd.sun.wadl+xml"
_WADL_NS = "http://wadl.dev.java.net/2009/02"

_IMAGES = ("image/jpeg", "image/png", "image/gif")
_RENDERED_PARAMS = (
    "accept",
    "window",
    "viewport",
    "quality",
    "annotation",
    "iccprofile",
    "charset",
)
_QIDO_PARAMS = ("limit", "offset", "fuzzymatching", "includefield")
_WADO_URI_PARAMS = (
    ("requestType", True),
    ("studyUID", False),
    ("seriesUID", False),
    ("objectUID", True),
    ("contentType", False),
    ("transferSyntax", False),
    ("frameNumber", False),
    ("rows", False),
    ("columns", False),
    ("region", False),
    ("windowCenter", False),
    ("windowWidth", False),
    ("imageQuality", False),
    ("anonymize", False),
    ("annotation", False),
    ("charset", False),
)


def _describe(path: str, method: str, wado_uri: bool) -> tuple[list[tuple[str, bool]], list[str]]:
    """(query parameters, response media types) of one method of one path."""
    if wado_uri:
        return list(_WADO_URI_PARAMS), ["application/dicom", *_IMAGES]
    if method == "DELETE":
        return [], []
    if path.endswith("/rendered"):
        return [(p, False) for p in _RENDERED_PARAMS], list(_IMAGES)
    if path.endswith("/thumbnail"):
        return [("accept", False), ("viewport", False)], list(_IMAGES)
    if path.endswith("/metadata"):
        return [], ["application/dicom+json", 'multipart/related; type="application/dicom+xml"']
    if method == "POST":
        return [], ["application/dicom+json", "application/dicom+xml"]
    last = path.rsplit("/", 1)[-1]
    if last in ("studies", "series", "instances"):
        return [(p, False) for p in _QIDO_PARAMS], ["application/dicom+json"]
    if "/bulk" in path or "/frames/" in path:
        return [], ['multipart/related; type="application/octet-stream"']
    return [], ['multipart/related; type="application/dicom"']


def _method_xml(name: str, handler: Handler, path: str, wado_uri: bool) -> list[str]:
    params, representations = _describe(path, name, wado_uri)
    doc = (handler.__doc__ or "").strip().split("\n")[0]
    if name == "DELETE":
        doc = "Extension: PS3.18 defines no delete transaction (DicomWeb.EnableDelete)."
    elif wado_uri:
        doc = "PS3.18 §9. Extension: objectUID alone is accepted (studyUID, seriesUID optional)."
    lines = [f"      <method name={quoteattr(name)} id={quoteattr(handler.__name__)}>"]
    if doc:
        lines.append(f"        <doc>{escape(doc)}</doc>")
    if params:
        lines.append("        <request>")
        lines += [
            f'          <param name={quoteattr(p)} style="query" type="xsd:string"'
            f' required="{str(required).lower()}"/>'
            for p, required in params
        ]
        lines.append("        </request>")
    status = "204" if name == "DELETE" else "200"
    lines.append(f'        <response status="{status}">')
    lines += [f"          <representation mediaType={quoteattr(m)}/>" for m in representations]
    lines.append("        </response>")
    lines.append("      </method>")
    return lines


def _resources_xml(table: RouteTable, base: str, prefix: str, wado_uri: bool) -> list[str]:
    lines = [f"  <resources base={quoteattr(base + '/')}>"]
    for path in sorted(p for p in table.routes if p == prefix or p.startswith(prefix + "/")):
        relative = path[len(prefix) :].lstrip("/")
        methods = sorted(m for m in table.routes[path].items() if m[0] != "OPTIONS")
        if not methods:
            continue
        lines.append(f"    <resource path={quoteattr(relative)}>")
        lines += [
            f'      <param name={quoteattr(name)} style="template" type="xsd:string"'
            ' required="true"/>'
            for name in re.findall(r"{(\w+)}", relative)
        ]
        for name, handler in methods:
            lines += _method_xml(name, handler, path, wado_uri)
        lines.append("    </resource>")
    lines.append("  </resources>")
    return lines


def capabilities_description(request: WebRequest, table: RouteTable) -> str:
    """The WADL document of PS3.18 Annex H (2025b) for the routes of `table`."""
    settings = request.context.settings
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<application xmlns="{_WADL_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
        '  <doc title="DICOMweb">STOW-RS, QIDO-RS, WADO-RS (retrieve, metadata, bulkdata,'
        " frames, rendered, thumbnail), WADO-URI; DELETE is an extension.</doc>",
    ]
    lines += _resources_xml(table, request.dicomweb_root, settings.root, wado_uri=False)
    if settings.enable_wado:
        base = request.base_url + settings.wado_root
        lines += _resources_xml(table, base, settings.wado_root, wado_uri=True)
    lines.append("</application>")
    return "\n".join(lines) + "\n"


@service.route("/", "OPTIONS", scope="read")
def retrieve_capabilities(request: WebRequest) -> WebResponse:
    """Retrieve Capabilities Transaction, PS3.18 §8.9 (2025b)."""
    from chalicelib.server.api import build_route_table  # the table this app serves

    table = build_route_table(request.context.settings)
    body = capabilities_description(request, table).encode("utf-8")
    allow = ", ".join(table.allowed(request.context.settings.root))
    return WebResponse(200, body, {"Allow": allow}, WADL_MEDIA_TYPE)
