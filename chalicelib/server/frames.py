"""WADO-RS Retrieve Frames, PS3.18 §10.4.1.1.4 (Retrieve Transaction, 2025b).

`GET .../instances/{instance}/frames/{frames}`: `frames` is a comma-separated list of 1-based
frame numbers in any order, answered in request order (repeats kept); a number outside the
instance is 400. There is no bare `.../frames` resource (404): the standard defines none.

Each frame is one range read of the stored file at the offsets recorded at ingest
(`record.pixel`), never a whole-file read, except for Deflated Explicit VR Little Endian,
whose frames are cut from the inflated dataset and then sent as native ones. Media types and
transfer syntaxes per PS3.18 §8.7.3.3.2 and Table 8.7.3-5 (2025b), chosen by `negotiate_pixel`:

- a compressed frame goes out as stored (its bitstream without item tags) when the Accept
  asks for it: `transfer-syntax=*`, `image/*`, or its media type (image/jpeg, image/jls,
  image/jp2, image/jpx, image/jphc, image/dicom-rle, video/...);
- otherwise decoded to raw Explicit VR Little Endian pixels, `application/octet-stream`
  (YBR JPEG frames become RGB, planar configuration 0);
- or re-encoded losslessly as RLE, JPEG-LS or JPEG 2000 when asked by transfer syntax UID;
- to an Accept that names no type and no transfer syntax (`*/*`, no Accept, `multipart/related`
  or `multipart/*` without `type`, `type="*/*"`), the default of PS3.18 §8.7.3.3 (Bulkdata
  Media Types, 2025b): "If no media type Transfer Syntax parameter is specified, then the
  Explicit VR Little Endian Transfer Syntax shall be used, unless the origin server has only
  access to the pixel data in lossy compressed form": raw pixels for native and lossless
  frames (`LOSSLESS_SYNTAXES`), the stored bitstream for lossy ones (JPEG Baseline, ...) and
  for those no installed decoder reads. (`*/*` gave every compressed frame as stored, and
  `multipart/related` without `type` decoded a JPEG Baseline frame to raw pixels.)

Bulkdata Media Types, not rendered ones: on this resource `image/jpeg`, `image/jp2`, `video/mp4`
... name the stored bitstream (Table 8.7.3-5; §8.7.4 notes that the same types serve both), bare
or inside `multipart/related; type=...`. A bare (single part) type answers one frame only: a
list of several frames needs a multipart type (PS3.18 §10.4.4, 2025b: single part media types
are ignored for resources of several items). Rendered-only types (image/png, image/gif,
text/html, ...) are 406, mixed with Bulkdata types 400 (§8.7.5, `negotiate.accept_category`);
a rendered frame is `.../frames/{n}/rendered`.

Deviation: a media type without `transfer-syntax` (e.g. `type="image/jpeg"`) accepts any
syntax of that media type, the stored one first, where Table 8.7.3-5 names one default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from chalicelib.dicom import pixels
from chalicelib.dicom.encoding import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    inflate,
)
from chalicelib.dicom.multipart import MediaType, multipart_content_type, new_boundary
from chalicelib.errors import BadRequest, NotAcceptable, NotFound
from chalicelib.server.delivery import BlobRange, LazyPart, Part, StreamedMultipart, deliver
from chalicelib.server.http import Service, WebRequest, WebResponse
from chalicelib.server.negotiate import (
    OCTET_STREAM,
    AcceptEntry,
    accept_category,
    best_match,
    parse_accept,
    part_type,
    type_matches,
)
from chalicelib.server.resources import find_instances, instance_url, metadata_documents
from chalicelib.storage.ports import InstanceRecord

service = Service("wado-rs-frames")

Mode = Literal["stored", "raw", "encode"]

LOSSLESS_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (SV1)
        JPEG_LS_LOSSLESS,
        JPEG_2000_LOSSLESS,
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component (Lossless Only)
        "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 (Lossless Only)
        "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL Options (Lossless Only)
        RLE_LOSSLESS,
    }
)
"""The encapsulated transfer syntaxes that are lossless by definition (PS3.5 Section 8 and
Annex A, 2025b); the others (JPEG Baseline and Extended, JPEG-LS near-lossless, JPEG 2000
and HTJ2K that may be lossy, video) may hold only a lossy form of the pixels."""


@dataclass
class PixelChoice:
    """How the frames of one instance are sent."""

    media_type: str
    """Content-Type of each part (without parameters)."""
    transfer_syntax: str
    mode: Mode
    multipart: bool
    fallback: str | None = None
    """The Content-Type of a part whose frame cannot be converted and goes as stored instead:
    set for an answer of several frames that must be converted when the Accept admits the
    stored form (`negotiate_pixel`). The outer Content-Type then names no transfer syntax."""

    @property
    def part_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def _offers(record: InstanceRecord) -> list[tuple[str, str, Mode]]:
    """What this instance's frames can be sent as, the default first: Explicit VR Little
    Endian, unless they are stored in a lossy form or one that cannot be decoded here
    (PS3.18 §8.7.3.3, 2025b; see the module docstring)."""
    pixel = record.pixel
    stored = record.transfer_syntax_uid
    ele = EXPLICIT_VR_LITTLE_ENDIAN
    if pixel.get("encapsulated"):
        offers: list[tuple[str, str, Mode]] = [
            (pixels.SYNTAX_MEDIA_TYPES.get(stored, OCTET_STREAM), stored, "stored")
        ]
        if not pixels.can_decode(stored):
            return offers
        raw: tuple[str, str, Mode] = (OCTET_STREAM, ele, "raw")
        offers.insert(0 if stored in LOSSLESS_SYNTAXES else 1, raw)
    else:
        offers = [(OCTET_STREAM, ele, "raw")]
        if pixel.get("bits_allocated") == 1:
            return offers
    offers += [
        (pixels.SYNTAX_MEDIA_TYPES[syntax], syntax, "encode")
        for syntax in pixels.ENCODABLE_SYNTAXES
        if syntax != stored
    ]
    return offers


def negotiate_pixel(entries: list[AcceptEntry], record: InstanceRecord, parts: int) -> PixelChoice:
    """The client's preferred representation of the frames: highest q, then the instance's
    default (as stored), then header order; q=0 and unsupported members are ignored. DICOM and
    rendered media types together are 400 (PS3.18 §8.7.5, 2025b)."""
    category = accept_category(entries, bulkdata=True)
    offers = _offers(record)
    encapsulated = bool(record.pixel.get("encapsulated"))

    def fits(entry: AcceptEntry, offer: tuple[str, str, Mode]) -> bool:
        offer_type, offer_syntax, mode = offer
        media = entry.media
        if not _multipart(media) and parts != 1:
            return False  # a single-part answer holds one frame
        syntax = media.params.get("transfer-syntax")
        part = _part(media)
        if syntax == "*":
            syntax_fits = mode == "stored" or (mode == "raw" and not encapsulated)
        elif syntax:
            syntax_fits = syntax == offer_syntax
        else:
            syntax_fits = part != OCTET_STREAM or mode == "raw"
        return syntax_fits and (part == OCTET_STREAM or type_matches(part, offer_type))

    found = best_match(entries, offers, fits)
    if found is None:
        available = ", ".join(
            f'multipart/related; type="{t}"; transfer-syntax={s}' for t, s, _ in offers
        )
        hint = ""
        if category == "rendered":
            hint = "; for a rendered frame GET .../frames/{n}/rendered (PS3.18 §10.4.1.1.3)"
        raise NotAcceptable(
            f"the frames of instance {record.sop_uid} (stored as {record.transfer_syntax_uid}) "
            f"are available as: {available}; the Accept header allows none of them{hint}"
        )
    (offer_type, offer_syntax, mode), entry = found
    content_type = OCTET_STREAM if _part(entry.media) == OCTET_STREAM else offer_type
    choice = PixelChoice(content_type, offer_syntax, mode, _multipart(entry.media))
    if parts > 1 and (mode == "encode" or (mode == "raw" and encapsulated)):
        as_stored = next(
            o for o in offers if o[2] == "stored" or (o[2] == "raw" and not encapsulated)
        )

        def admits(entry: AcceptEntry, offer: tuple[str, str, Mode]) -> bool:
            """The entry takes the stored form, or names no transfer syntax and the stored
            form may be lossy: then "Explicit VR Little Endian ... unless the origin server
            has only access to the pixel data in lossy compressed form" (PS3.18 §8.7.3.3,
            2025b). A lossless source's frame that cannot be decoded is not that case."""
            media = entry.media
            default = _part(media) == OCTET_STREAM and "transfer-syntax" not in media.params
            lossy = offer[1] not in LOSSLESS_SYNTAXES
            return fits(entry, offer) or (default and lossy and _multipart(media))

        stored = best_match(entries, [as_stored], admits)
        if stored is not None:
            (stored_type, stored_syntax, _), stored_entry = stored
            media = OCTET_STREAM if _part(stored_entry.media) == OCTET_STREAM else stored_type
            choice.fallback = f"{media}; transfer-syntax={stored_syntax}"
    return choice


def _multipart(media: MediaType) -> bool:
    """`multipart/related`, or a wildcard (`*/*`, `image/*`: the default, multipart)."""
    return media.type == "multipart/related" or "*" in media.type


def _part(media: MediaType) -> str:
    """The media type of each part a member asks for: any (`*/*`) for `multipart/related`
    without `type`, whose range includes every part type (RFC 9110 §12.5.1)."""
    return part_type(media, "*/*") if media.type == "multipart/related" else media.type


class FrameReader:
    """Reads frames of one stored instance with range reads."""

    def __init__(self, request: WebRequest, record: InstanceRecord) -> None:
        if not record.pixel:
            raise NotFound(
                f"instance {record.sop_uid} has no Pixel Data (7FE0,0010), so it has no frames"
            )
        self._request = request
        self.blobs = request.context.blobs
        self.record = record
        self.pixel = record.pixel
        self.count = pixels.frame_count(self.pixel)
        self._module: pixels.PixelModule | None = None
        self._inflated: bytes | None = None
        self._frames: list[list[list[int]]] | None = None

    def _read(self, start: int, length: int) -> bytes:
        """Bytes of the stored file, by range read; of the inflated dataset for a Deflated
        Explicit VR Little Endian instance (its offsets count there, `parse.parse_instance`),
        which is read whole and inflated once."""
        if not self.pixel.get("deflated"):
            return self.blobs.get_range(self.record.blob_key, start, length)
        if self._inflated is None:
            self._inflated = inflate(self.blobs.get(self.record.blob_key))
        return self._inflated[start : start + length]

    def _frame_table(self) -> list[list[list[int]]]:
        """The fragments of each frame: in the record, or in its own blob when large."""
        if self._frames is None:
            key = self.pixel.get("frames_key")
            self._frames = json.loads(self.blobs.get(key)) if key else self.pixel["frames"]
        return self._frames

    def check(self, numbers: list[int]) -> None:
        for number in numbers:
            if not 1 <= number <= self.count:
                raise BadRequest(
                    f"frame {number} does not exist: instance {self.record.sop_uid} has "
                    f"{self.count} frame(s), numbered from 1"
                )

    @property
    def module(self) -> pixels.PixelModule:
        if self._module is None:
            [document] = metadata_documents(self._request, [self.record])
            self._module = pixels.PixelModule.from_json(
                self.pixel, json.loads(document) if document else {}
            )
        return self._module

    def stored(self, number: int) -> bytes:
        """The frame as stored: native pixels in little endian, or the fragments' bitstream."""
        fragments = self._frame_table()[number - 1] if self.pixel.get("encapsulated") else None
        big = self.record.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
        return pixels.stored_frame(self.pixel, number, big, fragments, self._read)

    def as_stored(self, choice: PixelChoice) -> bool:
        """The frames go out as `stored` reads them: bitstreams, or native little endian."""
        return choice.mode == "stored" or (
            choice.mode == "raw" and not self.pixel.get("encapsulated")
        )

    def stored_range(self, number: int, choice: PixelChoice) -> BlobRange | None:
        """Frame `number` as one range of the stored file, when it goes out exactly as stored
        there (not inflated, decoded, swapped or shifted; one fragment), else None."""
        if self.pixel.get("deflated") or not self.as_stored(choice):
            return None
        if self.pixel.get("encapsulated"):
            fragments = self._frame_table()[number - 1]
            if len(fragments) != 1:
                return None
            ((start, length),) = fragments
        else:
            big = self.record.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN
            if big or self.pixel["frame_bits"] % 8:
                return None
            start, length = pixels.native_frame_span(self.pixel, number, big)
        if start + length > self.record.size:  # a truncated file: read what there is
            return None
        return BlobRange(self.record.blob_key, start, length)

    def frame_part(self, number: int, choice: PixelChoice) -> tuple[str, bytes]:
        """Frame `number` and its part's Content-Type: converted per `choice`, or as stored
        under `choice.fallback` when it cannot be converted and the Accept admits that."""
        try:
            return choice.part_type, self.frame(number, choice)
        except NotAcceptable:
            if choice.fallback is None:
                raise
            return choice.fallback, self.stored(number)

    def frame(self, number: int, choice: PixelChoice) -> bytes:
        data = self.stored(number)
        if self.as_stored(choice):
            return data
        try:
            if self.pixel.get("encapsulated"):
                array, photometric = pixels.decode_frame(
                    data, self.record.transfer_syntax_uid, self.module
                )
            else:
                array = pixels.native_array(data, self.module)
                photometric = self.module.photometric_interpretation
            if choice.mode == "raw":
                return pixels.array_bytes(array)
            return pixels.encode_frame(array, self.module, photometric, choice.transfer_syntax)
        except pixels.PixelError as exc:
            raise NotAcceptable(
                f"frame {number} of instance {self.record.sop_uid}: {exc}; ask for "
                f"transfer-syntax=* to receive it as stored"
            ) from None


def parse_frame_list(text: str, limit: int) -> list[int]:
    """The frame numbers of a `{frames}` path segment, PS3.18 §10.4.1.1.7 (2025b): each once,
    at most `limit` (`DicomWeb.MaxFrames`: every repeat or extra frame is one more decoded
    frame in memory)."""
    numbers: list[int] = []
    for item in text.replace("%2C", ",").replace("%2c", ",").split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):  # int() takes "²" and "٣" too
            raise BadRequest(
                f"frame list '{text[:80]}': '{item[:20]}' is not a frame number; use 1-based "
                "numbers separated by commas, e.g. frames/1,3"
            )
        numbers.append(int(item))
    if len(numbers) > limit:
        raise BadRequest(
            f"the frame list names {len(numbers)} frames; at most {limit} may be asked at once "
            "(DicomWeb.MaxFrames): split the request"
        )
    if len(set(numbers)) != len(numbers):
        repeated = next(n for n in numbers if numbers.count(n) > 1)
        raise BadRequest(f"frame list '{text[:80]}' names frame {repeated} more than once")
    return numbers


FrameBody = BlobRange | Callable[[], tuple[str, bytes]]
"""A frame as a range of the stored file, or a function that reads (and converts) it and
gives its part's Content-Type with it (`FrameReader.frame_part`)."""


def read_frames(
    request: WebRequest, record: InstanceRecord, numbers: list[int]
) -> tuple[PixelChoice, list[FrameBody]]:
    """The representation the Accept header selects for the frames `numbers` of `record`, and
    each frame's body in it, read when it is sent."""
    reader = FrameReader(request, record)
    reader.check(numbers)
    choice = negotiate_pixel(parse_accept(request.accept), record, len(numbers))
    return choice, [
        reader.stored_range(n, choice) or partial(reader.frame_part, n, choice) for n in numbers
    ]


def frame_bytes(request: WebRequest, body: FrameBody) -> bytes:
    if isinstance(body, BlobRange):
        return request.context.blobs.get_range(body.key, body.start, body.length)
    return body()[1]


def answer_frames(
    request: WebRequest, choice: PixelChoice, bodies: list[FrameBody], locations: list[str]
) -> WebResponse:
    """The frames read by `read_frames`, one part each with its Content-Location; several
    streamed where the transport can (`delivery.StreamedMultipart`).

    A frame of several that cannot be converted (a corrupt bitstream) must not break off an
    answer already streaming. Each part of a multipart answer carries its own Content-Type
    and transfer syntax (PS3.18 §8.7.3.4 Transfer Syntax, 2025b), so such a frame goes as stored,
    its part's Content-Type naming the stored transfer syntax, when the Accept admits that
    (`PixelChoice.fallback`). Otherwise it is a 406 when it is the first part and left out
    when it is a later one (`StreamedMultipart`, as for the instances of a study or series
    retrieve). A single frame is a 406 either way. When a part may go as stored, the outer
    Content-Type names no transfer syntax (as study and series retrieve), since its parts' may
    differ."""
    if not choice.multipart:
        headers = {"Content-Location": locations[0]}
        body = frame_bytes(request, bodies[0])
        return deliver(request, WebResponse(200, body, headers, choice.part_type))
    parts = [
        _frame_part(location, body, choice.part_type)
        for body, location in zip(bodies, locations, strict=True)
    ]
    streamed = StreamedMultipart(request.context.blobs, parts, new_boundary())
    # A part that may go as stored has another transfer syntax than the outer one would say.
    syntax = {} if choice.fallback else {"transfer_syntax": choice.transfer_syntax}
    content_type = multipart_content_type(choice.media_type, streamed.boundary, **syntax)
    return deliver(request, WebResponse(200, streamed, {}, content_type))


def _frame_part(location: str, body: FrameBody, part_type: str) -> Part | LazyPart:
    if isinstance(body, BlobRange):
        return {"Content-Type": part_type, "Content-Location": location}, body

    def build() -> tuple[dict[str, str], bytes]:
        content_type, data = body()
        return {"Content-Type": content_type, "Content-Location": location}, data

    return build


def frame_url(request: WebRequest, record: InstanceRecord, number: int) -> str:
    base = instance_url(request, record.study_uid, record.series_uid, record.sop_uid)
    return f"{base}/frames/{number}"


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "GET", scope="read"
)
def retrieve_frames(
    request: WebRequest, study: str, series: str, instance: str, frames: str
) -> WebResponse:
    numbers = parse_frame_list(frames, request.context.settings.max_frames)
    record = find_instances(request, study, series, instance)[0]
    choice, bodies = read_frames(request, record, numbers)
    locations = [frame_url(request, record, n) for n in numbers]
    return answer_frames(request, choice, bodies, locations)
