"""What ingest precomputes from a dataset: the main attributes of each level and the instance's
WADO-RS metadata (PS3.18 §10.4.1.1.2, Retrieve Metadata, 2025b).

The metadata document is stored gzip-compressed with BulkDataURIs relative to a placeholder;
`resolve_base` puts the request's base URL in place when it is served, so that proxies and the
API Gateway stage prefix are honoured without recomputing anything.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

from chalicelib.dicom.bulk import locate_bulk_elements
from chalicelib.dicom.jsonmodel import dataset_to_json
from chalicelib.dicom.parse import ParsedInstance, check_sequence_depth
from chalicelib.dicom.tags import INSTANCE_LEVEL_TAGS, SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS

BASE_PLACEHOLDER = "@@DICOMWEB_BASE@@"
"""Stands for the absolute DICOMweb root URL inside stored metadata documents."""


@dataclass
class LevelTags:
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]


def _subset(document: dict[str, Any], tags: tuple[str, ...]) -> dict[str, Any]:
    return {tag: document[tag] for tag in (*tags, "00080005") if tag in document}


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def bulk_prefix(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """What the stored document's BulkDataURIs start with, before their tag path."""
    return BASE_PLACEHOLDER + instance_path(study_uid, series_uid, sop_uid) + "/bulk/"


@dataclass
class Description:
    """What ingest records of an instance besides its UIDs and pixel facts."""

    levels: LevelTags
    document: bytes
    """The gzip-compressed metadata document (`finish`)."""
    bulk: dict[str, list[Any]]
    """Where its bulk values lie (`bulk.locate_bulk_elements`)."""
    patient_id: str


def describe_dataset(parsed: ParsedInstance, bulk_threshold: int, max_depth: int) -> Description:
    """The Description of an instance pydicom read (`parse.parse_instance`).

    Raises UnreadableInstance for sequences nested deeper than `max_depth`, and what a value
    pydicom cannot read raises."""
    ds = parsed.dataset
    assert ds is not None
    bulk = locate_bulk_elements(ds, parsed.data, bulk_threshold)
    check_sequence_depth(ds, max_depth)  # after the raw offsets are recorded
    prefix = bulk_prefix(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid)
    levels, document = finish(dataset_to_json(ds, lambda path: prefix + path, bulk_threshold))
    return Description(levels, document, bulk, str(ds.get("PatientID", "") or ""))


def finish(document: dict[str, Any]) -> tuple[LevelTags, bytes]:
    """The main attributes of each level of a DICOM JSON document, and the document as it is
    stored: compact UTF-8 JSON, gzip-compressed."""
    levels = LevelTags(
        study=_subset(document, STUDY_LEVEL_TAGS),
        series=_subset(document, SERIES_LEVEL_TAGS),
        instance=_subset(document, INSTANCE_LEVEL_TAGS),
    )
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return levels, gzip.compress(text.encode("utf-8"), compresslevel=5, mtime=0)


def resolve_base(document: bytes, base_url: str) -> bytes:
    """Replace the placeholder by the DICOMweb root URL (`document` is plain JSON bytes)."""
    return document.replace(BASE_PLACEHOLDER.encode("ascii"), base_url.encode("utf-8"))
