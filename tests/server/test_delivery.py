"""How answers leave (chalicelib/server/delivery.py): streamed, joined, or 303 through S3."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from chalicelib.context import Context
from chalicelib.dicom.multipart import encode_multipart
from chalicelib.server.delivery import (
    BlobRange,
    LazyPart,
    StoredObject,
    StreamedMultipart,
    deliver,
)
from chalicelib.server.http import WebRequest, WebResponse
from tests.conftest import make_context

DATA = bytes(range(256)) * 40
KEY = "1.2.3/1.2.3.1/1.2.3.1.1/0123456789abcdef.dcm"


def _body(context: Context, *lazy: bytes) -> StreamedMultipart:
    """A stored object whole and in part, bytes, and a part built when reached per `lazy`."""
    context.blobs.put(KEY, DATA)
    parts = [
        ({"Content-Type": "application/dicom"}, BlobRange(KEY, 0, len(DATA))),
        ({"Content-Type": "application/octet-stream"}, BlobRange(KEY, 100, 50)),
        ({"Content-Type": "text/plain"}, b"in memory"),
        *[_lazy(body) for body in lazy],
    ]
    return StreamedMultipart(context.blobs, parts, "b0undary")


def _lazy(body: bytes) -> LazyPart:
    return lambda: ({"Content-Type": "text/plain"}, body)


def _expected(*lazy: bytes) -> bytes:
    parts = [
        ({"Content-Type": "application/dicom"}, DATA),
        ({"Content-Type": "application/octet-stream"}, DATA[100:150]),
        ({"Content-Type": "text/plain"}, b"in memory"),
        *[({"Content-Type": "text/plain"}, body) for body in lazy],
    ]
    return encode_multipart(parts, "b0undary")


def _request(context: Context, streams: bool) -> WebRequest:
    return WebRequest("GET", "/", {}, [], b"", "http://h", context=context, streams=streams)


def test_streamed_multipart_to_bytes_is_the_encoded_body(context: Context) -> None:
    assert _body(context, b"built", b"later").to_bytes() == _expected(b"built", b"later")


def test_streamed_multipart_length_unknown_while_a_part_is_lazy(context: Context) -> None:
    """The first lazy part is built at once (an error common to every part is then a 4xx
    before the answer starts): with one, the length is known; with two, not."""
    assert _body(context, b"built").length == len(_expected(b"built"))
    assert _body(context, b"built", b"later").length is None


def test_streamed_multipart_pieces_build_one_part_at_a_time(context: Context) -> None:
    """A lazy part is built when the writer reaches it, after every piece before it."""
    events: list[str] = []

    def lazy(number: int):
        def build() -> tuple[dict[str, str], bytes]:
            events.append(f"build {number}")
            return {}, b"%d" % number

        return build

    body = StreamedMultipart(context.blobs, [lazy(1), lazy(2), lazy(3)], "b")
    events.append("answer starts")
    for piece in body.pieces():
        if piece in (b"1", b"2", b"3"):
            events.append(f"write {piece.decode()}")
    assert events == [
        *["build 1", "answer starts", "write 1"],
        *["build 2", "write 2", "build 3", "write 3"],
    ]


def test_deliver_keeps_the_stream_where_the_transport_writes_it(tmp_path: Path) -> None:
    context = make_context("local", tmp_path)
    body = _body(context, b"built", b"later")
    response = deliver(_request(context, streams=True), WebResponse(200, body, {}, "x/y"))
    assert response.body is body


@pytest.mark.parametrize("backend", ["local", "aws"], indirect=True)
def test_deliver_joins_the_stream_elsewhere(context: Context) -> None:
    body = _body(context, b"built", b"later")
    response = deliver(_request(context, streams=False), WebResponse(200, body))
    assert response.status == 200 and response.body == _expected(b"built", b"later")


@pytest.mark.parametrize("backend", ["local", "aws"], indirect=True)
def test_deliver_stored_object_streamed_or_joined(context: Context) -> None:
    context.blobs.put(KEY, DATA)
    body = StoredObject(context.blobs, BlobRange(KEY, 0, len(DATA)))
    assert body.length == len(DATA)
    assert list(body.pieces()) == [BlobRange(KEY, 0, len(DATA))]
    streamed = deliver(_request(context, streams=True), WebResponse(200, body))
    assert streamed.body is body
    joined = deliver(_request(context, streams=False), WebResponse(200, body))
    assert joined.status == 200 and joined.body == DATA


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
@pytest.mark.parametrize("streams", [True, False])
def test_deliver_over_inline_limit_303_with_the_whole_body(
    backend: str, tmp_path: Path, streams: bool
) -> None:
    context = make_context(backend, tmp_path, inline_limit=1000)
    body = _body(context, b"built", b"later")
    response = deliver(_request(context, streams), WebResponse(200, body, {}, "x/y"))
    assert response.status == 303
    location = response.headers["Location"]
    assert requests.get(location, timeout=30).content == _expected(b"built", b"later")
