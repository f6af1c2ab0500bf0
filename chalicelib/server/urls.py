"""The one builder of absolute URLs (RetrieveURL, BulkDataURI, Content-Location, redirects).

Order of precedence: `DicomWeb.PublicRoot`; `DicomWeb.Host` (+ `DicomWeb.Ssl`); the
`Forwarded` header (RFC 7239); `X-Forwarded-Proto` / `X-Forwarded-Host`; `Host`. On API
Gateway the stage prefix (`/api`) is kept: it is `requestContext.path` minus the event's
`path`.

Forwarding headers are anyone's to send: they are believed only from a peer listed in
`DicomWeb.TrustedProxies` (addresses or CIDR blocks). On API Gateway, `X-Forwarded-Proto` is
API Gateway's own and always believed; a `Forwarded` or `X-Forwarded-Host` header only from a
trusted `sourceIp` (e.g. a proxy in front of API Gateway).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from chalicelib.config import Settings

_FORWARDED_PAIR = re.compile(r'(?i)\b(proto|host)\s*=\s*("[^"]*"|[^;,\s]*)')


def _forwarded(value: str) -> dict[str, str]:
    """The proto and host of the first (client-side) element of a Forwarded header."""
    first = value.split(",")[0]
    return {k.lower(): v.strip('"') for k, v in _FORWARDED_PAIR.findall(first)}


def stage_prefix(event: Mapping[str, Any]) -> str:
    """`/api` when API Gateway serves the app under a stage path; '' locally."""
    context_path = (event.get("requestContext") or {}).get("path") or ""
    path = event.get("path") or ""
    if path and context_path.endswith(path) and context_path != path:
        return context_path[: -len(path)].rstrip("/")
    return ""


def is_trusted_proxy(settings: Settings, peer: str) -> bool:
    """`peer` (an IP address) is one of `DicomWeb.TrustedProxies`."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
    )


def api_base_url(
    settings: Settings,
    headers: Mapping[str, str],
    prefix: str = "",
    peer: str = "",
    api_gateway: bool = False,
) -> str:
    """Absolute URL of the API root (no trailing slash), without the DICOMweb root.

    With `PublicRoot` set, returns it minus the DICOMweb root so that callers can append the
    root uniformly. `peer`: the address the request came from; `api_gateway`: the request came
    through API Gateway (which sets `X-Forwarded-Proto` itself).
    """
    if settings.public_root:
        public = settings.public_root.rstrip("/")
        if public.endswith(settings.root):
            public = public[: -len(settings.root)]
        return public
    scheme = "https" if settings.ssl else "http"
    host = settings.host
    if not host:
        trusted = bool(peer) and is_trusted_proxy(settings, peer)
        forwarded = _forwarded(headers.get("forwarded", "")) if trusted else {}
        if forwarded.get("host"):
            host = forwarded["host"]
            scheme = forwarded.get("proto", scheme)
        elif trusted and headers.get("x-forwarded-host"):
            host = headers["x-forwarded-host"].split(",")[0].strip()
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        else:
            host = headers.get("host", "localhost")
            if trusted or api_gateway:
                scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
    return f"{scheme}://{host}{prefix}"
