"""WADO-RS Retrieve Bulkdata, PS3.18 §10.4.1.1.5 and §8.7.3.3.2 (Retrieve Transaction, 2025b).

`GET .../instances/{instance}/bulk/{path}` answers what a BulkDataURI of the instance's
metadata names: `path` is a tag ("00091001") or a tag path through sequence items
("60031010/1/60031011"), up to `MAX_DEPTH` sequences deep (Chalice has no greedy path
parameter, so each depth is a route).

- Any element: its Value Field in little endian (a big-endian source's words are swapped),
  as `multipart/related; type="application/octet-stream"` (the default) or single-part
  `application/octet-stream`; a `Range: bytes=...` header gets 206 with that byte range of
  the value (RFC 9110 §14), 416 when it lies outside.
- Pixel Data (7FE0,0010): its frames, one part each, negotiated as the frames resource does
  (`frames.negotiate_pixel`); a native Pixel Data value can also be read by Range.
- Range on encapsulated (compressed) Pixel Data: when the selected representation is single
  part (one frame, bare `image/jpeg`, `application/octet-stream`, ...: PS3.18 §10.4.4, 2025b),
  206 with that range of its bytes (the frame's bitstream, fragments joined, or the decoded
  pixels), 416 outside them. A multipart answer (several frames, or a multipart type chosen)
  ignores Range and is 200 in full, as RFC 9110 §14.2 allows ("A server MAY ignore the Range
  header field"): its boundary is new in every response, so its byte offsets name nothing
  stable, and a byte range of the frames concatenated is no representation PS3.18 defines.

DICOM and rendered media types in one Accept are 400 (PS3.18 §8.7.5,
`negotiate.accept_category`); image/jpeg and the other pixel data types are Bulkdata Media
Types here, not rendered ones.

Elements recorded at ingest (`record.bulk`, `record.pixel`) are range reads of the stored
file; an element not recorded there (small values, or beyond the recorded count) is read
from the whole file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from chalicelib.dicom import pixels
from chalicelib.dicom.encoding import EXPLICIT_VR_BIG_ENDIAN, WORD_SIZE, pixel_word_size, swap_words
from chalicelib.dicom.multipart import encode_multipart, multipart_content_type, new_boundary
from chalicelib.errors import NotAcceptable, NotFound, RangeNotSatisfiable
from chalicelib.server import frames
from chalicelib.server.delivery import deliver
from chalicelib.server.http import Service, WebRequest, WebResponse, error_response
from chalicelib.server.negotiate import (
    OCTET_STREAM,
    AcceptEntry,
    accept_category,
    best_match,
    parse_accept,
    part_type,
    type_matches,
)
from chalicelib.server.resources import find_instances, instance_url
from chalicelib.storage.ports import InstanceRecord

service = Service("wado-rs-bulkdata")

MAX_DEPTH = 5
PIXEL_DATA_PATH = "7FE00010"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_ITEM = re.compile(r"[1-9][0-9]*")
"""An item number: ASCII digits from 1, no leading zero (`00` is not item 0 - 1, the last)."""


def parse_bulk_path(segments: list[str]) -> str:
    """ "TAG/ITEM/TAG..." checked and upper-cased; NotFound for anything else."""
    for position, segment in enumerate(segments):
        ok = (_TAG if position % 2 == 0 else _ITEM).fullmatch(segment)
        if not ok:
            raise NotFound(
                f"bulk path '{'/'.join(segments)[:120]}' names no element: expected "
                "tag/item/tag..., tags as 8 hexadecimal digits and items numbered from 1"
            )
    return "/".join(s.upper() for s in segments)


def _wants_multipart(request: WebRequest) -> bool:
    """True for multipart/related; type="application/octet-stream", False for single-part;
    multipart wins ties as the default of PS3.18 §8.7.3.3.2; DICOM and rendered media types
    together are 400 (§8.7.5)."""
    entries = parse_accept(request.accept)
    accept_category(entries, bulkdata=True)
    found = best_match(entries, (True, False), _fits_octet_stream)
    if found is None:
        raise NotAcceptable(
            'bulk data is available as multipart/related; type="application/octet-stream" '
            "or application/octet-stream; the Accept header allows neither"
        )
    return found[0]


def _fits_octet_stream(entry: AcceptEntry, multipart: bool) -> bool:
    media = entry.media
    if multipart:
        return media.type == "multipart/related" and type_matches(
            part_type(media, OCTET_STREAM), OCTET_STREAM
        )
    return type_matches(media.type, OCTET_STREAM)


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `bytes=` range; None when there is none.

    Raise ValueError when it cannot be satisfied."""
    if not header:
        return None
    match = _RANGE.match(header.split(",")[0])
    if not match or not (match.group(1) or match.group(2)):
        return None  # RFC 9110 §14.2: an invalid Range is ignored
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last) + 1, total) if last else total
    else:
        start, end = max(total - int(last), 0), total
    if start >= total or end <= start:
        raise ValueError(f"bytes {header} outside 0-{total - 1}")
    return start, end


class ElementValue:
    """The little-endian Value Field of one bulk element, read by range where recorded."""

    def __init__(self, request: WebRequest, record: InstanceRecord, path: str) -> None:
        self.blobs = request.context.blobs
        self.record = record
        self.path = path
        self.big_endian = record.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
        self.location: list[Any] | None = None
        self._value: bytes | None = None
        pixel = record.pixel
        if (
            path == PIXEL_DATA_PATH
            and pixel
            and not (pixel.get("encapsulated") or pixel.get("deflated"))
        ):
            word = 2 if pixel.get("vr") == "OW" or pixel.get("bits_allocated", 8) > 8 else 1
            self.location = [pixel["offset"], pixel["length"], "OW" if word == 2 else "OB"]
        elif path in record.bulk:
            self.location = record.bulk[path]
        else:
            self._value = _read_from_file(self.blobs.get(record.blob_key), path, self.big_endian)
        self.length = self.location[1] if self.location else len(self._value or b"")

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        end = self.length if end is None else end
        if self._value is not None:
            return self._value[start:end]
        assert self.location is not None
        offset, _, vr = self.location
        word = WORD_SIZE.get(vr, 1) if self.big_endian else 1
        if vr == "OW" and self.big_endian and self.path == PIXEL_DATA_PATH:
            word = pixel_word_size(vr, self.record.pixel.get("bits_allocated", 16))
        aligned = start - start % word
        stop = end + (-end % word)
        chunk = self.blobs.get_range(self.record.blob_key, offset + aligned, stop - aligned)
        return swap_words(chunk, word)[start - aligned : end - aligned]


def _read_from_file(data: bytes, path: str, big_endian: bool) -> bytes:
    """Find the element by walking the parsed file (for paths not recorded at ingest)."""
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    segments = path.split("/")
    ds = dcmread(io.BytesIO(data), force=True)
    try:
        for position in range(0, len(segments) - 1, 2):
            ds = ds[int(segments[position], 16)].value[int(segments[position + 1]) - 1]
        element = ds[int(segments[-1], 16)]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise NotFound(f"the instance has no element at bulk path {path}") from None
    if element.VR == "SQ":
        raise NotFound(f"bulk path {path} names a sequence, which has no bulk value")
    value = element.value
    if isinstance(value, bytes | bytearray):
        word = WORD_SIZE.get(element.VR, 1) if big_endian and element.VR.startswith("O") else 1
        return swap_words(bytes(value), word)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_data_element(buffer, element)
    return buffer.getvalue()[8:]  # implicit VR little endian: tag (4) and length (4) first


def bulk_url(request: WebRequest, record: InstanceRecord, path: str) -> str:
    base = instance_url(request, record.study_uid, record.series_uid, record.sop_uid)
    return f"{base}/bulk/{path}"


def _range_header(request: WebRequest) -> str:
    """The Range header, refused (416) when it holds more than `DicomWeb.MaxRanges` ranges:
    RFC 9110 §14.2 lets a server reject "a set of many small ranges". Only the first range of
    a set is served."""
    header = request.header("range")
    limit = request.context.settings.max_ranges
    if header.count(",") >= limit:
        raise RangeNotSatisfiable(
            f"the Range header holds {header.count(',') + 1} ranges; at most {limit} are "
            "accepted (DicomWeb.MaxRanges)"
        )
    return header


def _ranged(
    range_header: str,
    length: int,
    read: Callable[[int, int], bytes],
    headers: dict[str, str],
    content_type: str,
) -> WebResponse | None:
    """206 with the requested byte range of a `length`-byte representation, 416 when it lies
    outside (RFC 9110 §14, §15.3.7, §15.5.17); None without a valid Range (full answer)."""
    try:
        span = _parse_range(range_header, length)
    except ValueError as exc:
        return error_response(
            RangeNotSatisfiable(
                f"Range {exc} of {length} bytes", headers={"Content-Range": f"bytes */{length}"}
            )
        )
    if span is None:
        return None
    start, end = span
    headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{length}"}
    return WebResponse(206, read(start, end), headers, content_type)


def _retrieve_frames(
    request: WebRequest, record: InstanceRecord, uri: str, range_header: str
) -> WebResponse:
    """Pixel Data as its frames; Range applies to a single-part answer only."""
    numbers = list(range(1, pixels.frame_count(record.pixel) + 1))
    locations = [frames.frame_url(request, record, n) for n in numbers]
    if len(numbers) == 1:
        locations = [uri]
    choice, bodies = frames.read_frames(request, record, numbers)
    if range_header and not choice.multipart:
        body = frames.frame_bytes(request, bodies[0])
        partial = _ranged(
            range_header,
            len(body),
            lambda start, end: body[start:end],
            {"Content-Location": uri},
            choice.part_type,
        )
        if partial is not None:
            return partial
    return frames.answer_frames(request, choice, bodies, locations)


def retrieve_bulkdata(request: WebRequest, record: InstanceRecord, path: str) -> WebResponse:
    uri = bulk_url(request, record, path)
    range_header = _range_header(request)
    pixel = path == PIXEL_DATA_PATH and record.pixel
    if pixel and (record.pixel.get("encapsulated") or not range_header):
        return _retrieve_frames(request, record, uri, range_header)
    multipart = _wants_multipart(request)
    value = ElementValue(request, record, path)
    headers = {"Content-Location": uri}
    if range_header:
        partial = _ranged(range_header, value.length, value.read, headers, OCTET_STREAM)
        if partial is not None:
            return partial
    body = value.read()
    if not multipart:
        return deliver(request, WebResponse(200, body, headers, OCTET_STREAM))
    boundary = new_boundary()
    parts = [({"Content-Type": OCTET_STREAM, "Content-Location": uri}, body)]
    content_type = multipart_content_type(OCTET_STREAM, boundary)
    return deliver(request, WebResponse(200, encode_multipart(parts, boundary), {}, content_type))


def _register(depth: int) -> None:
    names = [f"p{i}" for i in range(2 * depth + 1)]
    path = "/studies/{study}/series/{series}/instances/{instance}/bulk/" + "/".join(
        "{" + n + "}" for n in names
    )

    def handler(
        request: WebRequest, study: str, series: str, instance: str, **segments: str
    ) -> WebResponse:
        bulk_path = parse_bulk_path([segments[n] for n in names])
        record = find_instances(request, study, series, instance)[0]
        return retrieve_bulkdata(request, record, bulk_path)

    handler.__name__ = f"retrieve_bulkdata_depth{depth}"
    service.route(path, "GET", scope="read")(handler)


for _depth in range(MAX_DEPTH + 1):
    _register(_depth)
