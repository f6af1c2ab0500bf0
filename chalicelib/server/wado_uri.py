"""WADO-URI: Retrieve DICOM Objects by URI, PS3.18 §9 (URI Service, 2025b).

Served at `DicomWeb.WadoRoot` (default `/wado`) when `DicomWeb.EnableWado` is true.
`requestType=WADO` and `objectUID` are required (400 with a message otherwise); the standard
also requires `studyUID` and `seriesUID`: as a documented extension compatible with Orthanc,
`objectUID` alone is accepted, and a given study or series UID that does not match the stored
instance answers 404.

`contentType` (§9.4.1.6) is a q-weighted list of application/dicom, image/jpeg, image/png,
image/gif; without it the Accept header decides, and `*/*` (or nothing) gives image/jpeg for
an image and application/dicom for an instance without Pixel Data (§9.3). application/dicom
answers use `transferSyntax` (§9.4.2.4), by default Explicit VR Little Endian: the stored bytes
unchanged when they already are, a transcoded file otherwise, 406 for a syntax that this
server cannot produce. Image answers honour `frameNumber`, `rows`, `columns`, `region`,
`windowCenter`/`windowWidth` and `imageQuality`; `anonymize=yes` is answered 400 (not
implemented); `annotation`, `charset`, `presentationUID` and `presentationSeriesUID` are
accepted, not applied, and named in a `Warning: 299` header. An answer over `InlineLimit`
goes through S3 and `303 See Other` like every large answer (server/delivery.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.rendering import RENDERED_TYPES, RenderOptions, Viewport, Window
from chalicelib.errors import BadRequest, NotFound
from chalicelib.server.delivery import StoredObject, deliver
from chalicelib.server.http import Service, WebRequest, WebResponse
from chalicelib.server.negotiate import choose, parse_accept
from chalicelib.server.rendered import (
    frame_count,
    parse_quality,
    render_instance,
    unapplied_warning,
)
from chalicelib.storage import ports

service = Service("wado-uri")

DICOM = "application/dicom"
UNAPPLIED_PARAMETERS = ("annotation", "charset", "presentationUID", "presentationSeriesUID")


@dataclass(frozen=True)
class WadoUriQuery:
    object_uid: str
    study_uid: str | None = None
    series_uid: str | None = None
    content_type: str | None = None
    transfer_syntax: str | None = None
    """None: Explicit VR Little Endian, the default of §9.4.2.4."""
    frame: int = 1
    rows: int | None = None
    columns: int | None = None
    region: tuple[float, float, float, float] | None = None
    window: Window | None = None
    quality: int = 90


def _one(request: WebRequest, name: str) -> str | None:
    values = request.query_values(name)
    if len(values) > 1:
        raise BadRequest(f"WADO-URI parameter {name} is given {len(values)} times; give it once")
    return values[0].strip() if values else None


def _positive(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # not "²" or "٣"
        raise BadRequest(f"WADO-URI parameter {name}={text!r} must be a positive integer")
    return int(text)


def _image_side(name: str, text: str | None, limit: int) -> int | None:
    """`rows` / `columns`, PS3.18 §9.3.4 (2025b), at most `limit` (`DicomWeb.MaxImageSize`)."""
    value = _positive(name, text)
    if value is not None and value > limit:
        raise BadRequest(
            f"WADO-URI parameter {name}={value} is larger than {limit} (DicomWeb.MaxImageSize)"
        )
    return value


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"WADO-URI parameter {name}={text!r} is not a number") from None


def _region(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    values = [_float("region", p) for p in parts] if len(parts) == 4 else []
    if len(values) != 4 or not all(0 <= v <= 1 for v in values):
        raise BadRequest(
            f"WADO-URI parameter region={text!r} must be xmin,ymin,xmax,ymax from 0.0 to 1.0"
        )
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise BadRequest(f"WADO-URI parameter region={text!r}: xmax > xmin and ymax > ymin")
    return x0, y0, x1, y1


def _window(center: str | None, width: str | None) -> Window | None:
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise BadRequest("WADO-URI parameters windowCenter and windowWidth go together")
    window = Window(_float("windowCenter", center), _float("windowWidth", width))
    if window.width < 1:
        raise BadRequest(f"WADO-URI parameter windowWidth={width!r} must be at least 1")
    return window


def parse_query(request: WebRequest) -> WadoUriQuery:
    """The WADO-URI parameters of PS3.18 §9.4 (2025b), checked once."""
    request_type = _one(request, "requestType")
    if request_type is None:
        raise BadRequest("WADO-URI parameter requestType is missing; it must be WADO")
    if request_type != "WADO":
        raise BadRequest(f"WADO-URI parameter requestType={request_type!r} must be WADO")
    object_uid = _one(request, "objectUID")
    if not object_uid:
        raise BadRequest("WADO-URI parameter objectUID (the SOP Instance UID) is missing")
    if (_one(request, "anonymize") or "").lower() == "yes":
        raise BadRequest("WADO-URI anonymize=yes is not implemented by this server")
    syntax = _one(request, "transferSyntax") or None
    if syntax is not None and not is_valid_uid(syntax):
        raise BadRequest(f"WADO-URI parameter transferSyntax={syntax!r} is not a UID")
    return WadoUriQuery(
        object_uid=object_uid,
        study_uid=_one(request, "studyUID"),
        series_uid=_one(request, "seriesUID"),
        content_type=_one(request, "contentType"),
        transfer_syntax=syntax,
        frame=_positive("frameNumber", _one(request, "frameNumber")) or 1,
        rows=_image_side("rows", _one(request, "rows"), request.context.settings.max_image_size),
        columns=_image_side(
            "columns", _one(request, "columns"), request.context.settings.max_image_size
        ),
        region=_region(_one(request, "region")),
        window=_window(_one(request, "windowCenter"), _one(request, "windowWidth")),
        quality=parse_quality(_one(request, "imageQuality"), "imageQuality"),
    )


def locate(request: WebRequest, query: WadoUriQuery) -> ports.InstanceRecord:
    """The stored instance; 404 when unknown or under another study or series than given."""
    if not is_valid_uid(query.object_uid):
        raise NotFound(f"objectUID '{query.object_uid[:80]}' is not a valid UID")
    try:
        record = request.context.index.find_instance(query.object_uid)
    except ports.NotFound:
        raise NotFound(f"no instance {query.object_uid} is stored here") from None
    for name, given, stored in (
        ("studyUID", query.study_uid, record.study_uid),
        ("seriesUID", query.series_uid, record.series_uid),
    ):
        if given and given != stored:
            raise NotFound(f"instance {query.object_uid} is not in the {name} {given}")
    return record


def choose_content_type(request: WebRequest, query: WadoUriQuery, has_pixels: bool) -> str:
    offers = ("image/jpeg", DICOM, *RENDERED_TYPES[1:]) if has_pixels else (DICOM,)
    accept = query.content_type if query.content_type else request.header("accept")
    media_type, _ = choose(parse_accept(accept), offers, "this WADO-URI object")
    return media_type


def _dicom_answer(
    request: WebRequest, record: ports.InstanceRecord, syntax: str | None
) -> bytes | StoredObject:
    # One conversion rule for WADO-RS and WADO-URI: the stored file when it already is in
    # the syntax asked for (streamed from the file where the transport can), Explicit VR
    # Little Endian through transcoding, else 406.
    # Imported here: pydicom (and numpy, Pillow) only for the answers that need them.
    from chalicelib.dicom.encoding import EXPLICIT_VR_LITTLE_ENDIAN
    from chalicelib.server.wado_rs import instance_body

    file = ports.InstanceFile.of(record)
    return instance_body(request, file, syntax or EXPLICIT_VR_LITTLE_ENDIAN)


@service.route("/", "GET", scope="read")
def retrieve_wado_uri(request: WebRequest) -> WebResponse:
    query = parse_query(request)
    record = locate(request, query)
    media_type = choose_content_type(request, query, bool(record.pixel))
    headers = unapplied_warning(request, UNAPPLIED_PARAMETERS)
    if media_type == DICOM:
        body = _dicom_answer(request, record, query.transfer_syntax)
        return deliver(request, WebResponse(200, body, headers, DICOM))
    if query.frame > frame_count(record):
        raise BadRequest(
            f"WADO-URI frameNumber={query.frame}: instance {record.sop_uid} has "
            f"{frame_count(record)} frame(s)"
        )
    sized = query.rows is not None or query.columns is not None
    options = RenderOptions(
        media_type=media_type,
        window=query.window,
        viewport=Viewport(query.columns, query.rows) if sized else None,
        region=query.region,
        quality=query.quality,
    )
    body = render_instance(request, record, query.frame, options)
    return deliver(request, WebResponse(200, body, headers, media_type))
