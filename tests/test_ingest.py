"""Write intents of chalicelib/ingest.py on both backends: what a store stopped between its
blob writes and its index commit leaves is removed by `remove_interrupted_writes`, which
never removes a blob the index points to, also while the same SOP Instance UID is stored
again."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import ImplicitVRLittleEndian

from chalicelib.context import Context
from chalicelib.ingest import (
    INTERRUPTED_WRITE_AGE,
    remove_interrupted_writes,
    store_instance,
    store_instances,
)
from chalicelib.server.delete import finish_pending_deletes
from chalicelib.storage import ports
from chalicelib.storage.records import RECORD_LIMIT, utc_stamp
from tests.conftest import make_context, testdata
from tests.corpus import storable

CT = "2020-08-12-Christopher.dcm"


class Killed(BaseException):
    """What a Lambda's timeout or a kill -9 is to the code it stops: nothing runs after it,
    no `except Exception` catches it."""


class KilledAtCommit:
    """A TagIndex whose process is killed when it is asked to commit (inject, don't patch)."""

    def __init__(self, index: ports.TagIndex) -> None:
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def store_instances(self, records: Any, overwrite: bool) -> Any:
        raise Killed


class RunsFirst:
    """A port wrapper that runs `race` once before its first `method` call."""

    def __init__(self, inner: Any, method: str, race: Any) -> None:
        self._inner = inner
        self._method = method
        self._race = race

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method or self._race is None:
            return attribute
        race, self._race = self._race, None

        def raced(*args: Any, **kwargs: Any) -> Any:
            race()
            return attribute(*args, **kwargs)

        return raced


def _now() -> datetime:
    """A moment after everything recorded so far (stamps are to the microsecond)."""
    before = utc_stamp()
    while utc_stamp() == before:
        pass
    return datetime.now(UTC)


def _aged(moment: datetime) -> datetime:
    """The sweep's `now` at which what was recorded before `moment` is old enough."""
    return moment + INTERRUPTED_WRITE_AGE


def _interrupted_store(context: Context, data: bytes) -> ports.BlobWrite:
    """Store `data` in a process killed at its index commit; its write intent."""
    killed = replace(context, index=KilledAtCommit(context.index))
    with pytest.raises(Killed):
        store_instance(killed, data)
    (write,) = context.index.stale_blob_writes(utc_stamp(_now()))
    return write


def _stored_keys(context: Context, sop_uid: str) -> list[str]:
    return context.index.find_instance(sop_uid).blob_keys()


def test_store_leaves_no_write_intent(context: Context) -> None:
    data = testdata(CT).read_bytes()
    first = store_instance(context, data)
    again = store_instance(context, data)  # kept: its own blobs removed
    assert (first.outcome, again.outcome) == ("created", "kept")
    assert context.index.stale_blob_writes(utc_stamp(_now())) == []
    assert remove_interrupted_writes(context.index, context.blobs, _aged(_now())) == 0
    assert all(context.blobs.exists(k) for k in _stored_keys(context, first.sop_instance_uid))


def test_store_instances_from_views_of_a_body_stores_their_bytes(context: Context) -> None:
    """STOW-RS hands ingest its parts as views of the request body (`Part.view`): each is
    stored byte for byte, its metadata read from the view."""
    files = [file.data for file in storable()[:3]]
    body = b"".join(b"--b\r\n\r\n" + data + b"\r\n" for data in files)
    views, start = [], 0
    for data in files:
        start = body.index(data, start)
        views.append(memoryview(body)[start : start + len(data)])
    results = store_instances(context, views)
    assert [r.status for r in results] == ["stored"] * len(files)
    for result, data in zip(results, files, strict=True):
        record = context.index.find_instance(result.sop_instance_uid)
        assert context.blobs.get(record.blob_key) == data
        assert record.size == len(data)


def test_remove_interrupted_writes_removes_a_stopped_store_once_old(context: Context) -> None:
    write = _interrupted_store(context, testdata(CT).read_bytes())
    assert write.keys and all(context.blobs.exists(k) for k in write.keys)
    with pytest.raises(ports.NotFound):
        context.index.find_instance(write.sop_uid)
    assert remove_interrupted_writes(context.index, context.blobs, _now()) == 0  # too young
    assert all(context.blobs.exists(k) for k in write.keys)
    assert remove_interrupted_writes(context.index, context.blobs, _aged(_now())) == len(write.keys)
    assert not any(context.blobs.exists(k) for k in write.keys)
    assert context.index.stale_blob_writes(utc_stamp(_now())) == []


def test_remove_interrupted_writes_keeps_what_the_index_points_to(context: Context) -> None:
    """A store stopped after its commit, before its intent ended: the blobs stay."""
    stored = store_instance(context, testdata(CT).read_bytes())
    record = context.index.find_instance(stored.sop_instance_uid)
    context.index.begin_blob_writes([record])  # as if its end had been lost
    assert remove_interrupted_writes(context.index, context.blobs, _aged(_now())) == 0
    assert all(context.blobs.exists(k) for k in record.blob_keys())
    assert context.index.stale_blob_writes(utc_stamp(_now())) == []


def test_sweep_during_a_restore_between_its_blob_writes_and_its_commit(
    context: Context,
) -> None:
    """The same SOP Instance UID, stopped once before its commit, is stored again; the sweep
    runs after the new blobs are written and before their commit. It removes the stopped
    store's blobs, not the new ones (their intent is young), and the store commits."""
    data = testdata(CT).read_bytes()
    stopped = _interrupted_store(context, data)
    between = _now()
    swept: list[int] = []
    racing = replace(context)
    racing.index = RunsFirst(
        context.index,
        "store_instances",
        lambda: swept.append(
            remove_interrupted_writes(context.index, context.blobs, _aged(between))
        ),
    )
    result = store_instance(racing, data)
    assert (result.status, swept) == ("stored", [len(stopped.keys)])
    assert not any(context.blobs.exists(k) for k in stopped.keys)
    keys = _stored_keys(context, result.sop_instance_uid)
    assert set(keys).isdisjoint(stopped.keys) and all(context.blobs.exists(k) for k in keys)
    assert context.index.stale_blob_writes(utc_stamp(_now())) == []


def test_restore_committed_while_the_sweep_runs_keeps_its_blobs(context: Context) -> None:
    """The sweep reads the index (the instance is not stored), then the same SOP Instance UID
    is stored again and committed before the sweep deletes: the new blobs stay."""
    data = testdata(CT).read_bytes()
    stopped = _interrupted_store(context, data)
    restored: list[str] = []
    blobs = RunsFirst(
        context.blobs,
        "delete_many",
        lambda: restored.append(store_instance(context, data).sop_instance_uid),
    )
    assert remove_interrupted_writes(context.index, blobs, _aged(_now())) == len(stopped.keys)
    keys = _stored_keys(context, restored[0])
    assert set(keys).isdisjoint(stopped.keys) and all(context.blobs.exists(k) for k in keys)
    assert not any(context.blobs.exists(k) for k in stopped.keys)
    assert context.index.stale_blob_writes(utc_stamp(_now())) == []


class RecordsIntentWrites:
    """A TagIndex that keeps the blob keys of each `begin_blob_writes` call."""

    def __init__(self, index: ports.TagIndex) -> None:
        self._index = index
        self.calls: list[set[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def begin_blob_writes(self, records: Any) -> None:
        self.calls.append({key for record in records for key in record.blob_keys()})
        self._index.begin_blob_writes(records)


class ChecksIntent:
    """A BlobStore that fails a put whose key no write intent names yet."""

    def __init__(self, blobs: ports.BlobStore, index: RecordsIntentWrites) -> None:
        self._blobs = blobs
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        assert any(key in keys for keys in self._index.calls), f"{key} written before its intent"
        self._blobs.put(key, data, content_type)


def test_a_request_records_its_write_intents_in_one_index_write_before_its_blobs(
    context: Context,
) -> None:
    """One index write for all the parts of a request, not one per part (a SQLite transaction
    or a DynamoDB write each), and every blob written after it."""
    parts = [file.data for file in storable()[:6]]
    index = RecordsIntentWrites(context.index)
    watched = replace(context, index=index)
    watched.blobs = ChecksIntent(context.blobs, index)
    results = store_instances(watched, parts)
    assert [r.status for r in results] == ["stored"] * len(parts)
    assert len(index.calls) == 1
    assert index.calls[0] == {
        key for r in results for key in context.index.find_instance(r.sop_instance_uid).blob_keys()
    }


class RefusesDeletes:
    """A BlobStore that removes nothing: `delete_many` reports every key as failed, as S3
    does for the keys of a DeleteObjects it could not remove (inject, don't patch)."""

    def __init__(self, blobs: ports.BlobStore) -> None:
        self._blobs = blobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def delete_many(self, keys: Any) -> dict[str, str]:
        return {key: "AccessDenied" for key in keys}


def test_replaced_blobs_whose_delete_fails_are_left_to_the_pending_delete_sweep(
    backend: str, tmp_path: Path
) -> None:
    context = make_context(backend, tmp_path, overwrite_instances=True)
    data = testdata(CT).read_bytes()
    first = store_instance(context, data)
    old = _stored_keys(context, first.sop_instance_uid)
    again = store_instance(replace(context, blobs=RefusesDeletes(context.blobs)), data)
    assert (first.outcome, again.outcome) == ("created", "replaced")
    assert old and all(context.blobs.exists(k) for k in old)
    assert sorted(context.index.pending_blob_deletes()) == sorted(old)
    assert finish_pending_deletes(context.index, context.blobs) == len(old)
    assert not any(context.blobs.exists(k) for k in old)
    new = _stored_keys(context, again.sop_instance_uid)
    assert set(new).isdisjoint(old) and all(context.blobs.exists(k) for k in new)


def _implicit_vr_with(keyword: str, value: str) -> bytes:
    """The CT with `value` in `keyword`, in Implicit VR Little Endian (whose reader takes a
    value of any length, where explicit VR stops a short VR at 65,535 bytes)."""
    ds = pydicom.dcmread(testdata(CT))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds[keyword] = DataElement(ds[keyword].tag, ds[keyword].VR, value)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("keyword", "length", "named"),
    [
        ("StudyDescription", 500_000, "(0008,1030) StudyDescription 500,0"),
        ("PatientName", 150_000, "(0010,0010) PatientName 150,0"),  # study item: 3 copies
    ],
)
def test_store_refuses_an_instance_too_large_for_the_index_before_any_write(
    context: Context, keyword: str, length: int, named: str
) -> None:
    """A 500,000-byte StudyDescription (LO: 64 characters at most) passed DynamoDB's 400 KB
    item, and a 150,000-byte PatientName its study item: the store failed as a backend error
    (0xA700, so STOW answered 503: retry later), where SQLite stored it. Both refuse it now,
    naming it, before a blob is written."""
    data = _implicit_vr_with(keyword, "A" * length)
    index = RecordsIntentWrites(context.index)
    result = store_instance(replace(context, index=index), data)
    assert (result.status, result.failure_reason) == ("failed", 0xC000)
    assert named in result.message
    assert f"over the index's limit of {RECORD_LIMIT:,}" in result.message
    assert index.calls == []  # no write intent, so no blob
    with pytest.raises(ports.NotFound):
        context.index.get_study(result.study_uid)
    assert store_instance(context, testdata(CT).read_bytes()).status == "stored"
