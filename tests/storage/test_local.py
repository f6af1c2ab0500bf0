"""Local-only checks: what the files and SQLite columns look like."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chalicelib.storage.local import LocalBlobStore, SqliteTagIndex
from tests.storage.conftest import SERIES, STUDY, build_record

KEY = "1.2.3/1.2.3.1/1.2.3.1.1/0123456789abcdef.dcm"


def test_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(KEY, b"data")
    store.put(KEY, b"data again")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [KEY]


def test_delete_prunes_emptied_folders(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(KEY, b"data")
    store.put("1.2.3/other.json", b"{}")
    store.delete(KEY)
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == ["1.2.3", "other.json"]


def test_store_instance_fills_search_columns(tmp_path: Path) -> None:
    index = SqliteTagIndex(tmp_path / "index.sqlite")
    index.store_instance(build_record(), overwrite=False)
    index.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        study = db.execute(
            "SELECT patient_id, patient_name, study_date, accession_number FROM studies"
            " WHERE study_uid = ?",
            (STUDY,),
        ).fetchone()
        series = db.execute(
            "SELECT modality FROM series WHERE series_uid = ?", (SERIES,)
        ).fetchone()
    db.close()
    assert study == ("PAT-1", "Doe^Jane", "20240102", "ACC-1")
    assert series == ("CT",)
