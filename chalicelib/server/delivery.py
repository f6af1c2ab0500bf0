"""Answers too large for Lambda: written to S3 and answered with `303 See Other`.

A synchronous Lambda answer tops out near 6 MB including base64, so on a backend whose
BlobStore can presign, an answer above `InlineLimit` goes to a `tmp/` key (expired by the
bucket's lifecycle rule) and the client follows the redirect. Where the store cannot presign
(the local backend), answers are always inline.
"""

from __future__ import annotations

import uuid

from chalicelib.server.http import WebRequest, WebResponse

TMP_PREFIX = "tmp/"
_EXPIRES_IN = 900


def deliver(request: WebRequest, response: WebResponse) -> WebResponse:
    ctx = request.context
    limit = ctx.settings.inline_limit
    if not limit or len(response.body) <= limit:
        return response
    key = f"{TMP_PREFIX}{uuid.uuid4().hex}"
    url = ctx.blobs.presigned_url(key, _EXPIRES_IN)
    if url is None:
        return response
    ctx.blobs.put(key, response.body, response.content_type)
    return WebResponse(303, b"", {"Location": url}, "text/plain")
