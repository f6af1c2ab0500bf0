"""Parse a QIDO-RS request's query into a typed `QidoQuery`, PS3.18 §8.3.4 and §10.6 (2025b).

Pure: no HTTP, no storage. A malformed value of a known parameter raises `InvalidQuery` naming
the parameter, the value and the rule; an unknown parameter is ignored with a warning text for
a `Warning: 299` header (see `server.http.warning_header`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.matching import (
    MULTIPLE_VALUE_VRS,
    NUMERIC_VRS,
    RANGE_VRS,
    WILDCARD_VRS,
    combine_date_time,
    has_wildcard,
    normalize_bound,
)
from chalicelib.dicom.query import (
    UNSIGNED_INT,
    AttributeMatch,
    InvalidQuery,
    MatchKind,
    QidoQuery,
)
from chalicelib.dicom.tags import KEYWORDS, Level, lookup_keyword, lookup_tag


def parse_query_string(raw: str) -> list[tuple[str, str]]:
    """Split a raw query string into (name, value) pairs, in order, keeping repeated names.

    Percent-escapes are decoded and `+` becomes a space (a literal `+`, as in a timezone
    offset, must be sent as `%2B`). Empty segments are dropped: Weasis sends `?&includefield=`.
    """
    pairs = []
    for segment in raw.split("&"):
        if segment:
            name, _, value = segment.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def _printable(name: str) -> str:
    """A client-supplied name made safe for a header: ASCII, no control characters."""
    return ascii(name[:64])[1:-1]


_NOT_SEARCHABLE = (
    "names a command, file meta or directory element (groups 0000-0006), not an attribute of "
    "the stored datasets a search returns"
)


def _ignored(name: str, why: str) -> str:
    return f"The parameter '{_printable(name)}' {why} and was ignored"


def _boolean(name: str, value: str) -> bool:
    lowered = value.lower()  # ABNF quoted strings are case-insensitive (RFC 5234 §2.3)
    if lowered not in ("true", "false"):
        raise InvalidQuery(
            f"Query parameter {name}='{value}' must be 'true' or 'false' (PS3.18 Table 8.3.4-1)"
        )
    return lowered == "true"


def _uint(name: str, value: str) -> int:
    if not UNSIGNED_INT.fullmatch(value):
        raise InvalidQuery(
            f"Query parameter {name}='{value}' must be a non-negative integer (PS3.18 §8.3.4.4)"
        )
    return int(value)


@dataclass(frozen=True)
class _Attribute:
    tags: tuple[str, ...]
    keyword: str
    vr: str


def _resolve(name: str) -> _Attribute | None:
    """An attribute path (PS3.18 §8.3.4.1): dotted keywords or tags; None if unknown."""
    tags, keywords, vr = [], [], ""
    for part in name.split("."):
        if vr and vr != "SQ":
            raise InvalidQuery(
                f"Query parameter '{name}': {keywords[-1]} is not a sequence, so it cannot be "
                "followed by '.' and an item attribute (PS3.18 §8.3.4.1)"
            )
        if re.fullmatch(r"[0-9A-Fa-f]{8}", part):
            found = lookup_tag(part)
            if found is None:
                return None
            tag, (keyword, vr) = part.upper(), found
        else:
            found = lookup_keyword(part)
            if found is None:
                return None
            (tag, vr), keyword = found, part
        tags.append(tag)
        keywords.append(keyword)
    return _Attribute(tuple(tags), ".".join(keywords), vr)


_MODALITY = _Attribute(("00080060",), "Modality", "CS")
_MODALITIES_IN_STUDY = _Attribute(("00080061",), "ModalitiesInStudy", "CS")
_AS_MODALITIES_IN_STUDY = (
    "(0008,0060) Modality is a series attribute, not a key of a search for studies "
    "(PS3.18 §10.6.1); it was matched as (0008,0061) ModalitiesInStudy"
)
"""OHIF and other viewers send `Modality` to search for studies. A study search matches
Patient and Study IE attributes and Additional Query/Retrieve Attributes only (PS3.18 §10.6.1
(2025b); stated outright in §6.7.1.1 of 2015c), so as a non-standard extension we match it
against the study's ModalitiesInStudy (the distinct Modality values of its series, PS3.4
§C.3.4) and say so in a Warning."""


def _label(attribute: _Attribute) -> str:
    tag = attribute.tags[-1]
    return f"({tag[:4]},{tag[4:]}) {attribute.keyword}"


def _uid_list(attribute: _Attribute, value: str) -> tuple[str, ...]:
    # PS3.18 §8.3.4.1 separates a UID list with commas; OHIF sends backslashes (the DICOM value
    # separator), which we accept too as an extension.
    uids = tuple(u.strip(" ") for u in re.split(r"[,\\]", value))
    for uid in uids:
        if has_wildcard(uid):
            raise InvalidQuery(
                f"{_label(attribute)} '{value}': wild cards are not allowed on a UID "
                "(PS3.4 §C.2.2.2.4); give a UID or a comma-separated list of UIDs"
            )
        if not is_valid_uid(uid):
            raise InvalidQuery(
                f"{_label(attribute)} '{uid}' is not a valid UID (digits and dots, at most "
                "64 characters, PS3.5 §9.1)"
            )
    return uids


def _range(attribute: _Attribute, value: str) -> tuple[str, str]:
    """The bounds of a DA, TM or DT key; a single value is the range of its own period."""
    vr = attribute.vr
    if "\\" in value or "," in value or has_wildcard(value):
        raise InvalidQuery(
            f"{_label(attribute)} '{value}': a {vr} key is one value or one range 'a-b', "
            "'-b' or 'a-', without wild cards or lists (PS3.4 §C.2.2.2.5)"
        )
    if normalize_bound(vr, value, upper=False) is not None:
        return value, value
    # Try each '-' as the range separator: a DT bound may itself end with a '-ZZXX' offset.
    for at in (i for i, c in enumerate(value) if c == "-"):
        low, high = value[:at], value[at + 1 :]
        start = normalize_bound(vr, low, upper=False) if low else ""
        end = normalize_bound(vr, high, upper=True) if high else ""
        if start is None or end is None or not (low or high):
            continue
        if start and end and start > end:
            raise InvalidQuery(f"{_label(attribute)} '{value}': the range ends before it starts")
        return low, high
    formats = {"DA": "YYYYMMDD", "TM": "HH[MM[SS[.FFFFFF]]]", "DT": "YYYY[MM[DD[HH[MM[SS]]]]]"}
    raise InvalidQuery(
        f"{_label(attribute)} '{value}' is not a {vr} value or range; use {formats[vr]}, "
        "'a-b', '-b' or 'a-' (PS3.4 §C.2.2.2.5)"
    )


def _build_match(
    attribute: _Attribute, value: str, *, empty_value: bool, multiple_value: bool
) -> AttributeMatch:
    """One parsed leaf key, PS3.4 §C.2.2.2 (2025b)."""
    tag, vr = attribute.tags[-1], attribute.vr

    def build(
        kind: MatchKind, values: tuple[str, ...] = (), all_values: bool = False
    ) -> AttributeMatch:
        return AttributeMatch(tag, attribute.keyword, vr, kind, values, all_values)

    if value == "":
        return build("universal")
    if empty_value and value == '""':
        return build("empty")
    if vr == "SQ":
        raise InvalidQuery(
            f"{_label(attribute)} is a sequence: give it an empty value to return it, or match "
            f"an item attribute as {attribute.keyword}.<keyword> (PS3.4 §C.2.2.2.6)"
        )
    if vr == "UI":
        return build("uids", _uid_list(attribute, value))
    if vr in RANGE_VRS:
        return build("range", _range(attribute, value))
    values = tuple(value.split("\\")) if vr in MULTIPLE_VALUE_VRS | NUMERIC_VRS else (value,)
    if vr in NUMERIC_VRS:
        for number in values:
            try:
                float(number)
            except ValueError:
                raise InvalidQuery(
                    f"{_label(attribute)} '{value}' is not a number, as its VR {vr} requires; "
                    "wild cards and ranges are not allowed on numbers (PS3.4 §C.2.2.2)"
                ) from None
        return build("single", values)
    wildcard = any(has_wildcard(v) for v in values)
    if wildcard and vr not in WILDCARD_VRS:
        raise InvalidQuery(
            f"{_label(attribute)} '{value}': wild cards are not allowed on VR {vr} "
            f"(PS3.4 §C.2.2.2.4 allows them on {', '.join(sorted(WILDCARD_VRS))})"
        )
    if values == ("*",):
        return build("universal")  # PS3.4 §C.2.2.2.4: "*" is Universal Matching
    all_values = multiple_value and len(values) > 1
    if all_values and wildcard:
        raise InvalidQuery(
            f"{_label(attribute)} '{value}': with multiplevaluematching=true the values may not "
            "contain wild cards (PS3.4 §C.2.2.2.8)"
        )
    return build("wildcard" if wildcard else "single", values, all_values)


def _nest(
    leaves: list[tuple[_Attribute, AttributeMatch]], depth: int = 0
) -> tuple[AttributeMatch, ...]:
    """Nest dotted keys into sequence keys; keys under one sequence match in the same Item
    (PS3.4 §C.2.2.2.6, 2025b)."""
    result: list[AttributeMatch] = []
    nested: dict[str, list[tuple[_Attribute, AttributeMatch]]] = {}
    for attribute, key in leaves:
        if len(attribute.tags) == depth + 1:
            result.append(key)
        else:
            nested.setdefault(attribute.tags[depth], []).append((attribute, key))
    for tag, members in nested.items():
        keyword = ".".join(members[0][0].keyword.split(".")[: depth + 1])
        items = _nest(members, depth + 1)
        result.append(AttributeMatch(tag, keyword, "SQ", "sequence", items=items))
    return tuple(result)


def parse_qido_query(
    level: Level,
    params: list[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    max_limit: int,
    default_limit: int,
) -> QidoQuery:
    """Parse decoded query parameters (see `parse_query_string`) for a search at `level`.

    `study_uid` and `series_uid` come from the target resource path and become keys; they are
    not validated here: an invalid one simply matches nothing. Search Query Parameters,
    PS3.18 §8.3.4 (2025b).
    """
    options = {"fuzzymatching": False, "emptyvaluematching": False, "multiplevaluematching": False}
    limit, offset = default_limit, 0
    includefield: list[str] = []
    include_all = False
    warnings: list[str] = []
    attributes: list[tuple[_Attribute, str]] = []
    for name, value in params:
        control = name.lower()
        if control in options:
            options[control] = _boolean(name, value)
        elif control == "limit":
            limit = _uint(name, value) or default_limit  # limit=0: no limit asked for
        elif control == "offset":
            offset = _uint(name, value)
        elif control == "accept":
            continue  # the acceptable media types, read by the service (PS3.18 §8.3.3.1)
        elif control == "orderby":
            warnings.append(_ignored(name, "is not supported (results are in index order)"))
        elif control == "includefield":
            for field in filter(None, (f.strip(" ") for f in value.split(","))):
                if field.lower() == "all":
                    include_all = True
                elif (found := _resolve(field)) is None:
                    warnings.append(_ignored(f"includefield={field}", "names no known attribute"))
                elif found.tags[0] < "00080000":  # command, file meta, directory: not searched
                    warnings.append(_ignored(f"includefield={field}", _NOT_SEARCHABLE))
                else:
                    includefield.append(found.tags[0])
        elif (attribute := _resolve(name)) is None:
            warnings.append(_ignored(name, "is not a supported attribute or control parameter"))
        elif level == "study" and attribute.tags == _MODALITY.tags:
            attributes.append((_MODALITIES_IN_STUDY, value))
            warnings.append(_AS_MODALITIES_IN_STUDY)
        else:
            attributes.append((attribute, value))
    if limit > max_limit:
        warnings.append(f"The limit {limit} exceeds the maximum of {max_limit}, which was used")
        limit = max_limit
    leaves = [
        (
            attribute,
            _build_match(
                attribute,
                value,
                empty_value=options["emptyvaluematching"],
                multiple_value=options["multiplevaluematching"],
            ),
        )
        for attribute, value in _merge_repeated(attributes)
    ]
    path_keys = [
        AttributeMatch(KEYWORDS[keyword][0], keyword, "UI", "uids", (uid,))
        for keyword, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid))
        if uid is not None
    ]
    return QidoQuery(
        level=level,
        matches=(*path_keys, *combine_date_time(_nest(leaves))),
        limit=limit,
        offset=offset,
        study_uid=study_uid,
        series_uid=series_uid,
        includefield=tuple(dict.fromkeys(includefield)),
        include_all=include_all,
        warnings=tuple(warnings),
        **options,
    )


def _merge_repeated(attributes: list[tuple[_Attribute, str]]) -> list[tuple[_Attribute, str]]:
    """One value per attribute path: a repeated UID key adds to its list, any other repeat is
    an error (the standard gives a repeated key no meaning)."""
    merged: dict[tuple[str, ...], tuple[_Attribute, str]] = {}
    for attribute, value in attributes:
        if attribute.tags in merged:
            previous = merged[attribute.tags][1]
            if attribute.vr != "UI" or not value or not previous:
                raise InvalidQuery(
                    f"{_label(attribute)} is given more than once; give it once (a UID list "
                    "is comma-separated, PS3.18 §8.3.4.1)"
                )
            value = f"{previous},{value}"
        merged[attribute.tags] = (attribute, value)
    return list(merged.values())
