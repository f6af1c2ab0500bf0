"""How an answer leaves: streamed part by part, inline, or through S3 with `303 See Other`.

A body of stored objects is a `StreamedBody`: a multipart answer (WADO-RS study, series and
instance retrieve, frames) is a `StreamedMultipart` (the parts' framing, `BlobRange`s of the
stored files, and parts built when their turn comes: a transcoded instance); one stored file
as it is (WADO-URI application/dicom) is a `StoredObject`. Where the transport writes bodies
itself (the local server: `WebRequest.streams`), it sends them piece by piece (`sendfile`
from the files), so that memory does not grow with the answer; elsewhere they are joined
into bytes here.

A synchronous Lambda answer tops out near 6 MB including base64, so on a backend whose
BlobStore can presign, an answer above `InlineLimit` goes to a `tmp/` key (expired by the
bucket's lifecycle rule) and the client follows the redirect. Where the store cannot presign
(the local backend), answers are always inline.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chalicelib.dicom.multipart import encode_multipart, multipart_pieces
from chalicelib.errors import NotAcceptable
from chalicelib.server.http import WebRequest, WebResponse, warning_header
from chalicelib.server.resources import parallel_map
from chalicelib.storage.ports import BlobStore

log = logging.getLogger(__name__)

TMP_PREFIX = "tmp/"
_EXPIRES_IN = 900


@dataclass(frozen=True)
class BlobRange:
    """`length` bytes of the stored object `key` from `start`, read while the answer is
    written."""

    key: str
    start: int
    length: int


Part = tuple[dict[str, str], bytes | BlobRange]
LazyPart = Callable[[], tuple[dict[str, str], bytes]]
"""A part built when its turn comes, its headers with it (a transcoded instance: its
transfer syntax is known once it is built)."""


class StreamedBody(ABC):
    """A body the transport writes piece by piece where it can (`pieces`), else joins
    (`to_bytes`)."""

    blobs: BlobStore
    """Where the pieces' `BlobRange`s are read from."""
    length: int | None
    """The size in bytes when it is known before the body is built."""

    @abstractmethod
    def pieces(self) -> Iterator[bytes | BlobRange]: ...

    @abstractmethod
    def to_bytes(self) -> bytes: ...


class StoredObject(StreamedBody):
    """A stored object's bytes as the whole body."""

    def __init__(self, blobs: BlobStore, stored: BlobRange) -> None:
        self.blobs = blobs
        self.stored = stored
        self.length = stored.length

    def pieces(self) -> Iterator[bytes | BlobRange]:
        yield self.stored

    def to_bytes(self) -> bytes:
        return self.blobs.get_range(self.stored.key, self.stored.start, self.stored.length)


class StreamedMultipart(StreamedBody):
    """A multipart/related body of stored objects, laid out by `multipart_pieces`.

    The first lazy part is built at once, before the answer starts: an error that every part
    would meet (a transfer syntax that cannot be produced) is then a 4xx answer, not an answer
    broken off after its status line. A lazy part other than the answer's first that cannot be
    built as asked (NotAcceptable: an instance or frame that cannot be converted) is left out
    and logged, its reason in `left_out`, which `deliver` sends as a `Warning: 299` when the
    headers are still to go (a streamed answer's are gone by then); the first part's is the
    answer's 406."""

    def __init__(self, blobs: BlobStore, parts: Sequence[Part | LazyPart], boundary: str) -> None:
        self.blobs = blobs
        self.parts: list[Part | LazyPart | None] = list(parts)
        self.boundary = boundary
        self.left_out: list[str] = []
        first_lazy = next((i for i, part in enumerate(self.parts) if callable(part)), None)
        if first_lazy is not None:
            self.parts[first_lazy] = self._build(self.parts[first_lazy], first_lazy == 0)  # type: ignore[arg-type]
        self.parts = [part for part in self.parts if part is not None]
        self.length = None  # from the stored objects' sizes, unless a part is lazy
        self.laid_out: list[bytes | BlobRange] | None = None
        if not any(callable(part) for part in self.parts):
            self.laid_out = list(multipart_pieces(self.parts, self.boundary))  # type: ignore[arg-type]
            self.length = sum(
                p.length if isinstance(p, BlobRange) else len(p) for p in self.laid_out
            )

    def _build(self, part: LazyPart, first: bool) -> tuple[dict[str, str], bytes] | None:
        """The lazy part built; None when it cannot be and is not the answer's first."""
        try:
            return part()
        except NotAcceptable as exc:
            if first:
                raise
            log.warning("a part of a multipart answer is left out: %s", exc.message)
            self.left_out.append(f"a part is left out: {exc.message}")
            return None

    def pieces(self) -> Iterator[bytes | BlobRange]:
        """The body in order; a lazy part is built when the writer reaches it, one at a time."""
        if self.laid_out is not None:
            return iter(self.laid_out)
        built = (self._build(part, False) if callable(part) else part for part in self.parts)
        return multipart_pieces((part for part in built if part is not None), self.boundary)

    def to_bytes(self) -> bytes:
        """The whole body, its parts read and built in parallel (the S3 round trips overlap)."""
        parts = parallel_map(self._resolve, self.parts)
        return encode_multipart([part for part in parts if part is not None], self.boundary)

    def _resolve(self, part: Part | LazyPart) -> tuple[dict[str, str], bytes] | None:
        if callable(part):
            return self._build(part, False)
        headers, body = part
        if isinstance(body, BlobRange):
            body = self.blobs.get_range(body.key, body.start, body.length)
        return headers, body


def deliver(request: WebRequest, response: WebResponse) -> WebResponse:
    """The answer as the transport can send it: a streamed body stays streamed where the
    transport writes it (`WebRequest.streams`), else it is joined; above `InlineLimit` on a
    store that can presign, a `303 See Other` to a copy under `tmp/` (a 200 only: any other
    status, such as a remote's 404 that the proxy passes on, would be lost in the redirect).

    A HEAD answer is left as it is: `http.head_of` gives it the length the body knows and
    drops the body, so nothing is read, joined or copied to S3 for an answer without content
    (RFC 9110 §9.3.2). Where the GET would be redirected, the HEAD is a 200 with the
    representation's Content-Length."""
    if request.method == "HEAD":
        return response
    ctx = request.context
    limit = ctx.settings.inline_limit
    body = streamed = response.body
    if isinstance(body, StreamedBody) and not request.streams:
        body = response.body = body.to_bytes()
    _name_left_out(request, response, streamed)
    size = body.length if isinstance(body, StreamedBody) else len(body)
    if response.status != 200 or not limit or (size is not None and size <= limit):
        return response
    key = f"{TMP_PREFIX}{uuid.uuid4().hex}"
    url = ctx.blobs.presigned_url(key, _EXPIRES_IN)
    if url is None:
        return response
    if isinstance(body, StreamedBody):  # lazy parts: the size is known once they are built
        body = response.body = body.to_bytes()
        _name_left_out(request, response, streamed)
        if len(body) <= limit:
            return response
    ctx.blobs.put(key, body, response.content_type)
    headers = {"Location": url}
    if "Warning" in response.headers:  # the parts left out of the copy
        headers["Warning"] = response.headers["Warning"]
    return WebResponse(303, b"", headers, "text/plain")


def _name_left_out(request: WebRequest, response: WebResponse, body: object) -> None:
    """The parts a multipart `body` left out so far, named in the answer's `Warning` header."""
    if isinstance(body, StreamedMultipart) and body.left_out:
        response.headers.update(warning_header(request.header("host", "-"), body.left_out))
