"""The DICOMweb client web app: the static files of `chalicelib/web/`, served by this app.

Served at `{DicomWeb.Root}/app/client/{file}` (the path of the Orthanc plugin's app), one path
segment per file because Chalice has no catch-all route; `{DicomWeb.Root}/app/client` redirects
to `index.html`. The app talks to the public client API only (`servers`, `jobs`, QIDO-RS and
rendered routes), addressed relative to its own URL, so the same files work behind an API
Gateway stage prefix.

Settings reach the page through `<meta>` elements of `index.html`, filled in here when the
page is served: the viewer URL template (`DicomWeb.ViewerUrlTemplate`), whether server
definitions persist (`DicomWeb.ServersInDatabase`), and where to sign in
(`DicomWeb.WebAppOidcAuthority`, `WebAppOidcClientId`, `WebAppOidcScopes`: the page's
`signin.js` then runs the OIDC authorization code flow with PKCE and sends the access token).
No public DICOMweb or client route carries them, and the page is read anyway, so they need no
route of their own.

The files carry no patient data and must load before a browser can sign in: their routes are
`public` (no credentials, no API Gateway authorizer; `http.SCOPES`).

Every file answers with an `ETag` (a digest of its bytes) and `Cache-Control: no-cache`: the
names carry no version, so a browser revalidates each use (`If-None-Match` → 304) and a new
deployment takes effect at once.
"""

from __future__ import annotations

import functools
import hashlib
import html
import urllib.parse
from pathlib import Path

from chalicelib.config import SCOPES, Settings
from chalicelib.errors import NotFound
from chalicelib.server.http import Service, WebRequest, WebResponse, not_modified

service = Service("web-app")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'; form-action 'self'"
)
"""The page loads its own modules and styles only; previews are `blob:` URLs."""
SIGN_IN_CONNECT_SRC = "connect-src 'self' https: {authority}"
"""With sign-in, the page also fetches the provider's discovery document and token endpoint,
which may be on another origin than the issuer (Cognito's sign-in domain): any https origin,
and the issuer's own origin (http on a loopback test provider)."""
_META = {
    "{{ViewerUrlTemplate}}": lambda s: s.viewer_url_template,
    "{{ServersInDatabase}}": lambda s: "true" if s.servers_in_database else "false",
    "{{OidcAuthority}}": lambda s: s.webapp_oidc_authority,
    "{{OidcClientId}}": lambda s: s.webapp_oidc_client_id,
    "{{OidcScopes}}": lambda s: (
        s.webapp_oidc_scopes or " ".join(["openid", *(s.scope_prefix + scope for scope in SCOPES)])
    ),
}


@functools.cache
def _read(name: str) -> bytes:
    """The bytes of one file of the app (read once per process)."""
    return (WEB_DIR / name).read_bytes()


def _files() -> frozenset[str]:
    return frozenset(p.name for p in WEB_DIR.iterdir() if p.suffix in CONTENT_TYPES)


@service.route("/app/client", "GET", scope="public")
def open_app(request: WebRequest) -> WebResponse:
    """The app's address without a file name: a redirect to its page."""
    return WebResponse(302, headers={"Location": request.dicomweb_root + "/app/client/index.html"})


@service.route("/app/client/{file}", "GET", scope="public")
def app_file(request: WebRequest, file: str) -> WebResponse:
    """One file of the web app with its content type, an ETag and `Cache-Control: no-cache`."""
    if file not in _files():
        raise NotFound(f"the web app has no file {file!r}; open index.html")
    body = _read(file)
    headers = {"Cache-Control": "no-cache"}
    if file == "index.html":
        body = _fill_page(body, request)
        headers["Content-Security-Policy"] = _content_security_policy(request.context.settings)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers["ETag"] = etag
    if not_modified(request, etag):
        return WebResponse(304, b"", headers)
    return WebResponse(200, body, headers, CONTENT_TYPES[Path(file).suffix])


def _fill_page(page: bytes, request: WebRequest) -> bytes:
    """index.html with the settings the app reads from its `<meta>` elements."""
    settings = request.context.settings
    text = page.decode("utf-8")
    for marker, value in _META.items():
        text = text.replace(marker, html.escape(value(settings), quote=True))
    return text.encode("utf-8")


def _content_security_policy(settings: Settings) -> str:
    authority = urllib.parse.urlsplit(settings.webapp_oidc_authority)
    if not authority.netloc:
        return CONTENT_SECURITY_POLICY
    origin = f"{authority.scheme}://{authority.netloc}"
    return f"{CONTENT_SECURITY_POLICY}; {SIGN_IN_CONNECT_SRC.format(authority=origin)}"


__all__ = ["service"]
