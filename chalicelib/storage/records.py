"""Helpers shared by the storage adapters: blob key rules, record serialization, and the
attributes each index keeps in its own columns for narrowing QIDO-RS candidates."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime

from chalicelib.dicom.matching import PN_GROUPS, Narrowing, index_text, normalize_bound
from chalicelib.dicom.tags import lookup_tag
from chalicelib.storage.ports import BlobWrite, Conflict, DicomJson, InstanceRecord

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")

MODALITY = "00080060"
SEARCH_TAGS = {
    "patient_id": "00100020",
    "patient_name": "00100010",
    "study_date": "00080020",
    "accession_number": "00080050",
}
"""Study-level attributes each index copies out of `study_tags` into a column of its own."""


def validate_key(key: str) -> str:
    """Reject keys that could escape the store: only [A-Za-z0-9._/-], no '.', '..' or empty
    path segment (so no absolute path either)."""
    if not _KEY_CHARS.fullmatch(key) or any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(
            f"blob key {key!r} is invalid: use only A-Z a-z 0-9 . _ / - in relative path "
            "segments, none of them empty, '.' or '..'"
        )
    return key


def not_removed(prefix: str, failed: dict[str, str]) -> str:
    """The message of a `BlobStore.delete_prefix` that left blobs: how many, and the first
    few keys with their reasons."""
    shown = "; ".join(f"{key}: {reason}" for key, reason in list(failed.items())[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"could not delete {len(failed)} blobs under {prefix}: {shown}{more}"


def first_value(tags: DicomJson, tag: str) -> str:
    """The first value of `tag` as a string ('' when absent); a PN gives its Alphabetic group."""
    values = tags.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)


def modality(record: InstanceRecord) -> str:
    return first_value(record.series_tags, MODALITY)


def search_attributes(study_tags: DicomJson) -> dict[str, str]:
    """The study's searchable columns; `study_date` normalized to YYYYMMDD ('' when absent or
    malformed: such a study never matches a date range anyway)."""
    values = {name: first_value(study_tags, tag) for name, tag in SEARCH_TAGS.items()}
    values["study_date"] = study_date(study_tags)
    return values


def study_date(study_tags: DicomJson) -> str:
    return (
        normalize_bound("DA", first_value(study_tags, SEARCH_TAGS["study_date"]), upper=False) or ""
    )


def search_terms(study_tags: DicomJson) -> dict[str, str]:
    """The study's values in the shared search index, by entry name: PatientID,
    AccessionNumber, and each non-empty component group of PatientName in `index_text` form
    (case-folded, so one entry serves QidoCaseSensitive on and off)."""
    terms = {
        name: first_value(study_tags, SEARCH_TAGS[column])
        for name, column in (("PatientID", "patient_id"), ("AccessionNumber", "accession_number"))
    }
    names = study_tags.get(SEARCH_TAGS["patient_name"], {}).get("Value") or [{}]
    name = names[0] if isinstance(names[0], dict) else {"Alphabetic": str(names[0])}
    for group in PN_GROUPS:
        terms[f"PatientName{group[0]}"] = index_text(
            str(name.get(group) or ""), case_sensitive=False
        )
    return {entry: value for entry, value in terms.items() if value}


def term_name(entry: str) -> str:
    """The hint keyword an entry of `search_terms` answers ("PatientNameA" → "PatientName")."""
    return "PatientName" if entry.startswith("PatientName") else entry


PREFIX_BUCKET = 3
"""Longest PatientName prefix with a date-ordered key of its own (see `prefix_keys`)."""


def prefix_keys(keyword: str, term: str) -> list[tuple[str, str]]:
    """The prefix keys of a PatientName term, (name, value): "PatientName*k" = its first k
    characters, k = 1..`PREFIX_BUCKET` (all of them, whatever the term's length, so that a
    changed term rewrites the same keys). A search for SMI* reads the key PatientName*3 = SMI
    in date order; SMITH* reads it too and skips the terms that do not start with SMITH."""
    if keyword != "PatientName":
        return []
    return [(f"{keyword}*{k}", term[:k]) for k in range(1, PREFIX_BUCKET + 1)]


def date_bounds(hint: Narrowing) -> tuple[str, str]:
    """A StudyDate range hint as normalized YYYYMMDD bounds ("" when open)."""
    low, high = hint.values
    return (
        normalize_bound("DA", low, upper=False) or "" if low else "",
        normalize_bound("DA", high, upper=True) or "" if high else "",
    )


def record_to_json(record: InstanceRecord) -> str:
    """The record as the index keeps it, without the `metadata` document it carries to the
    index that keeps that apart."""
    # A shallow dict: dataclasses.asdict deep-copies every tag dict, 3 ms per CT instance.
    fields = {
        f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "metadata"
    }
    return json.dumps(fields, separators=(",", ":"))


RECORD_LIMIT = 384 * 1024
"""The most bytes an instance's record may take serialized (`record_to_json`), and its study's
attributes with the copies searches read (`search_attributes`, `search_terms`): a DynamoDB
item holds either beside a few small attributes and stops at 400 KB. A value far over its
VR's length (a 500,000-character LO, readable in implicit VR) in the main attributes of a
level can pass it; every index refuses such an instance alike (`oversized_record`), so that
what the local server stores the AWS one can."""


def oversized_record(record: InstanceRecord) -> str | None:
    """Why `record` is too large for the index (naming its largest attributes), or None."""
    size = len(record_to_json(record))  # ASCII: json.dumps escapes the rest
    if size > RECORD_LIMIT:
        tags = {**record.study_tags, **record.series_tags, **record.instance_tags}
        return _too_large("the attributes the index keeps of this instance take", size, tags)
    study_tags = record.study_tags
    size = len(json.dumps(study_tags))
    if size > RECORD_LIMIT // 3:  # else the copies, each of one or two values, fit beside
        copies = [*search_attributes(study_tags).values(), json.dumps(search_terms(study_tags))]
        size += sum(len(copy.encode("utf-8")) for copy in copies)
        if size > RECORD_LIMIT:
            what = "the Patient and Study attributes of this instance take, with their copies"
            return _too_large(f"{what} that searches read,", size, study_tags)
    return None


def _too_large(what: str, size: int, tags: DicomJson) -> str:
    sizes = sorted(((len(json.dumps(v)), tag) for tag, v in tags.items()), reverse=True)
    large = [(n, tag) for n, tag in sizes[:3] if n > 1024] or sizes[:1]
    largest = ", ".join(f"{_attribute(tag)} {n:,} bytes" for n, tag in large)
    return (
        f"{what} {size:,} bytes, over the index's limit of {RECORD_LIMIT:,}; the largest: {largest}"
    )


def _attribute(tag: str) -> str:
    """'(0008,1030) StudyDescription' of '00081030'."""
    keyword = (lookup_tag(tag) or ("",))[0]
    return f"({tag[:4]},{tag[4:]}) {keyword}".rstrip()


def record_from_json(text: str) -> InstanceRecord:
    return InstanceRecord(**json.loads(text))


def first_version() -> int:
    """The version a new study or series starts at: the time in microseconds.

    Versions make ETags and cache keys, so they must not repeat when a resource is deleted
    and stored again (issue 11: a re-created series answered 304 to the old ETag "3"). Each
    later change adds 1 in a committed write, which takes far longer than a microsecond, so
    a version never reaches the start of a later lifetime.
    """
    return time.time_ns() // 1000


def utc_stamp(moment: datetime | None = None) -> str:
    """`moment` (default now) as ISO 8601 UTC to the microsecond: stamps that sort as the
    times they name (write intents, `ports.BlobWrite`)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def blob_write(record: InstanceRecord, at: str) -> BlobWrite:
    """The write intent of `record`'s blobs, recorded at `at`."""
    return BlobWrite(
        record.study_uid, record.series_uid, record.sop_uid, tuple(record.blob_keys()), at
    )


def blob_write_to_json(write: BlobWrite) -> str:
    return json.dumps(dataclasses.asdict(write), separators=(",", ":"))


def blob_write_from_json(text: str) -> BlobWrite:
    fields = json.loads(text)
    return BlobWrite(**{**fields, "keys": tuple(fields["keys"])})


def stamped(record: InstanceRecord) -> InstanceRecord:
    """A copy of `record` with `stored_at` set to now (ISO 8601, UTC)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return dataclasses.replace(record, stored_at=now)


def released_keys(old: InstanceRecord, new: InstanceRecord) -> list[str]:
    """Blob keys of `old` (original bytes, metadata) that `new` no longer points to."""
    kept = set(new.blob_keys())
    return [k for k in old.blob_keys() if k not in kept]


def sop_conflict(record: InstanceRecord, study_uid: str, series_uid: str) -> Conflict:
    return Conflict(
        f"(0008,0018) SOPInstanceUID {record.sop_uid} is already stored in study {study_uid} "
        f"series {series_uid}: it cannot also be stored in study {record.study_uid} series "
        f"{record.series_uid}; delete the stored instance first"
    )


def series_conflict(record: InstanceRecord, study_uid: str) -> Conflict:
    return Conflict(
        f"(0020,000E) SeriesInstanceUID {record.series_uid} is already stored in study "
        f"{study_uid}: it cannot also be in study {record.study_uid}; delete the stored series "
        "first"
    )
