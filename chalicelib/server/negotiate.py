"""Accept header parsing and media type selection, PS3.18 §8.7 (2025b).

`parse_accept` reads the list (q-values, quoted or unquoted parameters, wildcards); a service
then offers what it can produce and `choose` picks the client's most preferred one: the
highest q wins, ties go to the service's order of offers (its default first), then to header
order; q=0 excludes. `accept_category` applies the §8.7.5 rule that one Accept names DICOM or
Rendered Media Types, not both, for every service that answers DICOM Media Types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from chalicelib.dicom.multipart import MediaType, parse_media_type
from chalicelib.errors import BadRequest, NotAcceptable

OCTET_STREAM = "application/octet-stream"

Category = Literal["dicom", "rendered"]
Offer = TypeVar("Offer")

DICOM_MEDIA_TYPES = frozenset(
    {"application/dicom", "application/dicom+json", "application/dicom+xml", OCTET_STREAM}
)
"""The DICOM Media Type names other than pixel data, PS3.18 §8.7.3.5 (2025b)."""
PIXEL_DATA_MEDIA_TYPES = frozenset(
    {
        "image/jpeg", "image/dicom-rle", "image/jls", "image/jp2", "image/jpx", "image/jphc",
        "image/jxl", "video/mpeg", "video/mp4", "video/h265",
    }
)  # fmt: skip
"""`image-pixel` and `video-pixel` of PS3.18 §8.7.3.5 (2025b): Bulkdata Media Types on a Frames
or Bulkdata resource (Table 8.7.3-5), Rendered Media Types on any other (`rendered`)."""
RENDERED_MEDIA_TYPES = frozenset(
    {
        "image/gif", "image/png", "image/jph", "text/html", "text/plain", "text/xml",
        "text/rtf", "application/pdf",
    }
)  # fmt: skip
"""The rest of Table 8.7.4-1 (Rendered Media Types by Resource Category, PS3.18 2025b), with
image/jph, which the §8.7.4 text of later editions (2025e) lists too."""


@dataclass
class AcceptEntry:
    media: MediaType
    q: float
    position: int


def _split_members(header: str) -> list[str]:
    """Split at commas outside quoted strings."""
    members, current, quoted, escaped = [], [], False, False
    for char in header:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            members.append("".join(current))
            current = []
            continue
        current.append(char)
    members.append("".join(current))
    return [m.strip() for m in members if m.strip()]


def parse_accept(header: str) -> list[AcceptEntry]:
    """The Accept members with their q-values; an empty header means `*/*`. A `multipart/*`
    member is read as `multipart/related` with its parameters (a service's default `type` when
    it has none): the range includes multipart/related (RFC 9110 §12.5.1, Accept), the one
    multipart type DICOMweb answers (PS3.18 §8.7.3, 2025b)."""
    entries = []
    for position, member in enumerate(_split_members(header or "*/*")):
        media = parse_media_type(member)
        if media.type == "multipart/*":
            media.type = "multipart/related"
        q_text = media.params.pop("q", "1")
        try:
            q = float(q_text)
        except ValueError:
            raise BadRequest(f"Accept: q-value {q_text!r} of {member!r} is not a number") from None
        if not 0 <= q <= 1:
            raise BadRequest(f"Accept: q-value {q} of {member!r} is outside 0..1")
        if "/" not in media.type:
            raise BadRequest(f"Accept: {member!r} is not a media type (type/subtype)")
        entries.append(AcceptEntry(media, q, position))
    return entries


def type_matches(pattern: str, media_type: str) -> bool:
    """`*/*`, `image/*` or an exact type."""
    if pattern == "*/*" or pattern == media_type:
        return True
    major, _, minor = pattern.partition("/")
    return minor == "*" and media_type.startswith(major + "/")


def part_type(media: MediaType, default: str) -> str:
    """The `type` of a `multipart/related` member (lower case), `default` when it has none."""
    return media.params.get("type", default).lower()


def best_match(
    entries: Sequence[AcceptEntry],
    offers: Sequence[Offer],
    fits: Callable[[AcceptEntry, Offer], bool],
) -> tuple[Offer, AcceptEntry] | None:
    """The offer the client prefers among those an Accept entry `fits`, and that entry; None
    when none fits. The highest q wins, ties go to the service's order of `offers` (its
    default first), then to header order; q=0 entries accept nothing."""
    best: tuple[tuple[float, int, int], Offer, AcceptEntry] | None = None
    for entry in entries:
        if entry.q <= 0:
            continue
        for rank, offer in enumerate(offers):
            key = (-entry.q, rank, entry.position)
            if (best is None or key < best[0]) and fits(entry, offer):
                best = (key, offer, entry)
    return None if best is None else (best[1], best[2])


def choose(
    entries: Sequence[AcceptEntry], offers: Sequence[str], what: str
) -> tuple[str, AcceptEntry]:
    """The offered media type the client prefers, and the Accept entry that chose it.

    `offers` are plain media types in the service's order of preference. Raise NotAcceptable
    listing the offers when none is acceptable.
    """
    found = best_match(entries, offers, lambda entry, offer: type_matches(entry.media.type, offer))
    if found is None:
        raise NotAcceptable(
            f"{what} can be answered as {', '.join(offers)}; the Accept header allows none of them"
        )
    return found


def media_category(media: MediaType, bulkdata: bool) -> Category | None:
    """Whether an Accept member names a DICOM or a Rendered Media Type (PS3.18 §8.7.3.5,
    §8.7.4, 2025b); None for wildcards, a `multipart/related` without `type`, and types of
    neither set (the service ignores those, §8.7.7).

    A multipart member is classified by its `type` parameter (`dcm-mp-mt-name` is a DICOM
    Media Type name or a rendered one). The image and video types that are both (image/jpeg,
    image/jp2, video/mp4, ...) depend on the target: on a Frames or Bulkdata resource
    (`bulkdata`) they are Bulkdata Media Types, the stored bitstream without rendering
    (§8.7.3.3.2, and §8.7.4's note that the same types serve both), single part as well as
    multipart; elsewhere only a rendering could produce them.
    """
    name = media.type
    if name == "multipart/related":
        name = media.params.get("type", "*/*").lower()
    if "*" in name:
        return None
    if name in DICOM_MEDIA_TYPES or (bulkdata and name in PIXEL_DATA_MEDIA_TYPES):
        return "dicom"
    if name in PIXEL_DATA_MEDIA_TYPES or name in RENDERED_MEDIA_TYPES:
        return "rendered"
    return None


def accept_category(entries: Sequence[AcceptEntry], bulkdata: bool = False) -> Category | None:
    """The one category of media types the acceptable (q > 0) members name: None when they
    name neither (wildcards, other types). Raise BadRequest when they name both: "The
    Acceptable Media Types shall be either DICOM Media Types or Rendered Media Types, but not
    both", PS3.18 §8.7.5 (Acceptable Media Types, 2025b). `bulkdata`: see `media_category`.
    """
    found: dict[Category, str] = {}
    for entry in entries:
        category = media_category(entry.media, bulkdata) if entry.q > 0 else None
        if category is not None:
            found.setdefault(category, str(entry.media))
    if len(found) == 2:
        raise BadRequest(
            f"Accept mixes the DICOM media type {found['dicom']!r} with the rendered media "
            f"type {found['rendered']!r}; ask for one kind (PS3.18 §8.7.5), and for rendered "
            "images use the .../rendered resource"
        )
    return next(iter(found), None)
