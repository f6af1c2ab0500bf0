"""UID validation and Orthanc-compatible resource identifiers.

Orthanc names each resource by the SHA-1 of the identifiers on its path, joined by `|` and
printed as five dash-separated groups of 8 hex digits: patient = PatientID; study =
PatientID|StudyInstanceUID; series adds |SeriesInstanceUID; instance adds |SOPInstanceUID.
"""

from __future__ import annotations

import hashlib
import re

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_valid_uid(value: str) -> bool:
    """A UID per PS3.5 §9.1 (2025b): digits and dots, no empty component, at most 64 chars."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def _orthanc_hash(text: str) -> str:
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def orthanc_ids(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, str]:
    """The four Orthanc identifiers of an instance's patient, study, series and instance."""
    study_key = f"{patient_id}|{study_uid}"
    series_key = f"{study_key}|{series_uid}"
    return {
        "patient": _orthanc_hash(patient_id),
        "study": _orthanc_hash(study_key),
        "series": _orthanc_hash(series_key),
        "instance": _orthanc_hash(f"{series_key}|{sop_uid}"),
    }
