"""Outgoing HTTP to remote DICOMweb servers: the URL guard and the error of a failed call.

`remote_url` is the SSRF guard: the path a caller gives (`Uri`) stays under the server's URL,
so no call ever reaches another host or a path above the server's DICOMweb root. The sessions
that make the calls are in `client/session.py` (imported when a call is made: `requests` is
not loaded at a Lambda cold start).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from chalicelib.client.registry import RemoteServer
from chalicelib.errors import BadRequest

READ_SIZE = 256 * 1024
"""Bytes read from a remote's streamed answer at a time."""


class RemoteError(Exception):
    """A remote call failed: refused, timed out, answered 4xx/5xx or something unreadable.

    `transient` says whether trying again later may succeed (connection errors, timeouts,
    429 and 5xx), which job runners retry with backoff; the others fail the job at once.
    """

    def __init__(self, message: str, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = transient


def remote_url(server: RemoteServer, uri: str, arguments: dict[str, Any] | None = None) -> str:
    """The absolute URL of `uri` under the server's URL, with `arguments` URL-encoded.

    Raise BadRequest when `uri` is missing or empty, has a query (use Arguments), is absolute,
    or has an empty, `.` or `..` segment (also percent-encoded): such a path could leave the
    server's root.
    """
    if not isinstance(uri, str) or not uri.strip("/"):
        raise BadRequest(
            f'Uri must be a path under the server\'s URL, e.g. "/studies", not {uri!r}'
        )
    if "?" in uri or "#" in uri:
        raise BadRequest(
            f"Uri {uri!r} has a query or fragment: give the query parameters in Arguments "
            f"(explicit '?' is not allowed)"
        )
    if "://" in uri or uri.startswith("//") or "\\" in uri:
        raise BadRequest(f"Uri {uri!r} must be a path under the server's URL, not an absolute URL")
    path = uri.lstrip("/")
    segments = unquote(path).split("/")
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        raise BadRequest(
            f"Uri {uri!r} has an empty, '.' or '..' segment: it must stay under the server's URL"
        )
    url = server.url + path
    base, target = urlsplit(server.url), urlsplit(url)
    if (target.scheme, target.netloc) != (base.scheme, base.netloc) or not target.path.startswith(
        base.path
    ):
        raise BadRequest(f"Uri {uri!r} leaves the server's URL {server.url}")
    if arguments:
        if not isinstance(arguments, dict):
            raise BadRequest("Arguments must be an object of query parameter names to values")
        # `,` stays as it is: Orthanc 1.10 answers 400 to `viewport=64%2C64` (and would to
        # comma-separated `window` or UID lists); spaces as %20, which every server decodes.
        query = {str(k): str(v) for k, v in arguments.items()}
        url += "?" + urlencode(query, safe=",", quote_via=quote)
    return url
