"""QIDO-RS attribute matching: the one place that decides whether a dataset matches a query.

Implements Attribute Matching, PS3.4 §C.2.2.2 (2025b), on datasets in the DICOM JSON model
(PS3.18 Annex F): Single Value, List of UID, Universal, Wild Card, Range, Sequence, Empty Value
and Multiple Value Matching, plus fuzzy matching of person names (PS3.18 §8.3.4.2). Storage
adapters may narrow candidates with `narrowing()`, and must then filter with `matches()`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chalicelib.dicom.query import AttributeMatch, QidoQuery
from chalicelib.dicom.tags import DEFAULT_TAGS, KEYWORDS, LEVEL_TAGS, Level

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""VRs on which `*` and `?` are wild cards, PS3.4 §C.2.2.2.4 (2025b)."""

MULTIPLE_VALUE_VRS = frozenset({"AE", "AS", "AT", "CS", "LO", "PN", "SH", "UC"})
"""VRs on which a Key Attribute may hold several values, PS3.4 §C.2.2.2.8 (2025b)."""

NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@dataclass(frozen=True)
class Narrowing:
    """An index hint: candidates must have `keyword` equal to one of `values` (`exact`),
    starting with one of them (`prefix`), within the bounds `values[0]`..`values[1]` ("" when
    open, `range`), or among the UIDs (`uids`). Always a superset of the real matches."""

    keyword: str
    kind: Literal["exact", "prefix", "range", "uids"]
    values: tuple[str, ...]


def matches(query: QidoQuery, dataset: Mapping[str, Any], *, case_sensitive_pn: bool) -> bool:
    """Whether `dataset` satisfies every Key Attribute of `query`, PS3.4 §C.2.2.2 (2025b)."""
    return all(
        match_attribute(
            key,
            dataset,
            case_sensitive_pn=case_sensitive_pn,
            fuzzy=query.fuzzymatching,
            empty_value=query.emptyvaluematching,
        )
        for key in query.matches
    )


def match_attribute(
    key: AttributeMatch,
    dataset: Mapping[str, Any],
    *,
    case_sensitive_pn: bool,
    fuzzy: bool = False,
    empty_value: bool = False,
) -> bool:
    """Match one Key Attribute against a DICOM JSON dataset.

    A multi-valued entity Attribute matches when any of its values does. With Empty Value
    Matching (PS3.4 §C.2.2.2.7, 2025b), an absent or empty Attribute matches every key, and the
    key `""` matches only such Attributes.
    """
    if key.kind == "universal":
        return True
    values = element_values(dataset.get(key.tag))
    if not values:
        return key.kind == "empty" or empty_value
    if key.kind == "empty":
        return False
    if key.kind == "sequence":
        return match_sequence(
            key.items,
            values,
            case_sensitive_pn=case_sensitive_pn,
            fuzzy=fuzzy,
            empty_value=empty_value,
        )
    if key.kind == "uids":
        return match_uid_list(key.values, values)
    if key.kind == "range":
        low, high = key.values
        return any(match_range(key.vr, low, high, value) for value in values)
    if key.kind == "datetime":
        times = element_values(dataset.get(key.items[1].tag)) or [""]
        low, high = key.values
        return any(
            match_range("DT", low, high, _date_time(date, time))
            for date in values
            for time in times
        )
    predicate = _value_predicate(key, case_sensitive_pn=case_sensitive_pn, fuzzy=fuzzy)
    if key.all_values:
        return all(any(predicate(k, value) for value in values) for k in key.values)
    return any(predicate(k, value) for k in key.values for value in values)


def _value_predicate(
    key: AttributeMatch, *, case_sensitive_pn: bool, fuzzy: bool
) -> Callable[[str, Any], bool]:
    if key.vr == "PN":
        return lambda k, v: match_person_name(k, v, case_sensitive=case_sensitive_pn, fuzzy=fuzzy)
    if key.vr in NUMERIC_VRS:
        return match_number
    if key.kind == "wildcard":
        return lambda k, v: match_wildcard(k, str(v).strip(" "))
    return match_single_value


def element_values(element: Mapping[str, Any] | None) -> list[Any]:
    """The non-empty values of a DICOM JSON element (PS3.18 §F.2.2, 2025b); [] when absent."""
    if not element:
        return []
    return [value for value in element.get("Value") or () if not _is_empty(value)]


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip(" ") == ""
    if isinstance(value, Mapping) and set(value) <= set(PN_GROUPS):
        return not any(value.values())
    return False


def match_single_value(key: str, value: Any) -> bool:
    """Single Value Matching, PS3.4 §C.2.2.2.1 (2025b): equal, case-sensitive, padding ignored."""
    return key.strip(" ") == str(value).strip(" ")


def match_number(key: str, value: Any) -> bool:
    """Single Value Matching of a number (IS, DS, US, ...): compared by value, so 7 = "007"."""
    try:
        return float(key) == float(value)
    except (TypeError, ValueError):
        return False


def has_wildcard(text: str) -> bool:
    """Whether `text` uses the wild cards `*` or `?` of PS3.4 §C.2.2.2.4 (2025b)."""
    return "*" in text or "?" in text


def match_wildcard(pattern: str, text: str) -> bool:
    """Wild Card Matching, PS3.4 §C.2.2.2.4 (2025b): `*` any sequence, `?` any one character.

    A two-pointer glob match, O(len(pattern) × len(text)) at worst: a regular expression of
    `.*` runs backtracks exponentially (28 `*` then `Z` stalled the server for 10 s, issue 11).
    """
    p = t = 0
    star = -1  # position in `pattern` just after the last `*` seen
    resume = 0  # position in `text` that `*` has absorbed up to
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]) and pattern[p] != "*":
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            p += 1
            star, resume = p, t
        elif star >= 0:
            resume += 1
            p, t = star, resume
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def match_uid_list(uids: tuple[str, ...], values: list[Any]) -> bool:
    """List of UID Matching, PS3.4 §C.2.2.2.2 (2025b): any entity UID is one of `uids`."""
    return any(str(value) in uids for value in values)


_YEAR, _MONTH, _DAY = r"(\d{4})", r"(0[1-9]|1[0-2])", r"(0[1-9]|[12]\d|3[01])"
_HOUR, _MINUTE, _SECOND = r"([01]\d|2[0-3])", r"([0-5]\d)", r"([0-5]\d|60)"
_FRACTION = r"(?:\.(\d{1,6}))?"
_DA = re.compile(_YEAR + _MONTH + _DAY)
_TM = re.compile(f"{_HOUR}{_MINUTE}?{_SECOND}?{_FRACTION}")
_OFFSET = r"([+-]\d{4})?"
_DT = re.compile(f"{_YEAR}{_MONTH}?{_DAY}?{_HOUR}?{_MINUTE}?{_SECOND}?{_FRACTION}{_OFFSET}")
_LOW = ("", "01", "01", "00", "00", "00")  # padding of YYYY MM DD HH MM SS as a start
_HIGH = ("", "12", "31", "23", "59", "59")  # ... and as an end


def normalize_bound(vr: str, text: str, *, upper: bool) -> str | None:
    """A DA, TM or DT value as a fixed-width string that sorts by time, or None if malformed.

    A partial TM or DT ("10", "1030", "2020") covers a whole period: as a lower bound it starts
    it, as an upper bound (`upper`) it ends it, so "-10" includes 10:59:59.999999. A DT
    timezone offset is ignored: no Timezone Query Adjustment (PS3.4 §C.2.2.2.5, 2025b).
    """
    text = text.strip(" ")
    if vr == "DA":
        found = _DA.fullmatch(text.replace(".", ""))  # ACR-NEMA stored "YYYY.MM.DD"
        return found.group(0) if found else None
    if vr == "TM":
        found = _TM.fullmatch(text.replace(":", ""))  # ACR-NEMA stored "HH:MM:SS"
        if not found:
            return None
        fields = found.groups()
        return _pad(fields[:3], _LOW[3:], _HIGH[3:], fields[3], upper=upper)
    found = _DT.fullmatch(text)
    if not found:
        return None
    fields = found.groups()
    return _pad(fields[:6], _LOW, _HIGH, fields[6], upper=upper)


def _pad(
    fields: tuple[str | None, ...],
    low: tuple[str, ...],
    high: tuple[str, ...],
    fraction: str | None,
    *,
    upper: bool,
) -> str:
    defaults = high if upper else low
    head = "".join(field or default for field, default in zip(fields, defaults, strict=True))
    return f"{head}.{(fraction or '').ljust(6, '9' if upper else '0')}"


DATE_TIME_PAIRS = {
    "00080012": "00080013",  # InstanceCreationDate, InstanceCreationTime
    "00080020": "00080030",  # StudyDate, StudyTime
    "00080021": "00080031",  # SeriesDate, SeriesTime
    "00080022": "00080032",  # AcquisitionDate, AcquisitionTime
    "00080023": "00080033",  # ContentDate, ContentTime
    "00100030": "00100032",  # PatientBirthDate, PatientBirthTime
    "00400244": "00400245",  # PerformedProcedureStepStartDate, ...StartTime
}
"""The Date and Time Attributes that are matched together when both are keys."""


def combine_date_time(keys: tuple[AttributeMatch, ...]) -> tuple[AttributeMatch, ...]:
    """Each top-level pair of Date and Time range keys (a single value is the range of its own
    period) as one `datetime` key: Combined Date and Time Range Matching, PS3.4 §C.2.2.2.5
    (2025b), which the Search Transaction uses (PS3.18 §8.3.4.1, 2025b). StudyDate
    20060705-20060707 with StudyTime 1000-1800 matches from 10:00 on 5 July to 18:00 on
    7 July, not only between 10:00 and 18:00 of each day."""
    by_tag = {key.tag: key for key in keys if key.kind == "range"}
    pairs = {
        date: time for date, time in DATE_TIME_PAIRS.items() if date in by_tag and time in by_tag
    }
    combined: list[AttributeMatch] = []
    for key in keys:
        if key.tag in pairs.values() and key.kind == "range":
            continue
        if key.tag not in pairs or key.kind != "range":
            combined.append(key)
            continue
        time = by_tag[pairs[key.tag]]
        (date_low, date_high), (time_low, time_high) = key.values, time.values
        low = _date_time(date_low, time_low) if date_low else ""
        high = _date_time(date_high, time_high) if date_high else ""
        combined.append(
            AttributeMatch(
                key.tag, f"{key.keyword}+{time.keyword}", "DT", "datetime", (low, high),
                items=(key, time),
            )
        )  # fmt: skip
    return tuple(combined)


def _date_time(date: Any, time: Any) -> str:
    """A DT value from a DA and a TM value (a missing time leaves the whole day): ACR-NEMA
    separators dropped, so that `normalize_bound("DT", ...)` reads it."""
    return str(date).strip(" ").replace(".", "") + str(time).strip(" ").replace(":", "")


def match_range(vr: str, low: str, high: str, value: Any) -> bool:
    """Range Matching of DA, TM or DT, PS3.4 §C.2.2.2.5 (2025b): `low` <= value <= `high`.

    Bounds are inclusive; "" leaves a side open; a partial stored value ("10") matches when its
    period overlaps the range. A DT Attribute is one range; a Date and a Time key given
    together are combined first (`combine_date_time`).
    """
    start = normalize_bound(vr, str(value), upper=False)
    end = normalize_bound(vr, str(value), upper=True)
    if start is None or end is None:
        return False
    if low and end < (normalize_bound(vr, low, upper=False) or ""):
        return False
    return not high or start <= (normalize_bound(vr, high, upper=True) or "")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_NAME_SEPARATORS = re.compile(r"[\^\s,]+")


def match_fuzzy_name(key: str, name: str) -> bool:
    """Fuzzy matching of a person name (PS3.18 §8.3.4.2, 2025b; the method is ours to choose).

    Case and accents are ignored, and each word of the key must begin some component of the
    name, in any order: "joh" and "doe j" both match "Doe^John". A key with wild cards is
    matched as a wild card pattern on the folded name.
    """
    folded_key = _strip_accents(key).casefold()
    folded_name = _strip_accents(name).casefold()
    if has_wildcard(folded_key):
        return match_wildcard(folded_key, folded_name.rstrip("^ "))
    words = [w for w in _NAME_SEPARATORS.split(folded_name) if w]
    tokens = [t for t in _NAME_SEPARATORS.split(folded_key) if t]
    return bool(tokens) and all(any(w.startswith(t) for w in words) for t in tokens)


def _match_name_group(key: str, group: str, *, case_sensitive: bool, fuzzy: bool) -> bool:
    if fuzzy:
        return match_fuzzy_name(key, group)
    if not case_sensitive:
        key, group = key.casefold(), group.casefold()
    group = group.rstrip("^ ")  # "Doe^John^^" and "Doe^John" are the same name (PS3.5 §6.2)
    if has_wildcard(key):
        return match_wildcard(key, group)
    return key.rstrip("^ ") == group


def match_person_name(key: str, value: Any, *, case_sensitive: bool, fuzzy: bool) -> bool:
    """Match a PN key against one PN value (PS3.4 §C.2.2.2.1 and §C.2.2.2.4, 2025b).

    Case-insensitive unless `case_sensitive` (the `QidoCaseSensitive` option). A key without
    `=` matches if any component group (Alphabetic, Ideographic, Phonetic) matches; a key with
    `=` matches group by group, an empty or `*` key group matching anything.
    """
    if isinstance(value, Mapping):
        groups = [str(value.get(name) or "") for name in PN_GROUPS]
    else:
        groups = [*str(value).split("="), "", ""][:3]
    options = {"case_sensitive": case_sensitive, "fuzzy": fuzzy}
    if "=" not in key:
        return any(_match_name_group(key, group, **options) for group in groups if group)
    return all(
        _match_name_group(part, group, **options)
        for part, group in zip(key.split("=")[:3], groups, strict=False)
        if part not in ("", "*")
    )


def match_sequence(
    items: tuple[AttributeMatch, ...],
    sequence: list[Any],
    *,
    case_sensitive_pn: bool,
    fuzzy: bool = False,
    empty_value: bool = False,
) -> bool:
    """Sequence Matching, PS3.4 §C.2.2.2.6 (2025b): some Item matches every Item Key."""
    return any(
        isinstance(item, Mapping)
        and all(
            match_attribute(
                key,
                item,
                case_sensitive_pn=case_sensitive_pn,
                fuzzy=fuzzy,
                empty_value=empty_value,
            )
            for key in items
        )
        for item in sequence
    )


def index_text(text: str, *, case_sensitive: bool) -> str:
    """The form in which an index must store a PN component group for `narrowing()` hints:
    trailing `^` and spaces removed, upper-cased after case folding unless `case_sensitive`."""
    text = text.rstrip("^ ")
    return text if case_sensitive else text.casefold().upper()


_NARROWED_STRINGS = ("PatientID", "AccessionNumber", "PatientName", "Modality", "ModalitiesInStudy")
_NARROWED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def narrowing(query: QidoQuery, *, case_sensitive_pn: bool) -> list[Narrowing]:
    """Index hints for the query, the most selective first; [] means a scan is needed.

    Only top-level keys are used. With Empty Value Matching an absent value matches too, so
    only UID hints (always present at their level) are given.
    """
    hints: list[Narrowing] = []
    for keyword in _NARROWED_UIDS:
        tag = KEYWORDS[keyword][0]
        hints += [
            Narrowing(keyword, "uids", key.values)
            for key in query.matches
            if key.tag == tag and key.kind == "uids"
        ]
    if query.emptyvaluematching:
        return hints
    for keyword in _NARROWED_STRINGS:
        tag = KEYWORDS[keyword][0]
        for key in query.matches:
            if key.tag != tag or (keyword == "PatientName" and query.fuzzymatching):
                continue
            hint = _string_hint(keyword, key, case_sensitive=case_sensitive_pn)
            if hint:
                hints.append(hint)
    date_tag = KEYWORDS["StudyDate"][0]
    hints += [
        Narrowing("StudyDate", "range", key.values if key.kind == "range" else key.items[0].values)
        for key in query.matches
        if key.tag == date_tag and key.kind in ("range", "datetime")
    ]
    return hints


_TRAILING_STAR = re.compile(r"[^*?=]+\*")


def _string_hint(keyword: str, key: AttributeMatch, *, case_sensitive: bool) -> Narrowing | None:
    """`exact` for single values, `prefix` when the only wild card is one trailing `*`."""
    if key.kind == "single":
        kind: Literal["exact", "prefix"] = "exact"
        values = key.values
    elif key.kind == "wildcard" and all(
        not has_wildcard(v) or _TRAILING_STAR.fullmatch(v) for v in key.values
    ):
        kind = "prefix"
        values = tuple(v.rstrip("*") for v in key.values)
    else:
        return None
    if key.vr == "PN":
        if any("=" in v for v in values):
            return None
        values = tuple(index_text(v, case_sensitive=case_sensitive) for v in values)
    return Narrowing(keyword, kind, values)


def _lower_level_tags(level: Level) -> frozenset[str]:
    order: tuple[Level, ...] = ("study", "series", "instance")
    rank = order.index(level)
    own = {t for lvl in order[: rank + 1] for t in (*LEVEL_TAGS[lvl], *DEFAULT_TAGS[lvl])}
    lower = {t for lvl in order[rank + 1 :] for t in (*LEVEL_TAGS[lvl], *DEFAULT_TAGS[lvl])}
    return frozenset(lower - own)


_LOWER_LEVEL_TAGS: dict[Level, frozenset[str]] = {
    level: _lower_level_tags(level) for level in ("study", "series", "instance")
}


def select_attributes(query: QidoQuery, dataset: Mapping[str, Any], level: Level) -> dict[str, Any]:
    """The Attributes of one search result, PS3.18 §10.6.3.3 (2025b), sorted by tag.

    The level's default Attributes, the matching keys and the includefield Attributes (all of
    them for `includefield=all`); a search for all series (or all instances, or a study's
    instances) also returns the default Attributes of the levels above. Attributes known to
    belong to a lower level are never returned.
    """
    if query.include_all:
        keep = set(dataset)
    else:
        keep = {key.tag for key in query.matches} | set(query.includefield)
        keep |= {item.tag for key in query.matches if key.kind == "datetime" for item in key.items}
    keep -= _LOWER_LEVEL_TAGS[level]
    keep.update(DEFAULT_TAGS[level])
    if level in ("series", "instance") and query.study_uid is None:
        keep.update(DEFAULT_TAGS["study"])
    if level == "instance" and query.series_uid is None:
        keep.update(DEFAULT_TAGS["series"])
    return {tag: dataset[tag] for tag in sorted(dataset) if tag in keep}
