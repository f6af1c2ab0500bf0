"""The SQLite index's tables and how rows decode into records.

`studies`, `series` and `instances` hold the records (tags as JSON) with the columns searches
narrow on; `study_terms` holds the study's entries of `records.search_terms` (PatientID,
AccessionNumber, PatientName groups); `pending_deletes` the blob keys of deleted instances
until their blobs are removed.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from chalicelib.storage.ports import SearchInstance, SeriesRecord, StudyRecord
from chalicelib.storage.records import record_from_json

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    study_date TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    orthanc_id TEXT NOT NULL,
    study_tags TEXT NOT NULL,
    num_series INTEGER NOT NULL,
    num_instances INTEGER NOT NULL,
    modalities TEXT NOT NULL,
    sop_classes TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient_id ON studies (patient_id);
CREATE INDEX IF NOT EXISTS studies_patient_name ON studies (patient_name);
CREATE INDEX IF NOT EXISTS studies_study_date ON studies (study_date);
CREATE INDEX IF NOT EXISTS studies_accession_number ON studies (accession_number);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    orthanc_id TEXT NOT NULL,
    series_tags TEXT NOT NULL,
    num_instances INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_uid, series_uid);
CREATE INDEX IF NOT EXISTS series_modality ON series (modality);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (study_uid, series_uid, sop_uid);
CREATE INDEX IF NOT EXISTS instances_sets ON instances (study_uid, modality, sop_class_uid);
CREATE INDEX IF NOT EXISTS studies_listing ON studies (study_date, study_uid);
CREATE TABLE IF NOT EXISTS study_terms (
    study_uid TEXT NOT NULL,
    entry TEXT NOT NULL,
    name TEXT NOT NULL,
    term TEXT NOT NULL,
    PRIMARY KEY (study_uid, entry)
);
CREATE INDEX IF NOT EXISTS study_terms_name ON study_terms (name, term);
CREATE TABLE IF NOT EXISTS pending_deletes (blob_key TEXT PRIMARY KEY)
"""
STUDY_COLUMNS = (
    "study_uid, study_tags, num_series, num_instances, modalities, sop_classes, version, orthanc_id"
)
SERIES_COLUMNS = "study_uid, series_uid, series_tags, num_instances, version, orthanc_id"
PAGE = 500
"""Rows per page of a listing."""
FIRST_PAGE = 16
"""Rows of the first page of a search listing in index order; each next page doubles, up to
PAGE. A QIDO-RS page stops reading soon after it, so a first read of PAGE rows would decode
500 studies to answer 10 (issue 14, cost flat in archive size)."""
FIRST_KEYED_PAGE = 128
"""Rows of the first page of a study search on a key the date order does not follow
(PatientName, PatientID, ...): each page sorts every match again, so one page should hold a
QIDO-RS page of 10 and the 101 matches its Warning counts (`server.qido.REMAINING_COUNTED`)."""


def study_from_row(row: tuple[Any, ...]) -> StudyRecord:
    uid, tags, num_series, num_instances, modalities, sop_classes, version, orthanc_id = row
    return StudyRecord(
        study_uid=uid,
        study_tags=json.loads(tags),
        num_series=num_series,
        num_instances=num_instances,
        modalities=json.loads(modalities),
        sop_classes=json.loads(sop_classes),
        version=version,
        orthanc_id=orthanc_id,
    )


INSTANCE_COLUMNS = "study_uid, series_uid, sop_uid, record"


def search_instance_from_row(row: tuple[Any, ...]) -> SearchInstance:
    study_uid, series_uid, sop_uid, record = row
    return SearchInstance(study_uid, series_uid, sop_uid, partial(record_from_json, record))


def series_from_row(row: tuple[Any, ...]) -> SeriesRecord:
    study_uid, series_uid, tags, num_instances, version, orthanc_id = row
    return SeriesRecord(
        study_uid=study_uid,
        series_uid=series_uid,
        series_tags=json.loads(tags),
        num_instances=num_instances,
        version=version,
        orthanc_id=orthanc_id,
    )
