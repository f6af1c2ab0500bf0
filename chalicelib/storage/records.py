"""Helpers shared by the storage adapters: blob key rules, record serialization, and the
attributes each index keeps in its own columns for narrowing QIDO-RS candidates."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

from chalicelib.storage.ports import Conflict, DicomJson, InstanceRecord

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
    return {name: first_value(study_tags, tag) for name, tag in SEARCH_TAGS.items()}


def record_to_json(record: InstanceRecord) -> str:
    return json.dumps(dataclasses.asdict(record), separators=(",", ":"))


def record_from_json(text: str) -> InstanceRecord:
    return InstanceRecord(**json.loads(text))


def stamped(record: InstanceRecord) -> InstanceRecord:
    """A copy of `record` with `stored_at` set to now (ISO 8601, UTC)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return dataclasses.replace(record, stored_at=now)


def released_keys(old: InstanceRecord, new: InstanceRecord) -> list[str]:
    """Blob keys of `old` (original bytes, metadata) that `new` no longer points to."""
    kept = {new.blob_key, new.metadata_key}
    return [k for k in (old.blob_key, old.metadata_key) if k is not None and k not in kept]


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
