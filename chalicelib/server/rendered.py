"""Rendered and thumbnail resources, PS3.18 §8.3.5 and §10.4 (Retrieve Transaction, 2025b).

`.../rendered` answers one consumer-format image (image/jpeg by default, image/png,
image/gif) of an instance (its first frame) or of one frame. Query parameters
(PS3.18 §8.3.5.1, 2025b): `window=center,width,function` (function `linear`,
`linear-exact` or `sigmoid`), `viewport=vw,vh[,sx,sy,sw,sh]`, `quality` (1..100, JPEG),
`accept` (overrides the Accept header, §8.3.3.1). `annotation`, `iccprofile` and `charset`
are accepted and not applied: the answer says so in a `Warning: 299` header.

Deviation (as Orthanc does): `studies/{s}/rendered` and `series/{se}/rendered` render one
instance, not every one: the first of the study or series ordered by SeriesNumber,
InstanceNumber, then SOP Instance UID (missing numbers last), among instances with Pixel Data.

`.../thumbnail` (§10.4.3.3.4) answers one small image (fit in 128×128 unless `viewport` says
otherwise), chosen by the server: the middle instance of the series (of the study's first
series), the middle frame of an instance, or the frame asked for; no overlay, so nothing
patient-identifying. Default-size thumbnails are cached in the BlobStore under
`thumbnails/...` with the series (study) version they were made from, so a store or delete
that bumps the version makes the next request render afresh; DELETE removes them. Every
thumbnail carries an ETag and answers a matching `If-None-Match` with 304.
"""

from __future__ import annotations

import hashlib
import math

from chalicelib.dicom.rendering import (
    DEFAULT_QUALITY,
    RENDERED_TYPES,
    WINDOW_FUNCTIONS,
    FrameOutOfRange,
    ImageTooLarge,
    RenderError,
    RenderOptions,
    Viewport,
    Window,
)
from chalicelib.errors import BadRequest, NotAcceptable, NotFound
from chalicelib.server.cache import versioned
from chalicelib.server.delivery import deliver
from chalicelib.server.http import (
    Service,
    WebRequest,
    WebResponse,
    not_modified,
    warning_header,
)
from chalicelib.server.negotiate import choose, parse_accept
from chalicelib.server.resources import find_instances
from chalicelib.storage import ports

service = Service("rendered")

THUMBNAIL_SIZE = 128
THUMBNAIL_PREFIX = "thumbnails/"
UNAPPLIED_PARAMETERS = ("annotation", "iccprofile", "charset")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif"}


# Query parameters ---------------------------------------------------------------------------


def _single(request: WebRequest, name: str) -> str | None:
    values = request.query_values(name)
    if len(values) > 1:
        raise BadRequest(f"query parameter {name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _numbers(name: str, text: str, counts: tuple[int, ...]) -> list[float]:
    try:
        numbers = [float(p) for p in text.split(",")] if text.isascii() else []
    except ValueError:
        numbers = []
    if len(numbers) not in counts or not all(math.isfinite(n) for n in numbers):
        expected = " or ".join(str(c) for c in counts)
        raise BadRequest(f"{name}={text!r} must be {expected} comma-separated numbers")
    return numbers


def parse_window(text: str) -> Window:
    """`window=center,width,function`, PS3.18 §8.3.5.1.4 (Windowing, 2025b): three values, the
    function is not optional."""
    parts = [p.strip() for p in text.split(",")]
    function = parts.pop().lower() if len(parts) == 3 else ""
    if function not in WINDOW_FUNCTIONS:
        raise BadRequest(
            f"window={text!r} must be center,width,function (three values, PS3.18 §8.3.5.1.4) "
            f"with function one of {', '.join(WINDOW_FUNCTIONS)}, e.g. window=40,400,linear"
        )
    center, width = _numbers("window", ",".join(parts), (2,))
    minimum = 1 if function == "linear" else 0
    if width < minimum or width == 0:
        raise BadRequest(f"window={text!r}: the width must be >= 1 for linear, > 0 otherwise")
    return Window(center, width, WINDOW_FUNCTIONS[function])


def parse_viewport(text: str, max_size: int, max_crop: int) -> Viewport:
    """`viewport=vw,vh[,sx,sy,sw,sh]`, PS3.18 §8.3.5.1.3 (2025b); vw and vh at most `max_size`
    (`DicomWeb.MaxImageSize`), the source region at most `max_crop` pixels
    (`DicomWeb.MaxCropPixels`: a region past the image is allocated in full)."""
    numbers = _numbers("viewport", text, (2, 6))
    if any(n != int(n) for n in numbers):
        raise BadRequest(f"viewport={text!r} must be vw,vh or vw,vh,sx,sy,sw,sh (integers)")
    vw, vh, *source = (int(n) for n in numbers)
    if not (0 < vw <= max_size and 0 < vh <= max_size):
        raise BadRequest(
            f"viewport={text!r}: vw and vh must be between 1 and {max_size} (DicomWeb.MaxImageSize)"
        )
    if source:
        sx, sy, sw, sh = source
        if sx < 0 or sy < 0 or sw == 0 or sh == 0:
            raise BadRequest(f"viewport={text!r}: sx, sy must be >= 0 and sw, sh non-zero")
        if abs(sw * sh) > max_crop:
            raise BadRequest(
                f"viewport={text!r}: the source region sw x sh has {abs(sw * sh)} pixels, more "
                f"than {max_crop} (DicomWeb.MaxCropPixels)"
            )
        return Viewport(vw, vh, sx, sy, sw, sh)
    return Viewport(vw, vh)


def request_viewport(request: WebRequest, text: str) -> Viewport:
    """`parse_viewport` with this server's limits."""
    settings = request.context.settings
    return parse_viewport(text, settings.max_image_size, settings.max_crop_pixels)


def parse_quality(text: str | None, name: str = "quality") -> int:
    if text is None:
        return DEFAULT_QUALITY
    try:
        quality = int(text) if text.isascii() else 0  # int() takes "٣" too
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise BadRequest(f"{name}={text!r} must be an integer from 1 to 100")
    return quality


def choose_rendered_type(request: WebRequest, what: str) -> str:
    """The image type from the `accept` query parameter, else the Accept header."""
    media_type, _ = choose(parse_accept(request.accept), RENDERED_TYPES, what)
    return media_type


def unapplied_warning(
    request: WebRequest, parameters: tuple[str, ...] = UNAPPLIED_PARAMETERS
) -> dict[str, str]:
    """`Warning: 299` naming the accepted `parameters` this server does not apply."""
    names = [n for n in parameters if request.query_values(n)]
    text = f"{', '.join(names)}: accepted but not applied by this server"
    return warning_header(request.header("host", "-"), [text] if names else [])


def rendered_options(request: WebRequest) -> RenderOptions:
    window = _single(request, "window")
    viewport = _single(request, "viewport")
    return RenderOptions(
        media_type=choose_rendered_type(request, "a rendered resource"),
        window=parse_window(window) if window is not None else None,
        viewport=request_viewport(request, viewport) if viewport is not None else None,
        quality=parse_quality(_single(request, "quality")),
    )


# Choosing and rendering ---------------------------------------------------------------------


def _number(tags: ports.DicomJson, tag: str) -> float:
    try:
        return float(tags[tag]["Value"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.inf


def presentation_order(records: list[ports.InstanceRecord]) -> list[ports.InstanceRecord]:
    """Instances with Pixel Data by SeriesNumber, InstanceNumber, SOP Instance UID."""
    return sorted(
        (r for r in records if r.pixel),
        key=lambda r: (
            _number(r.series_tags, "00200011"),
            r.series_uid,
            _number(r.instance_tags, "00200013"),
            r.sop_uid,
        ),
    )


def frame_count(record: ports.InstanceRecord) -> int:
    return max(int(record.pixel.get("number_of_frames", 1) or 1), 1)


def parse_frame_number(text: str) -> int:
    try:
        frame = int(text)
    except ValueError:
        frame = 0
    if frame < 1 or str(frame) != text.strip():
        raise BadRequest(
            f"frame {text!r}: a rendered or thumbnail frame is one frame number from 1 "
            "(frame lists are not rendered here)"
        )
    return frame


def render_instance(
    request: WebRequest, record: ports.InstanceRecord, frame: int, options: RenderOptions
) -> bytes:
    """Render a frame of a stored instance; RenderError → 406, bad frame → 404."""
    from chalicelib.dicom.rendering import render, render_frame, renders_from_ranges
    from chalicelib.server.frames import FrameReader

    pixel = record.pixel
    if not pixel:
        raise NotAcceptable(
            f"instance {record.sop_uid} has no Pixel Data (7FE0,0010): it cannot be rendered; "
            "retrieve it as application/dicom"
        )
    blobs = request.context.blobs
    syntax = record.transfer_syntax_uid
    try:
        if renders_from_ranges(pixel, syntax):
            reader = FrameReader(request, record)
            if not 1 <= frame <= reader.count:
                raise FrameOutOfRange(
                    f"frame {frame} does not exist: NumberOfFrames is {reader.count}"
                )
            header = blobs.get_range(record.blob_key, 0, pixel["offset"])
            encapsulated = bool(pixel.get("encapsulated"))
            return render_frame(header, reader.stored(frame), syntax, frame, options, encapsulated)
        return render(blobs.get(record.blob_key), syntax, frame, options)
    except FrameOutOfRange as exc:
        raise NotFound(f"instance {record.sop_uid}: {exc}") from None
    except ImageTooLarge as exc:
        raise BadRequest(f"the asked image is too large to render: {exc}") from None
    except RenderError as exc:
        raise NotAcceptable(f"instance {record.sop_uid} cannot be rendered: {exc}") from None


def _first_renderable(records: list[ports.InstanceRecord], what: str) -> ports.InstanceRecord:
    ordered = presentation_order(records)
    if not ordered:
        raise NotAcceptable(f"{what} has no instance with Pixel Data, so nothing to render")
    return ordered[0]


def _answer(request: WebRequest, body: bytes, media_type: str) -> WebResponse:
    return deliver(request, WebResponse(200, body, unapplied_warning(request), media_type))


def _rendered(request: WebRequest, record: ports.InstanceRecord, frame: int) -> WebResponse:
    options = rendered_options(request)
    return _answer(request, render_instance(request, record, frame, options), options.media_type)


@service.route("/studies/{study}/rendered", "GET", scope="read")
def retrieve_rendered_study(request: WebRequest, study: str) -> WebResponse:
    record = _first_renderable(find_instances(request, study), f"study {study}")
    return _rendered(request, record, 1)


@service.route("/studies/{study}/series/{series}/rendered", "GET", scope="read")
def retrieve_rendered_series(request: WebRequest, study: str, series: str) -> WebResponse:
    record = _first_renderable(find_instances(request, study, series), f"series {series}")
    return _rendered(request, record, 1)


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/rendered", "GET", scope="read"
)
def retrieve_rendered_instance(
    request: WebRequest, study: str, series: str, instance: str
) -> WebResponse:
    (record,) = find_instances(request, study, series, instance)
    return _rendered(request, record, 1)


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    "GET",
    scope="read",
)
def retrieve_rendered_frame(
    request: WebRequest, study: str, series: str, instance: str, frames: str
) -> WebResponse:
    frame = parse_frame_number(frames)
    (record,) = find_instances(request, study, series, instance)
    return _rendered(request, record, frame)


# Thumbnails ---------------------------------------------------------------------------------


def thumbnail_keys(study: str, series: str | None = None, instance: str | None = None) -> list[str]:
    """The BlobStore keys of the cached thumbnails of a resource, one per media type."""
    path = "/".join(p for p in (study, series, instance) if p)
    return [f"{THUMBNAIL_PREFIX}{path}{ext}" for ext in _EXTENSIONS.values()]


def thumbnail_folder(study: str, series: str | None = None) -> str:
    """The BlobStore folder of the cached thumbnails of what a study or series holds."""
    return f"{THUMBNAIL_PREFIX}{'/'.join(p for p in (study, series) if p)}/"


def _version(request: WebRequest, study: str, series: str | None = None) -> int:
    """The study or series version, read before the records so a cache entry is never
    tagged newer than what it was made from; -1 when unknown (find_instances answers 404)."""
    index = request.context.index
    try:
        return index.get_series(study, series).version if series else index.get_study(study).version
    except ports.NotFound:
        return -1


def _thumbnail(
    request: WebRequest,
    record: ports.InstanceRecord,
    frame: int,
    cache: tuple[str, int] | None,
) -> WebResponse:
    """`cache`: (key without extension, version) of a cacheable default-size thumbnail.

    The ETag names what the image is made from: the chosen instance's blob key (never reused,
    so a delete and re-store changes it), the frame, the media type and the viewport; a
    matching `If-None-Match` answers 304 without rendering (RFC 9110 §13.1.2)."""
    viewport = _single(request, "viewport")
    media_type = choose_rendered_type(request, "a thumbnail")
    options = RenderOptions(
        media_type=media_type,
        viewport=(
            request_viewport(request, viewport)
            if viewport
            else Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
        ),
    )
    source = f"{record.blob_key}|{frame}|{media_type}|{viewport}"
    etag = f'"{hashlib.sha256(source.encode()).hexdigest()[:20]}"'
    headers = {"ETag": etag, "Vary": "Accept"}
    if not_modified(request, etag):
        return WebResponse(304, b"", headers)

    def produce() -> bytes:
        return render_instance(request, record, frame, options)

    if viewport is not None or cache is None:
        body = produce()
    else:
        key = cache[0] + _EXTENSIONS[media_type]
        body = versioned(request.context.blobs, key, str(cache[1]), produce)
    response = _answer(request, body, media_type)
    response.headers.update(headers)
    return response


@service.route("/studies/{study}/thumbnail", "GET", scope="read")
def retrieve_study_thumbnail(request: WebRequest, study: str) -> WebResponse:
    version = _version(request, study)
    ordered = presentation_order(find_instances(request, study))
    if not ordered:
        raise NotAcceptable(f"study {study} has no instance with Pixel Data: no thumbnail")
    first_series = [r for r in ordered if r.series_uid == ordered[0].series_uid]
    record = first_series[len(first_series) // 2]
    key = thumbnail_keys(study)[0].removesuffix(".jpg")
    return _thumbnail(request, record, frame_count(record) // 2 + 1, (key, version))


@service.route("/studies/{study}/series/{series}/thumbnail", "GET", scope="read")
def retrieve_series_thumbnail(request: WebRequest, study: str, series: str) -> WebResponse:
    version = _version(request, study, series)
    ordered = presentation_order(find_instances(request, study, series))
    if not ordered:
        raise NotAcceptable(f"series {series} has no instance with Pixel Data: no thumbnail")
    record = ordered[len(ordered) // 2]
    key = thumbnail_keys(study, series)[0].removesuffix(".jpg")
    return _thumbnail(request, record, frame_count(record) // 2 + 1, (key, version))


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail", "GET", scope="read"
)
def retrieve_instance_thumbnail(
    request: WebRequest, study: str, series: str, instance: str
) -> WebResponse:
    version = _version(request, study, series)
    (record,) = find_instances(request, study, series, instance)
    key = thumbnail_keys(study, series, instance)[0].removesuffix(".jpg")
    return _thumbnail(request, record, frame_count(record) // 2 + 1, (key, version))


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
    "GET",
    scope="read",
)
def retrieve_frame_thumbnail(
    request: WebRequest, study: str, series: str, instance: str, frames: str
) -> WebResponse:
    frame = parse_frame_number(frames)
    (record,) = find_instances(request, study, series, instance)
    return _thumbnail(request, record, frame, None)
