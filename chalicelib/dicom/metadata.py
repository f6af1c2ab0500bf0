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
from typing import TYPE_CHECKING, Any

from chalicelib.dicom.jsonmodel import dataset_to_json
from chalicelib.dicom.tags import INSTANCE_LEVEL_TAGS, SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

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


def precompute(
    ds: Dataset, study_uid: str, series_uid: str, sop_uid: str, bulk_threshold: int
) -> tuple[LevelTags, bytes]:
    """The main attributes of each level, and the instance's gzip-compressed metadata.

    One walk over the dataset serves both: the DICOM JSON of every attribute, bulk values as
    BulkDataURIs under the placeholder base.
    """
    prefix = BASE_PLACEHOLDER + instance_path(study_uid, series_uid, sop_uid) + "/bulk/"
    document = dataset_to_json(ds, lambda path: prefix + path, bulk_threshold)
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
