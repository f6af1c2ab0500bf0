"""Local-only checks: what the files and SQLite columns look like."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.context import Context
from chalicelib.dicom.matching import Narrowing
from chalicelib.ingest import store_instance
from chalicelib.storage.local import LocalBlobStore, SqliteTagIndex
from chalicelib.storage.local.files import PRIVATE_FOLDER
from chalicelib.storage.local.tables import SCHEMA_VERSION, write_study_keys
from chalicelib.storage.ports import InstanceFile, InstanceRecord, NotFound
from tests.conftest import make_context, testdata
from tests.storage.conftest import SERIES, STUDY, build_record

KEY = "1.2.3/1.2.3.1/1.2.3.1.1/0123456789abcdef.dcm"
SWEPT = ".older-temp-files-removed"
"""The folder that marks the temporary files of the older scheme removed (once per store)."""


def test_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(KEY, b"data")
    store.put(KEY, b"data again")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [KEY]


def _skip_without_top_folder_flag(tmp_path: Path) -> None:
    """Skip where the file system refuses `chattr +T` (tmpfs, xfs, btrfs): `mark_top_folder`
    rightly does nothing there. `lsattr` alone works on some of them."""
    scratch = tmp_path / "top-flag-probe"
    scratch.mkdir()
    try:
        probe = subprocess.run(["chattr", "+T", str(scratch)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no chattr here")
    if probe.returncode != 0:
        pytest.skip(f"the file system refuses chattr +T: {probe.stderr.strip()}")


def _file_attributes(folder: Path) -> str:
    return subprocess.run(
        ["lsattr", "-d", str(folder)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def test_blob_folder_is_the_top_of_a_hierarchy_for_ext4(tmp_path: Path) -> None:
    """ext4 spreads the store's folders as top-level ones (`chattr +T`) instead of making
    every blob's inode beside a busy parent such as /tmp (DESIGN.md, Ingest)."""
    _skip_without_top_folder_flag(tmp_path)
    LocalBlobStore(tmp_path / "blobs")
    assert "T" in _file_attributes(tmp_path / "blobs")


def test_older_store_remakes_its_empty_temp_folder_once_marked(tmp_path: Path) -> None:
    """The flag places only folders made after it: an older store's `.tmp`, where every
    blob's inode is made, is made again (a mode `make_folders` never gives tells them apart)."""
    _skip_without_top_folder_flag(tmp_path)
    temp = tmp_path / "blobs" / ".tmp"
    temp.mkdir(parents=True)
    temp.chmod(0o750)
    LocalBlobStore(tmp_path / "blobs")
    assert "T" in _file_attributes(tmp_path / "blobs")
    assert temp.stat().st_mode & 0o777 == PRIVATE_FOLDER


def test_older_store_keeps_a_temp_folder_a_running_process_writes_in(tmp_path: Path) -> None:
    _skip_without_top_folder_flag(tmp_path)
    temp = tmp_path / "blobs" / ".tmp"
    temp.mkdir(parents=True)
    temp.chmod(0o750)
    in_progress = temp / f"{os.getpid()}-1.tmp"
    in_progress.write_bytes(b"being written")
    LocalBlobStore(tmp_path / "blobs")
    assert in_progress.read_bytes() == b"being written"
    assert temp.stat().st_mode & 0o777 == 0o750


def test_delete_prunes_emptied_folders(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(KEY, b"data")
    store.put("1.2.3/other.json", b"{}")
    store.delete(KEY)
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == [
        SWEPT,
        ".tmp",
        "1.2.3",
        "other.json",
    ]


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


def test_store_instance_writes_one_file_in_the_series_folder(tmp_path: Path) -> None:
    """No folder per instance: creating it cost as much as writing the instance (an inode
    each, ext4 here); and no second file: the metadata document is in the index row."""
    context = make_context("local", tmp_path)
    result = store_instance(context, testdata("ColorTestImageJ.dcm").read_bytes())
    assert result.status == "stored"
    series = tmp_path / "data" / "blobs" / result.study_uid / result.series_uid
    [entry] = list(series.iterdir())
    assert entry.is_file() and entry.name.startswith(f"{result.sop_instance_uid}_")
    assert entry.suffix == ".dcm"
    record = context.index.find_instance(result.sop_instance_uid)
    assert record.metadata_key is None and record.metadata_size > 0
    [document] = context.index.metadata_documents([result.sop_instance_uid]).values()
    assert len(document) == record.metadata_size
    assert json.loads(gzip.decompress(document))["00080018"]["Value"] == [record.sop_uid]


def _hammer(*loops: Callable[[int], object], rounds: int) -> list[BaseException]:
    """Run each loop body `rounds` times in its own thread; the errors they raised."""
    errors: list[BaseException] = []

    def run(body: Callable[[int], object]) -> None:
        try:
            for n in range(rounds):
                body(n)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(body,)) for body in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# Issue 11: a QIDO instance search read study, series and instances apart; a delete committed
# between two reads raised KeyError (39 answers 500 in 30 s of 4 writers and 3 deleters).
def test_search_during_deletes_never_fails(tmp_path: Path) -> None:
    index = SqliteTagIndex(tmp_path / "index.sqlite")
    searched = []

    def store_and_delete(n: int) -> None:
        for series in range(3):
            sop = f"{SERIES}.{series}.{n}"
            index.store_instance(build_record(series=f"{SERIES}.{series}", sop=sop), False)
        with contextlib.suppress(NotFound):
            index.delete_study(STUDY)

    def search(n: int) -> None:
        searched.append(len(list(index.search("instance", [], None))))

    errors = _hammer(store_and_delete, store_and_delete, search, search, rounds=150)
    assert errors == []
    assert len(searched) == 2 * 150


# Issue 11: a write racing the removal of its (emptied, or cache) folder raised
# FileExistsError or FileNotFoundError: STOW and series metadata answered 500.
def test_put_while_folders_are_removed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)

    def put(n: int) -> None:
        store.put(f"cache/metadata/{STUDY}/{SERIES}/{n % 2}.gz", b"x" * 1000)
        store.put(f"{STUDY}/{SERIES}/{n}/a.dcm", b"y")

    def remove(n: int) -> None:
        store.delete_prefix(f"cache/metadata/{STUDY}/")
        store.delete(f"{STUDY}/{SERIES}/{n}/a.dcm")

    assert _hammer(put, put, remove, remove, rounds=2000) == []


# Issue 11: a kill mid-ingest left `.tmp` files beside the blobs, for ever.
def test_temporary_files_of_dead_processes_removed_at_start(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    orphan = tmp_path / ".tmp" / f"{dead}-abc.tmp"
    orphan.write_bytes(b"half a file")
    ours = tmp_path / ".tmp" / f"{os.getpid()}-def.tmp"
    ours.write_bytes(b"being written")
    LocalBlobStore(tmp_path)
    assert not orphan.exists()
    assert ours.exists()


# Before writes went through root/.tmp, `put` wrote `.{8 random}.tmp` beside the blob: a kill
# mid-write left those for ever (the start-up sweep looked in root/.tmp only).
def test_temporary_files_of_the_older_scheme_removed_at_start(tmp_path: Path) -> None:
    blob = tmp_path / KEY
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"stored")
    beside = blob.parent / ".k3x_9a0z.tmp"
    beside.write_bytes(b"half a file")
    alone = tmp_path / "1.2.3" / "1.2.3.9" / "1.2.3.9.1" / ".q0w9e8r7.tmp"
    alone.parent.mkdir(parents=True)
    alone.write_bytes(b"half a file")
    LocalBlobStore(tmp_path)
    assert (tmp_path / SWEPT).is_dir()
    assert not beside.exists()
    assert not alone.exists()
    assert not (tmp_path / "1.2.3" / "1.2.3.9").exists()  # emptied folders pruned
    assert blob.read_bytes() == b"stored"


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by path relative to `root`."""
    return {
        str(path.relative_to(root)): path.stat().st_mode & 0o777
        for path in [root, *root.rglob("*")]
    }


# Patient data: the data folder is readable by its owner only, whatever the umask.
def test_blobs_and_folders_private(tmp_path: Path) -> None:
    with _umask(0o022):
        blobs = LocalBlobStore(tmp_path / "blobs")
        blobs.put(KEY, b"patient data")
    modes = _modes(tmp_path / "blobs")
    assert len(modes) > 4
    assert {path: mode for path, mode in modes.items() if mode not in (0o600, 0o700)} == {}
    assert modes[KEY] == 0o600


def test_index_file_private(tmp_path: Path) -> None:
    with _umask(0o022):
        index = SqliteTagIndex(tmp_path / "data" / "index.sqlite")
        index.store_instance(build_record(), overwrite=False)
    modes = _modes(tmp_path / "data")
    assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"} <= set(modes)
    assert {path: mode for path, mode in modes.items() if mode not in (0o600, 0o700)} == {}
    index.close()


def test_index_file_of_an_older_version_made_private(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with _umask(0o022):
        SqliteTagIndex(path).close()
        path.chmod(0o644)
        SqliteTagIndex(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_local_data_folder_private(tmp_path: Path) -> None:
    with _umask(0o022):
        context = make_context("local", tmp_path)
        store_instance(context, testdata("ColorTestImageJ.dcm").read_bytes())
    modes = _modes(tmp_path / "data")
    assert modes["."] == 0o700
    assert modes["index.sqlite"] == 0o600
    assert {path: mode for path, mode in modes.items() if mode not in (0o600, 0o700)} == {}


V0_DUMP = Path(__file__).parent / "data" / "index-v0.sql"
"""An index of version 0 (`study_terms`, before `study_keys`): `SqliteTagIndex` at ad2db95
stored `v0_records()` and deleted the instance of study 1.2.v0.5, then `iterdump` wrote it."""


def v0_records() -> list[InstanceRecord]:
    """Twelve studies: three surnames (one with an ideographic group), two PatientIDs, dates
    over two years and one absent, CT or MR or both (two series)."""
    records = []
    for n in range(12):
        study = f"1.2.v0.{n}"
        record = build_record(study, f"{study}.1", f"{study}.1.1", modality=["CT", "MR"][n % 2])
        name = {"Alphabetic": f"{['SMITH', 'Smyth', 'DOE'][n % 3]}^{n}"}
        if n % 4 == 0:
            name["Ideographic"] = "山田^太郎"
        record.study_tags.update(
            {
                "00100010": {"vr": "PN", "Value": [name]},
                "00100020": {"vr": "LO", "Value": [f"PAT-{n % 2}"]},
                "00080050": {"vr": "SH", "Value": [f"ACC-{n}"]},
                "00080020": {"vr": "DA", "Value": [f"20{23 + n % 2}0{1 + n % 9}1{n % 10}"]},
            }
        )
        if n == 7:
            del record.study_tags["00080020"]
        records.append(record)
        if n % 3 == 0:
            second = build_record(study, f"{study}.2", f"{study}.2.1", modality="SR")
            second.study_tags = record.study_tags
            records.append(second)
    return records


def test_index_of_version_0_migrated_at_start(tmp_path: Path) -> None:
    """`make run` keeps its index across upgrades: an index written before `study_keys` gets
    them when it opens (and loses `study_terms` and the indexes no query reads), then answers
    keyed searches as an index written by this version does; opening it again changes
    nothing."""
    path = tmp_path / "index.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(V0_DUMP.read_text())
    fresh = SqliteTagIndex(tmp_path / "fresh.sqlite")
    fresh.store_instances(v0_records(), False)
    fresh.delete_study("1.2.v0.5")
    hints = [
        Narrowing("PatientName", "prefix", ("SM",)),
        Narrowing("PatientName", "prefix", ("SMYTH^1",)),
        Narrowing("PatientName", "exact", ("DOE^2",)),
        Narrowing("PatientName", "prefix", ("山",)),
        Narrowing("PatientID", "exact", ("PAT-1",)),
        Narrowing("AccessionNumber", "prefix", ("ACC-1",)),
        Narrowing("ModalitiesInStudy", "exact", ("SR", "MR")),
    ]

    def answers(index: SqliteTagIndex) -> list[list[str]]:
        found = [[c.study.study_uid for c in index.search("study", [h], None)] for h in hints]
        found += [
            [c.series.series_uid for c in index.search("series", [h], None) if c.series]
            for h in hints
        ]
        return found

    expected = answers(fresh)
    assert all(expected), expected  # every hint finds studies
    for _ in range(2):
        index = SqliteTagIndex(path)
        assert answers(index) == expected
        index.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        (version,) = db.execute("PRAGMA user_version").fetchone()
    assert not tables & {"study_terms", "studies_patient_name", "studies_study_date"}
    assert version == SCHEMA_VERSION
    fresh.close()


V2_DUMP = Path(__file__).parent / "data" / "index-v2.sql"
V2_BLOBS = Path(__file__).parent / "data" / "v2-blobs"
"""An index of version 2 and its metadata blobs (`*.json.gz`, before the index kept the
documents): the server at 109b834 stored `V2_FILES`, then `iterdump` wrote the index. The
instances' own files are the corpus files, copied in place by the test."""
V2_FILES = ("MultiframeWindowing.dcm", "2026-03-16-OD-OF-OL.dcm")


def test_index_of_version_2_reads_its_metadata_blobs_then_stores_without_them(
    tmp_path: Path,
) -> None:
    """`make run` keeps its data across upgrades: the instances stored with a metadata blob
    answer Retrieve Metadata, QIDO-RS includefield=all and rendered frames as the same files
    stored now (document in the index) do; replacing one removes its blob and keeps the new
    document in the index; deleting the other removes its files."""
    from chalice.test import Client

    from chalicelib.server.api import create_app

    data = tmp_path / "upgraded" / "data"
    data.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(data / "index.sqlite")) as db:
        db.executescript(V2_DUMP.read_text())
    shutil.copytree(V2_BLOBS, data / "blobs")
    fresh = make_context("local", tmp_path / "fresh")
    sources = {}
    for name in V2_FILES:
        result = store_instance(fresh, testdata(name).read_bytes())
        assert result.status == "stored", result.message
        sources[result.sop_instance_uid] = name
    upgraded = make_context("local", tmp_path / "upgraded", overwrite_instances=True)
    old = [upgraded.index.find_instance(sop) for sop in sources]
    assert all(r.metadata_key and upgraded.blobs.exists(r.metadata_key) for r in old)
    for record in old:
        upgraded.blobs.put(record.blob_key, testdata(sources[record.sop_uid]).read_bytes())

    def answers(context: Context, records: list[InstanceRecord]) -> list[object]:
        """Each record's metadata, its series' metadata and includefield=all, and the first
        record's first frame rendered (its module is read from the metadata)."""
        client = Client(create_app(lambda: context))
        found: list[object] = []
        for record in records:
            series = f"/dicom-web/studies/{record.study_uid}/series/{record.series_uid}"
            instance = f"{series}/instances/{record.sop_uid}"
            for path in (f"{instance}/metadata", f"{series}/metadata"):
                response = client.http.get(path, headers={"Accept": "application/dicom+json"})
                assert response.status_code == 200, path
                found.append(json.loads(response.body))
            response = client.http.get(f"{series}/instances?includefield=all")
            found.append(json.loads(response.body))
        first = records[0]
        frame = (
            f"/dicom-web/studies/{first.study_uid}/series/{first.series_uid}"
            f"/instances/{first.sop_uid}/frames/1/rendered"
        )
        response = client.http.get(frame, headers={"Accept": "image/png"})
        assert response.status_code == 200
        return [*found, response.body]

    assert answers(upgraded, old) == answers(fresh, old)
    replaced, deleted = old
    result = store_instance(upgraded, testdata(sources[replaced.sop_uid]).read_bytes())
    assert (result.status, result.outcome) == ("stored", "replaced")
    assert not any(upgraded.blobs.exists(key) for key in replaced.blob_keys())
    record = upgraded.index.find_instance(replaced.sop_uid)
    assert record.metadata_key is None and upgraded.index.metadata_documents([record.sop_uid])
    upgraded.index.delete_study(deleted.study_uid)
    from chalicelib.server.delete import finish_pending_deletes

    assert finish_pending_deletes(upgraded.index, upgraded.blobs) == 2  # its bytes, metadata
    assert not any(upgraded.blobs.exists(key) for key in deleted.blob_keys())
    assert answers(upgraded, [replaced]) == answers(fresh, [replaced])
    with contextlib.closing(sqlite3.connect(data / "index.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


V3_DUMP = Path(__file__).parent / "data" / "index-v3.sql"
"""An index of version 3 (before `FILE_COLUMNS`): `SqliteTagIndex` at 26a542b stored
`v3_records()`, replaced the last one and deleted the second, then `iterdump` wrote it."""


def v3_records() -> list[InstanceRecord]:
    """Two studies, three series, six instances of several transfer syntaxes, sizes, and one
    without File Meta."""
    records = []
    for n, (study, series) in enumerate(
        [("1.2.v3.1", "1.2.v3.1.1")] * 3
        + [("1.2.v3.1", "1.2.v3.1.2"), ("1.2.v3.1", "1.2.v3.1.2"), ("1.2.v3.2", "1.2.v3.2.1")]
    ):
        record = build_record(study, series, f"{series}.{n}", blob_key=f"{study}/{series}/{n}.dcm")
        record.transfer_syntax_uid = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"][n % 2]
        record.size = 1000 + n
        record.has_file_meta = n != 3
        records.append(record)
    return records


def test_index_of_version_3_gets_its_file_columns_at_start(tmp_path: Path) -> None:
    """An index written before the `FILE_COLUMNS` gets them from its records when it opens (a
    record without `has_file_meta`, written before it existed, had File Meta); its retrieve
    listings are then those of the same stores and delete on an index of this version."""
    path = tmp_path / "index.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(V3_DUMP.read_text())
        db.execute(  # as the records written before `has_file_meta` existed
            "UPDATE instances SET record = json_remove(record, '$.has_file_meta')"
            " WHERE sop_uid = '1.2.v3.1.1.0'"
        )
        db.commit()
    fresh = SqliteTagIndex(tmp_path / "fresh.sqlite")
    records = v3_records()
    fresh.store_instances(records, False)
    replaced = dataclasses.replace(records[-1], blob_key="1.2.v3.2/1.2.v3.2.1/5-again.dcm")
    fresh.store_instance(replaced, True)
    fresh.delete_instance("1.2.v3.1", "1.2.v3.1.1", "1.2.v3.1.1.1")

    def files(index: SqliteTagIndex) -> list[list[InstanceFile]]:
        found = [index.list_instance_files(study) for study in ("1.2.v3.1", "1.2.v3.2")]
        found += [index.list_instance_files("1.2.v3.1", "1.2.v3.1.2")]
        return found + [
            index.list_instance_files(r.study_uid, r.series_uid, r.sop_uid) for r in records
        ]

    expected = files(fresh)
    assert sum(map(len, expected)) == 5 + 2 + 5  # both studies, a series, every instance left
    for _ in range(2):
        index = SqliteTagIndex(path)
        assert files(index) == expected
        index.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        db.execute("UPDATE instances SET record = '{}'")  # a retrieve listing reads no record
        db.commit()
    index = SqliteTagIndex(path)
    assert files(index) == expected
    index.close()
    fresh.close()


def test_study_keys_written_only_on_change_are_those_of_a_full_rewrite(tmp_path: Path) -> None:
    """A store rewrites a study's `study_keys` only when its tags or modalities change: after
    each step the rows are those `write_study_keys` writes from scratch."""
    path = tmp_path / "index.sqlite"
    index = SqliteTagIndex(path)
    renamed = build_record(sop=f"{SERIES}.4")
    renamed.study_tags["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Roe^Richard"}]}
    steps = [
        lambda: index.store_instances([build_record(sop=f"{SERIES}.{n}") for n in (1, 2)], False),
        lambda: index.store_instance(build_record(sop=f"{SERIES}.3"), False),  # keys unchanged
        lambda: index.store_instance(build_record("1.2.9", "1.2.9.1", "1.2.9.1.1"), False),
        lambda: index.store_instance(
            build_record(series="1.2.3.2", sop="1.2.3.2.1", modality="MR"), False
        ),
        lambda: index.store_instance(renamed, False),
        lambda: index.store_instance(build_record(series="1.2.3.2", sop="1.2.3.2.1"), True),
        lambda: index.delete_instance(STUDY, SERIES, f"{SERIES}.4"),
    ]

    def study_keys(db: sqlite3.Connection) -> list[tuple[str, ...]]:
        return db.execute("SELECT * FROM study_keys ORDER BY 1, 2, 3, 4, 5").fetchall()

    seen = []
    for step in steps:
        step()
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            stored = study_keys(db)
            db.execute("BEGIN")
            write_study_keys(db, [row[0] for row in db.execute("SELECT study_uid FROM studies")])
            assert stored == study_keys(db)
            db.execute("ROLLBACK")
        seen.append({(name, value) for name, value, *_ in stored})
    assert ("PatientName", "ROE^RICHARD") in seen[4] - seen[3]  # the steps change keys
    assert ("ModalitiesInStudy", "MR") in seen[3] - seen[5]
    index.close()
