"""DELETE of studies, series and instances (an extension) over HTTP on both backends."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from chalice.test import Client
from pydicom.uid import generate_uid

from chalicelib.context import Context
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.api import create_app
from chalicelib.server.cache import METADATA_PREFIX
from chalicelib.server.delete import derived_entries, finish_pending_deletes
from chalicelib.server.rendered import thumbnail_folder, thumbnail_keys
from chalicelib.storage import ports
from tests.conftest import deny_s3_deletes, make_context, testdata

CT = "2020-08-12-Christopher.dcm"


def _variant(series_uid: str | None = None) -> bytes:
    ds = pydicom.dcmread(testdata(CT))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _store(context: Context, data: bytes) -> IngestResult:
    result = store_instance(context, data)
    assert result.status == "stored", result.message
    return result


@pytest.fixture
def study(context: Context) -> list[IngestResult]:
    """One study: series A with two instances, series B with one."""
    first = _store(context, testdata(CT).read_bytes())
    second = _store(context, _variant())
    other = _store(context, _variant(series_uid=generate_uid()))
    return [first, second, other]


def _path(r: IngestResult, level: str = "instance") -> str:
    path = f"/dicom-web/studies/{r.study_uid}"
    if level in ("series", "instance"):
        path += f"/series/{r.series_uid}"
    if level == "instance":
        path += f"/instances/{r.sop_instance_uid}"
    return path


def _get(client: Client, path: str, accept: str = "*/*") -> Any:
    return client.http.get(path, headers={"Accept": accept})


def _records(context: Context, r: IngestResult) -> list[ports.InstanceRecord]:
    return context.index.list_instances(r.study_uid)


def _metadata_stored(context: Context, record: ports.InstanceRecord) -> bool:
    """Whether the instance's metadata document is stored: its blob, or in the index."""
    if record.metadata_key:
        return context.blobs.exists(record.metadata_key)
    return record.sop_uid in context.index.metadata_documents([record.sop_uid])


def test_delete_instance(client: Client, context: Context, study: list[IngestResult]) -> None:
    first, second, other = study
    record = context.index.get_instance(first.study_uid, first.series_uid, first.sop_instance_uid)
    version = context.index.get_series(first.study_uid, first.series_uid).version
    assert _get(client, _path(first) + "/thumbnail").status_code == 200
    assert context.blobs.exists(thumbnail_keys(*_uids(first))[0])

    response = client.http.delete(_path(first))
    assert response.status_code == 204 and response.body == b""

    assert client.http.delete(_path(first)).status_code == 404
    assert _get(client, _path(first)).status_code == 404
    assert _get(client, _path(first) + "/rendered").status_code == 404
    wado = f"/wado?requestType=WADO&objectUID={first.sop_instance_uid}"
    assert _get(client, wado).status_code == 404
    assert not context.blobs.exists(record.blob_key)
    assert not _metadata_stored(context, record)
    assert not context.blobs.exists(thumbnail_keys(*_uids(first))[0])
    # Aggregates stay exact and the series version moves on.
    series = context.index.get_series(first.study_uid, first.series_uid)
    assert series.num_instances == 1 and series.version > version
    study_record = context.index.get_study(first.study_uid)
    assert (study_record.num_series, study_record.num_instances) == (2, 2)
    assert sorted(r.sop_uid for r in _records(context, first)) == sorted(
        [second.sop_instance_uid, other.sop_instance_uid]
    )
    assert _get(client, _path(second, "series")).status_code == 200


def _uids(r: IngestResult) -> tuple[str, str, str]:
    return r.study_uid, r.series_uid, r.sop_instance_uid


def test_delete_series(client: Client, context: Context, study: list[IngestResult]) -> None:
    first, _, other = study
    assert _get(client, _path(first, "series") + "/thumbnail").status_code == 200
    assert client.http.delete(_path(first, "series")).status_code == 204
    assert _get(client, _path(first, "series")).status_code == 404
    assert client.http.delete(_path(first, "series")).status_code == 404
    assert not context.blobs.exists(thumbnail_keys(first.study_uid, first.series_uid)[0])
    study_record = context.index.get_study(first.study_uid)
    assert (study_record.num_series, study_record.num_instances) == (1, 1)
    assert [r.sop_uid for r in _records(context, first)] == [other.sop_instance_uid]


def test_delete_study(client: Client, context: Context, study: list[IngestResult]) -> None:
    first = study[0]
    records = _records(context, first)
    assert _get(client, _path(first, "study") + "/thumbnail").status_code == 200
    assert client.http.delete(_path(first, "study")).status_code == 204
    assert _get(client, _path(first, "study")).status_code == 404
    assert _records(context, first) == []
    with pytest.raises(ports.NotFound):
        context.index.get_study(first.study_uid)
    assert all(not context.blobs.exists(r.blob_key) for r in records)
    assert not context.blobs.exists(thumbnail_keys(first.study_uid)[0])
    assert list(context.index.iter_studies()) == []
    # The same file can be stored again afterwards.
    _store(context, testdata(CT).read_bytes())
    assert _get(client, _path(first)).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/studies/1.2.3",
        "/dicom-web/studies/1.2.3/series/1.2.4",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5",
        "/dicom-web/studies/not..a.uid",
    ],
)
def test_delete_unknown_is_404(client: Client, path: str) -> None:
    response = client.http.delete(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


def test_delete_studies_stays_405(client: Client) -> None:
    response = client.http.delete("/dicom-web/studies")
    assert response.status_code == 405
    assert "DELETE" not in response.headers["Allow"]


def test_delete_disabled(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, enable_delete=False)
    r = _store(context, testdata(CT).read_bytes())
    client = Client(create_app(lambda: context))
    response = client.http.delete(_path(r))
    assert response.status_code == 405
    assert "DELETE" not in response.headers["Allow"]
    assert _get(client, _path(r)).status_code == 200


class RestoreDuringDelete:
    """A TagIndex that lets a store of the same bytes commit right after a delete's commit:
    the racing interleaving, forced (inject, don't patch)."""

    def __init__(self, index: ports.TagIndex, restore: Any) -> None:
        self._index = index
        self._restore = restore

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> ports.DeleteResult:
        result = self._index.delete_instance(study_uid, series_uid, sop_uid)
        self._restore()
        return result


def test_delete_racing_a_store_keeps_the_blob(context: Context) -> None:
    data = testdata(CT).read_bytes()
    r = _store(context, data)
    racing = replace(context)
    racing.index = RestoreDuringDelete(context.index, lambda: _store(context, data))
    client = Client(create_app(lambda: racing))
    assert client.http.delete(_path(r)).status_code == 204
    record = context.index.get_instance(*_uids(r))
    assert context.blobs.exists(record.blob_key)
    assert _metadata_stored(context, record)
    assert _get(client, _path(r)).status_code == 200


def test_derived_entries_cover_the_resource_what_it_holds_and_its_parents() -> None:
    study, series, instance = (
        set(derived_entries("1.1")),
        set(derived_entries("1.1", "1.2")),
        set(derived_entries("1.1", "1.2", "1.3")),
    )
    assert {"cache/metadata/1.1/", *thumbnail_keys("1.1")} <= study & series & instance
    assert thumbnail_folder("1.1") in study and thumbnail_folder("1.1") not in series
    assert {thumbnail_folder("1.1", "1.2"), *thumbnail_keys("1.1", "1.2")} <= series
    assert set(thumbnail_keys("1.1", "1.2", "1.3")) <= instance
    assert thumbnail_folder("1.1", "1.2") not in instance


def test_delete_stopped_after_its_index_commit_leaves_no_derived_document(
    context: Context, study: list[IngestResult]
) -> None:
    """The cached metadata and thumbnails of a deleted series are recorded as pending deletes
    before the index delete: a DELETE stopped right after its commit (a Lambda's timeout)
    leaves them to the next DELETE, start or sweep instead of for good."""
    first = study[0]
    client = Client(create_app(lambda: context))
    for path, accept in (
        (f"{_path(first, 'series')}/thumbnail", "image/jpeg"),
        (f"{_path(first)}/thumbnail", "image/jpeg"),
        (f"{_path(first, 'series')}/metadata", "application/dicom+json"),
    ):
        assert _get(client, path, accept).status_code == 200
    uids = (first.study_uid, first.series_uid)
    cached = [
        thumbnail_keys(*uids)[0],
        thumbnail_keys(*uids, first.sop_instance_uid)[0],
        f"cache/metadata/{first.study_uid}/{first.series_uid}.json.gz",
    ]
    assert all(context.blobs.exists(key) for key in cached)
    stopping = replace(context)
    stopping.blobs = StopsAfterDeletes(context.blobs, 0)
    stopped = Client(create_app(lambda: stopping))
    assert stopped.http.delete(_path(first, "series")).status_code == 500  # stopped
    assert all(context.blobs.exists(key) for key in cached)
    assert finish_pending_deletes(context.index, context.blobs) > 0
    assert not [key for key in cached if context.blobs.exists(key)]
    assert context.index.pending_blob_deletes() == []


def test_delete_interrupted_before_blob_removal_finishes_at_start(tmp_path: Path) -> None:
    """Issue 11: a DELETE killed between its index commit and its blob removal left the
    files for ever; the intent recorded with the commit is finished when the store opens."""
    from chalicelib.context import build_context

    context = make_context("local", tmp_path)
    stored = store_instance(context, testdata("ColorTestImageJ.dcm").read_bytes())
    record = context.index.find_instance(stored.sop_instance_uid)
    context.index.delete_study(stored.study_uid)  # the index commit, then the "kill"
    assert context.blobs.exists(record.blob_key)
    assert sorted(context.index.pending_blob_deletes()) == sorted(record.blob_keys())
    restarted = build_context(context.settings)
    assert not any(restarted.blobs.exists(key) for key in record.blob_keys())
    assert restarted.index.pending_blob_deletes() == []


def test_delete_leaves_no_pending_intent(client: Client, context: Context) -> None:
    stored = store_instance(context, testdata("ColorTestImageJ.dcm").read_bytes())
    assert client.http.delete(f"/dicom-web/studies/{stored.study_uid}").status_code == 204
    assert context.index.pending_blob_deletes() == []


def test_delete_interrupted_before_blob_removal_finished_by_next_delete(
    client: Client, context: Context
) -> None:
    """Issue 11 on both backends (a Lambda stopped after the index delete has no start-up to
    finish it): the intent recorded with the index commit is finished by the next DELETE."""
    interrupted = _store(context, testdata(CT).read_bytes())
    record = context.index.find_instance(interrupted.sop_instance_uid)
    context.index.delete_study(interrupted.study_uid)  # the index commit, then the "kill"
    assert context.blobs.exists(record.blob_key)
    later = _store(context, testdata("ColorTestImageJ.dcm").read_bytes())
    assert client.http.delete(_path(later, "study")).status_code == 204
    assert not context.blobs.exists(record.blob_key)
    assert not _metadata_stored(context, record)
    assert context.index.pending_blob_deletes() == []


class Stopped(Exception):
    """What a Lambda's timeout is to the code it stops: nothing catches it."""


class StopsAfterDeletes:
    """A BlobStore that is stopped at its `calls + 1`-th delete_many (inject, don't patch)."""

    def __init__(self, blobs: ports.BlobStore, calls: int) -> None:
        self._blobs = blobs
        self._left = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def delete_many(self, keys: list[str]) -> dict[str, str]:
        self._left -= 1
        if self._left < 0:
            raise Stopped(keys)
        return self._blobs.delete_many(keys)


class CountingDeletes:
    """A BlobStore that records its delete and delete_many calls (inject, don't patch)."""

    def __init__(self, blobs: ports.BlobStore) -> None:
        self._blobs = blobs
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", 1))
        self._blobs.delete(key)

    def delete_many(self, keys: list[str]) -> dict[str, str]:
        self.calls.append(("delete_many", len(keys)))
        return self._blobs.delete_many(keys)


def test_finish_pending_deletes_cut_short_keeps_the_chunks_it_confirmed(
    context: Context, study: list[IngestResult]
) -> None:
    """A sweep stopped in the middle of a large study's blobs (a Lambda's timeout) has
    confirmed each chunk it finished: the next run removes only the rest."""
    context.index.delete_study(study[0].study_uid)  # the index commit, then the "kill"
    pending = context.index.pending_blob_deletes()
    assert len(pending) >= 3  # three instances, each its bytes (and on S3 its metadata)
    with pytest.raises(Stopped):
        finish_pending_deletes(context.index, StopsAfterDeletes(context.blobs, 1), chunk=2)
    left = context.index.pending_blob_deletes()
    assert len(left) == len(pending) - 2 and set(left) < set(pending)
    assert all(not context.blobs.exists(key) for key in set(pending) - set(left))
    assert finish_pending_deletes(context.index, context.blobs, chunk=2) == len(left)
    assert context.index.pending_blob_deletes() == []
    assert not any(context.blobs.exists(key) for key in pending)


def test_delete_removes_the_blobs_together(context: Context, study: list[IngestResult]) -> None:
    """The blobs of a deleted study go in one `delete_many` (one DeleteObjects on S3), not a
    call per key."""
    counting = replace(context)
    counting.blobs = CountingDeletes(context.blobs)
    client = Client(create_app(lambda: counting))
    records = _records(context, study[0])
    assert client.http.delete(_path(study[0], "study")).status_code == 204
    assert [name for name, _ in counting.blobs.calls] == ["delete_many"]
    assert not any(context.blobs.exists(k) for r in records for k in r.blob_keys())


@pytest.mark.usefixtures("aws_env")
def test_finish_pending_deletes_keeps_the_keys_s3_did_not_remove(tmp_path: Path) -> None:
    """A key DeleteObjects reports an error for (here a bucket policy denies it) stays
    pending; the others are confirmed, and a later run removes it."""
    context = make_context("aws", tmp_path)
    stored = _store(context, testdata(CT).read_bytes())
    record = context.index.find_instance(stored.sop_instance_uid)
    context.index.delete_study(stored.study_uid)  # the index commit, then the "kill"
    deny_s3_deletes("dicomweb-test", record.blob_key)
    assert finish_pending_deletes(context.index, context.blobs) == 1  # the metadata
    assert context.index.pending_blob_deletes() == [record.blob_key]
    assert context.blobs.exists(record.blob_key)
    assert record.metadata_key and not context.blobs.exists(record.metadata_key)
    boto3.client("s3", region_name="us-east-1").delete_bucket_policy(Bucket="dicomweb-test")
    assert finish_pending_deletes(context.index, context.blobs) == 1
    assert context.index.pending_blob_deletes() == []
    assert not context.blobs.exists(record.blob_key)


@pytest.mark.usefixtures("aws_env")
def test_delete_keeps_a_cache_folder_pending_while_s3_leaves_some_of_it(tmp_path: Path) -> None:
    """A cached document DeleteObjects reports an error for keeps its folder pending (it was
    confirmed removed, the document left for good); a later run removes it."""
    context = make_context("aws", tmp_path)
    stored = _store(context, testdata(CT).read_bytes())
    folder = f"{METADATA_PREFIX}{stored.study_uid}/"
    context.blobs.put(f"{folder}{stored.series_uid}.json.gz", b"cached")
    deny_s3_deletes("dicomweb-test", f"{folder}*")
    client = Client(create_app(lambda: context))
    assert client.http.delete(_path(stored, "study")).status_code == 204
    assert folder in context.index.pending_blob_deletes()
    assert context.blobs.exists(f"{folder}{stored.series_uid}.json.gz")
    boto3.client("s3", region_name="us-east-1").delete_bucket_policy(Bucket="dicomweb-test")
    finish_pending_deletes(context.index, context.blobs)
    assert context.index.pending_blob_deletes() == []
    assert not context.blobs.exists(f"{folder}{stored.series_uid}.json.gz")


@pytest.mark.parametrize("backend", ["local", "aws"], indirect=True)
def test_204_answers_carry_no_content_headers(backend: str, tmp_path: Path) -> None:
    """A 204 has no content (RFC 9110 §15.3.5): no Content-Type, and on the local server no
    Content-Length either (§8.6). An empty search, a DELETE and an OPTIONS carried
    `Content-Type: application/json` from the local server; on Lambda the app's answer is
    checked (through API Gateway events)."""
    import base64

    import requests

    from tests.apigateway import api_gateway_event
    from tests.server.test_localserver import in_process_server

    context = make_context(backend, tmp_path)
    stored = _store(context, testdata(CT).read_bytes())
    calls = [
        ("GET", "/dicom-web/studies", "/dicom-web/studies", None, {"PatientID": "nobody"}),
        ("OPTIONS", "/dicom-web/studies", "/dicom-web/studies", None, None),
        (
            "DELETE",
            _path(stored, "study"),
            "/dicom-web/studies/{study}",
            {"study": stored.study_uid},
            None,
        ),
    ]
    if backend == "aws":
        app = create_app(lambda: context)
        for method, path, resource, params, query in calls:
            event = api_gateway_event(method, path, resource, params, {"Host": "x"}, None, query)
            answer = app(event, None)
            assert answer["statusCode"] == 204, (method, answer)
            headers = {k.lower() for k in {**answer["headers"], **answer["multiValueHeaders"]}}
            assert "content-type" not in headers and not base64.b64decode(answer["body"] or "")
        return
    with in_process_server(tmp_path / "data", 30.0) as url, requests.Session() as session:
        for method, path, _, _, query in calls:
            answer = session.request(method, url + path, params=query, timeout=30)
            assert answer.status_code == 204, (method, answer.text[:300])
            assert "Content-Type" not in answer.headers, (method, answer.headers)
            assert "Content-Length" not in answer.headers, (method, answer.headers)
        # the connection still serves: the 204 left nothing on it
        assert session.get(url + "/dicom-web/studies", timeout=30).status_code == 204
