"""Accept header parsing and media type selection, PS3.18 §8.7 (2025b).

`parse_accept` reads the list (q-values, quoted or unquoted parameters, wildcards); a service
then offers what it can produce and `choose` picks the client's most preferred one: the
highest q wins, ties go to the service's order of offers (its default first), then to header
order; q=0 excludes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.dicom.multipart import MediaType, parse_media_type
from chalicelib.errors import BadRequest, NotAcceptable


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
    """The Accept members with their q-values; an empty header means `*/*`."""
    entries = []
    for position, member in enumerate(_split_members(header or "*/*")):
        media = parse_media_type(member)
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


def choose(
    entries: Sequence[AcceptEntry], offers: Sequence[str], what: str
) -> tuple[str, AcceptEntry]:
    """The offered media type the client prefers, and the Accept entry that chose it.

    `offers` are plain media types in the service's order of preference. Raise NotAcceptable
    listing the offers when none is acceptable.
    """
    best: tuple[float, int, int, str, AcceptEntry] | None = None
    for entry in entries:
        if entry.q <= 0:
            continue
        for rank, offer in enumerate(offers):
            if type_matches(entry.media.type, offer):
                key = (-entry.q, rank, entry.position, offer, entry)
                if best is None or key[:3] < best[:3]:
                    best = key
    if best is None:
        raise NotAcceptable(
            f"{what} can be answered as {', '.join(offers)}; the Accept header allows none of them"
        )
    return best[3], best[4]


def excluded(entries: Sequence[AcceptEntry], media_type: str) -> bool:
    """True when an explicit q=0 entry names this exact type."""
    return any(e.q <= 0 and e.media.type == media_type for e in entries)
