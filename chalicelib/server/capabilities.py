"""Retrieve Capabilities, PS3.18 §8.9 (2025b): OPTIONS on the base URI.

Answers the Capabilities Description of PS3.18 Annex H (2025b), a WADL document
(`application/vnd.sun.wadl+xml`) built from the route table actually served (so a disabled
service is absent): one `resource` per path with its template parameters, one `method` per
HTTP method with its query parameters and representations. DELETE and the objectUID-only
WADO-URI form are marked as extensions. OPTIONS on any other path answers `Allow` (done by
`RouteTable.dispatch`); a CORS preflight on the base URI is answered as a preflight.
"""

from __future__ import annotations

import functools
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
_ACCEPT = ("accept", False)
"""The Accept Query Parameter, PS3.18 §8.3.3.1 (2025b), read on every DICOMweb resource."""
_QIDO_PARAMS = ("accept", "limit", "offset", "fuzzymatching", "includefield")
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
        return [_ACCEPT, ("viewport", False)], list(_IMAGES)
    if path.endswith("/metadata"):
        return [_ACCEPT], [
            "application/dicom+json",
            'multipart/related; type="application/dicom+xml"',
        ]
    if method == "POST":
        return [], ["application/dicom+json", "application/dicom+xml"]
    last = path.rsplit("/", 1)[-1]
    if last in ("studies", "series", "instances"):
        return [(p, False) for p in _QIDO_PARAMS], ["application/dicom+json"]
    if "/bulk" in path or "/frames/" in path:
        return [_ACCEPT], ['multipart/related; type="application/octet-stream"']
    return [_ACCEPT], ['multipart/related; type="application/dicom"']


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


@functools.lru_cache(maxsize=16)
def capabilities_description(
    table: RouteTable, root: str, dicomweb_base: str, wado_root: str, wado_base: str | None
) -> bytes:
    """The WADL document of PS3.18 Annex H (2025b) for the routes of `table`, built once per
    route table and base URL: `root` and `wado_root` are the route prefixes, the bases the
    absolute URLs the client sees (`wado_base` None when WADO-URI is off)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<application xmlns="{_WADL_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
        '  <doc title="DICOMweb">STOW-RS, QIDO-RS, WADO-RS (retrieve, metadata, bulkdata,'
        " frames, rendered, thumbnail), WADO-URI; DELETE is an extension.</doc>",
    ]
    lines += _resources_xml(table, dicomweb_base, root, wado_uri=False)
    if wado_base is not None:
        lines += _resources_xml(table, wado_base, wado_root, wado_uri=True)
    lines.append("</application>")
    return ("\n".join(lines) + "\n").encode("utf-8")


@service.route("/", "OPTIONS", scope="read")
def retrieve_capabilities(request: WebRequest) -> WebResponse:
    """Retrieve Capabilities Transaction, PS3.18 §8.9 (2025b)."""
    settings = request.context.settings
    table = request.route_table
    wado_base = request.base_url + settings.wado_root if settings.enable_wado else None
    body = capabilities_description(
        table, settings.root, request.dicomweb_root, settings.wado_root, wado_base
    )
    allow = ", ".join(table.allowed(settings.root))
    return WebResponse(200, body, {"Allow": allow}, WADL_MEDIA_TYPE)
