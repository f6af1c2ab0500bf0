"""The SQLite index's tables, their migration, and how rows decode into records.

`studies`, `series` and `instances` hold the records (tags as JSON) with the columns searches
narrow on, and each instance's precomputed metadata document (gzip DICOM JSON, `metadata`:
NULL for an instance stored before version 3, whose document is a blob at its
`metadata_key`); `study_keys` the study keys of keyed searches (see `storage/search.py`): a
row per entry of `records.search_terms` (PatientID, AccessionNumber, PatientName groups), per
PatientName prefix key and per modality of the study, ordered by date within the key;
`pending_deletes` the blob keys of deleted instances until their blobs are removed;
`blob_writes` the write intents of stores under way (`ports.BlobWrite` as JSON).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from functools import partial
from typing import Any

from chalicelib.storage.ports import SearchInstance, SeriesRecord, StudyRecord
from chalicelib.storage.records import (
    prefix_keys,
    record_from_json,
    search_terms,
    study_date,
    term_name,
)

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
    record TEXT NOT NULL,
    metadata BLOB,
    transfer_syntax_uid TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    has_file_meta INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (study_uid, series_uid, sop_uid);
CREATE INDEX IF NOT EXISTS instances_sets ON instances (study_uid, modality, sop_class_uid);
CREATE INDEX IF NOT EXISTS studies_listing ON studies (study_date, study_uid);
CREATE TABLE IF NOT EXISTS study_keys (
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    term TEXT NOT NULL,
    PRIMARY KEY (name, value, study_date, study_uid, term)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS study_keys_study ON study_keys (study_uid);
CREATE TABLE IF NOT EXISTS pending_deletes (blob_key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS blob_writes (blob_key TEXT PRIMARY KEY, at TEXT NOT NULL, write TEXT)
"""
SCHEMA_VERSION = 4
"""`PRAGMA user_version` of a database `migrate` has brought up to date. 0: before
`study_keys` (a `study_terms` table ordered by value, which made a keyed search sort every
match); 1: with the indexes of `studies` on patient_id, patient_name, study_date and
accession_number, which no query reads (`study_keys` and `studies_listing` answer them) and
every study upsert wrote; 2: without `instances.metadata` (every metadata document a blob, a
second file per instance); 3: without the `FILE_COLUMNS` of `instances` (a retrieve read them
out of each record with `json_extract`: 0.5 ms for 100 instances, 0.1 from the columns)."""
_UNREAD_INDEXES = (
    "studies_patient_id",
    "studies_patient_name",
    "studies_study_date",
    "studies_accession_number",
)
FILE_COLUMNS = "transfer_syntax_uid, blob_key, size, has_file_meta"
"""The columns of `instances` that copy the record's `ports.InstanceFile` fields: what a
retrieve reads (`SqliteTagIndex.list_instance_files`), without the record."""
_FILE_COLUMN_DEFINITIONS = {
    "transfer_syntax_uid": "TEXT NOT NULL DEFAULT ''",
    "blob_key": "TEXT NOT NULL DEFAULT ''",
    "size": "INTEGER NOT NULL DEFAULT 0",
    "has_file_meta": "INTEGER NOT NULL DEFAULT 1",
}
"""Each of the `FILE_COLUMNS` as `migrate` adds it (every record has the first three;
`has_file_meta` came later, and records without it had File Meta)."""
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


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database written by an earlier version up to `SCHEMA_VERSION`, in the
    transaction that opens it (`make run` keeps its data across upgrades): version 0 gets
    the `study_keys` of every study and loses `study_terms` (4 s for 10,000 studies on the
    2-core machine under load, once); version 1 loses the indexes no query reads; version 2
    gets the column `instances.metadata`, NULL in its rows (their documents stay blobs);
    version 3 gets the `FILE_COLUMNS`, filled from each row's record (a record written before
    `has_file_meta` existed had File Meta: its default)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version < 1:
        db.execute("DROP TABLE IF EXISTS study_terms")
        after = ""
        while uids := [
            row[0]
            for row in db.execute(
                "SELECT study_uid FROM studies WHERE study_uid > ? ORDER BY study_uid LIMIT ?",
                (after, PAGE),
            )
        ]:
            write_study_keys(db, uids)
            after = uids[-1]
    if version < 2:
        for index in _UNREAD_INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {index}")
    if version < 3 and "metadata" not in {
        row[1] for row in db.execute("PRAGMA table_info(instances)")
    }:
        db.execute("ALTER TABLE instances ADD COLUMN metadata BLOB")
    if version < 4 and "blob_key" not in {
        row[1] for row in db.execute("PRAGMA table_info(instances)")
    }:
        for column, definition in _FILE_COLUMN_DEFINITIONS.items():
            db.execute(f"ALTER TABLE instances ADD COLUMN {column} {definition}")
        db.execute(
            "UPDATE instances SET"
            + ", ".join(
                f" {column} = coalesce(json_extract(record, '$.{column}'), {column})"
                for column in _FILE_COLUMN_DEFINITIONS
            )
        )
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def write_study_keys(db: sqlite3.Connection, study_uids: Iterable[str]) -> None:
    """Replace the `study_keys` rows of these studies by those of their `studies` rows (none
    for a study that no longer exists): after every change of a study's tags or modalities."""
    uids = list(study_uids)
    db.executemany("DELETE FROM study_keys WHERE study_uid = ?", [(uid,) for uid in uids])
    rows = [
        row
        for start in range(0, len(uids), PAGE)
        for row in db.execute(
            "SELECT study_uid, study_tags, modalities FROM studies"
            f" WHERE study_uid IN ({', '.join('?' * len(uids[start : start + PAGE]))})",
            uids[start : start + PAGE],
        )
    ]
    db.executemany(
        "INSERT OR IGNORE INTO study_keys (name, value, study_date, study_uid, term)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            key
            for uid, tags, modalities in rows
            for key in _study_key_rows(uid, json.loads(tags), json.loads(modalities))
        ],
    )


def _study_key_rows(
    study_uid: str, study_tags: dict[str, Any], modalities: list[str]
) -> Iterable[tuple[str, str, str, str, str]]:
    date = study_date(study_tags)
    for entry, term in search_terms(study_tags).items():
        name = term_name(entry)
        yield name, term, date, study_uid, term
        for bucket, value in prefix_keys(name, term):
            yield bucket, value, date, study_uid, term
    for modality in modalities:
        yield "ModalitiesInStudy", modality, date, study_uid, modality


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
