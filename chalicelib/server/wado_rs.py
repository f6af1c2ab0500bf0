"""WADO-RS: Retrieve Study, Series and Instance, PS3.18 §10.4 (Retrieve Transaction, 2025b).

Answers `multipart/related; type="application/dicom"`, one Part-10 file per part with its
`Content-Location`. Transfer syntax per PS3.18 §8.7.3 (2025b): `transfer-syntax=*` sends the
stored bytes, except that Implicit VR Little Endian, Explicit VR Big Endian and files without
File Meta go out as Explicit VR Little Endian (which §8.7.3 requires); no transfer syntax
asked means Explicit VR Little Endian, decoding compressed sources with pydicom's plugins, and
a lossy source that cannot be decoded goes out as stored (§8.7.3.4 Note 2). Other transfer
syntaxes are transcoded where pydicom can encode them (RLE Lossless, JPEG-LS Lossless,
JPEG 2000 Lossless: `transcode.to_transfer_syntax`), otherwise 406. An instance that cannot
be converted goes as stored only when it is fit for the web and the Accept allows its transfer
syntax (`transcode_part`); else it is the answer's 406 as its first part, and left out as a
later one (`delivery.StreamedMultipart`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from chalicelib.dicom.encoding import EXPLICIT_VR_LITTLE_ENDIAN, NOT_FOR_WEB
from chalicelib.dicom.multipart import multipart_content_type, new_boundary
from chalicelib.errors import NotAcceptable
from chalicelib.server.delivery import (
    BlobRange,
    LazyPart,
    Part,
    StoredObject,
    StreamedMultipart,
    deliver,
)
from chalicelib.server.http import Service, WebRequest, WebResponse
from chalicelib.server.negotiate import (
    AcceptEntry,
    accept_category,
    best_match,
    parse_accept,
    part_type,
    type_matches,
)
from chalicelib.server.resources import find_instance_files, instance_url
from chalicelib.storage.ports import InstanceFile

service = Service("wado-rs")

ANY_SYNTAX = "*"
_DICOM = "application/dicom"


@dataclass
class DicomAccept:
    transfer_syntax: str
    """A transfer syntax UID, or `*` for the stored one: the one the client prefers."""
    accepted: frozenset[str]
    """Every transfer syntax an acceptable (q > 0) member names, `*` included, whatever its
    q: a stored form the client accepts for an instance that cannot be converted."""

    def allows(self, syntax: str) -> bool:
        return ANY_SYNTAX in self.accepted or syntax in self.accepted


def negotiate_dicom(entries: list[AcceptEntry]) -> DicomAccept:
    """The transfer syntax the client prefers for application/dicom parts.

    Accepted members: `multipart/related` with `type="application/dicom"` (or no type),
    `application/dicom`, and wildcards; the highest q wins, then header order. DICOM and
    rendered media types together are 400 (PS3.18 §8.7.5, `accept_category`); rendered ones
    alone are 406, since a study, series or instance has no rendered representation of its
    own (its `/rendered` resource has, PS3.18 §10.4.1.1.3, 2025b).
    """
    category = accept_category(entries)
    found = best_match(entries, [_DICOM], _fits_dicom)
    if found is None:
        hint = ""
        if category == "rendered":
            hint = (
                "; the Accept header names rendered media types only: GET the resource's "
                ".../rendered URL for a rendered image (PS3.18 §8.7.4, §10.4.1.1.3)"
            )
        raise NotAcceptable(
            'this resource is available as multipart/related; type="application/dicom" '
            f"(transfer-syntax=* or a transfer syntax UID); the Accept header allows none{hint}"
        )
    accepted = frozenset(
        _syntax_of(entry) for entry in entries if entry.q > 0 and _fits_dicom(entry, _DICOM)
    )
    return DicomAccept(_syntax_of(found[1]), accepted)


def _syntax_of(entry: AcceptEntry) -> str:
    """The member's transfer syntax: Explicit VR Little Endian when it names none (PS3.18
    §8.7.3.3.1, 2025b)."""
    return entry.media.params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)


def _fits_dicom(entry: AcceptEntry, offer: str) -> bool:
    """`multipart/related` with `type` `offer` (or none), or `offer` itself, or a wildcard."""
    media = entry.media
    if media.type == "multipart/related":
        return type_matches(part_type(media, offer), offer)
    return type_matches(media.type, offer)


def _web_ready(file: InstanceFile) -> bool:
    """The stored file may go on the web as it is: it has File Meta and its transfer syntax
    is not one that §8.7.3 (PS3.18 2025b) keeps off the web (`NOT_FOR_WEB`)."""
    return file.has_file_meta and file.transfer_syntax_uid not in NOT_FOR_WEB


def _sent_as_stored(file: InstanceFile, wanted: str) -> bool:
    """The stored file is the answer to a request for transfer syntax `wanted`."""
    return wanted in (ANY_SYNTAX, file.transfer_syntax_uid) and _web_ready(file)


def instance_part(request: WebRequest, file: InstanceFile, accept: DicomAccept) -> Part | LazyPart:
    """One instance's part: the stored file itself when its transfer syntax is the one to send,
    else a part that transcodes it when built (`transcode_part`)."""
    if _sent_as_stored(file, accept.transfer_syntax):
        headers = _part_headers(request, file, file.transfer_syntax_uid)
        return headers, BlobRange(file.blob_key, 0, file.size)
    return lambda: transcode_part(request, file, accept)


def instance_body(request: WebRequest, file: InstanceFile, wanted: str) -> bytes | StoredObject:
    """One instance's file as a whole answer (WADO-URI): the stored object when it goes out
    as stored, else the converted bytes."""
    if _sent_as_stored(file, wanted):
        return StoredObject(request.context.blobs, BlobRange(file.blob_key, 0, file.size))
    return transcode_part(request, file, DicomAccept(wanted, frozenset({wanted})))[1]


def transcode_part(
    request: WebRequest, file: InstanceFile, accept: DicomAccept
) -> tuple[dict[str, str], bytes]:
    """The instance converted to the transfer syntax `accept` prefers. An instance that cannot
    be converted goes as stored (its part's Content-Type names its transfer syntax) only when
    the stored file may go on the web (`_web_ready`) and the Accept allows its transfer
    syntax (`*`, or a member naming it at any q), or when it is compressed and Explicit VR
    Little Endian was asked for (§8.7.3.4 Note 2); else NotAcceptable naming the way out.
    Where the preferred syntax cannot be made and the Accept also takes Explicit VR Little
    Endian (at a lower q), that is tried first."""
    from pydicom.uid import UID

    from chalicelib.dicom.transcode import (
        TranscodeError,
        to_explicit_little_endian,
        to_transfer_syntax,
    )

    data = request.context.blobs.get(file.blob_key)
    stored, wanted = file.transfer_syntax_uid, accept.transfer_syntax
    to_explicit = wanted in (ANY_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN)
    try:
        if to_explicit:
            return _part_headers(request, file, EXPLICIT_VR_LITTLE_ENDIAN), (
                to_explicit_little_endian(data, stored)
            )
        return _part_headers(request, file, wanted), to_transfer_syntax(data, stored, wanted)
    except TranscodeError as exc:
        if not to_explicit and EXPLICIT_VR_LITTLE_ENDIAN in accept.accepted:
            with contextlib.suppress(TranscodeError):  # the Accept's next choice
                return _part_headers(request, file, EXPLICIT_VR_LITTLE_ENDIAN), (
                    to_explicit_little_endian(data, stored)
                )
        compressed = UID(stored).is_transfer_syntax and UID(stored).is_compressed
        if _web_ready(file) and (accept.allows(stored) or (to_explicit and compressed)):
            return _part_headers(request, file, stored), data
        if not _web_ready(file):
            way_out = "its stored form is not sent on the web (PS3.18 §8.7.3, 2025b)"
        elif to_explicit:
            way_out = "ask for transfer-syntax=* to get it as stored"
        else:
            way_out = f"ask for transfer-syntax=* or {EXPLICIT_VR_LITTLE_ENDIAN}"
        raise NotAcceptable(
            f"instance {file.sop_uid} is stored as {stored}: {exc}; {way_out}"
        ) from None


def _part_headers(request: WebRequest, file: InstanceFile, syntax: str) -> dict[str, str]:
    return {
        "Content-Type": f"application/dicom; transfer-syntax={syntax}",
        "Content-Location": instance_url(request, file.study_uid, file.series_uid, file.sop_uid),
    }


def retrieve_instances(request: WebRequest, files: list[InstanceFile]) -> WebResponse:
    """The instances as one multipart answer in the listing's order, streamed where the
    transport can (`delivery.StreamedMultipart`)."""
    accept = negotiate_dicom(parse_accept(request.accept))
    parts = [instance_part(request, file, accept) for file in files]
    body = StreamedMultipart(request.context.blobs, parts, new_boundary())
    content_type = multipart_content_type("application/dicom", body.boundary)
    return deliver(request, WebResponse(200, body, {}, content_type))


@service.route("/studies/{study}", "GET", scope="read")
def retrieve_study(request: WebRequest, study: str) -> WebResponse:
    return retrieve_instances(request, find_instance_files(request, study))


@service.route("/studies/{study}/series/{series}", "GET", scope="read")
def retrieve_series(request: WebRequest, study: str, series: str) -> WebResponse:
    return retrieve_instances(request, find_instance_files(request, study, series))


@service.route("/studies/{study}/series/{series}/instances/{instance}", "GET", scope="read")
def retrieve_instance(request: WebRequest, study: str, series: str, instance: str) -> WebResponse:
    return retrieve_instances(request, find_instance_files(request, study, series, instance))
