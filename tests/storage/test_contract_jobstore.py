"""JobStore contract: the same behaviour from SQLite and from DynamoDB (moto)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.storage.jobs_aws import DynamoJobStore
from chalicelib.storage.jobs_local import SqliteJobStore
from chalicelib.storage.ports import Conflict, JobRecord, JobStore, NotFound
from tests.storage.conftest import TABLE


@pytest.fixture
def job_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if backend == "local":
        store = SqliteJobStore(tmp_path / "index.sqlite")
        yield store
        store.close()
    else:
        yield DynamoJobStore(request.getfixturevalue("dynamodb"), TABLE)


def job(job_id: str = "job-1", created: str = "20261206T100000.000000") -> JobRecord:
    return JobRecord(
        id=job_id,
        type="DicomWebStowClient",
        state="Pending",
        priority=2,
        server="peer",
        params={"Resources": [["1.2.3"]], "HttpHeaders": {}},
        cursor={},
        content={"Server": "peer"},
        creation_time=created,
    )


def test_create_then_get(job_store: JobStore) -> None:
    job_store.create(job())
    assert job_store.get("job-1") == job()


def test_create_twice_is_conflict(job_store: JobStore) -> None:
    job_store.create(job())
    with pytest.raises(Conflict):
        job_store.create(job())


def test_get_missing_is_not_found(job_store: JobStore) -> None:
    with pytest.raises(NotFound):
        job_store.get("nope")


def test_list_oldest_first(job_store: JobStore) -> None:
    job_store.create(job("b", "20261206T100002.000000"))
    job_store.create(job("a", "20261206T100003.000000"))
    job_store.create(job("c", "20261206T100001.000000"))
    assert [j.id for j in job_store.list()] == ["c", "b", "a"]


def test_save_bumps_version_and_keeps_changes(job_store: JobStore) -> None:
    job_store.create(job())
    running = dataclasses.replace(job(), state="Running", cursor={"resource": 1, "offset": 3})
    saved = job_store.save(running)
    assert saved.version == 1
    assert job_store.get("job-1") == saved


def test_save_from_stale_copy_is_conflict(job_store: JobStore) -> None:
    job_store.create(job())
    stale = job_store.get("job-1")
    job_store.save(dataclasses.replace(stale, state="Paused"))
    with pytest.raises(Conflict):
        job_store.save(dataclasses.replace(stale, state="Running"))
    assert job_store.get("job-1").state == "Paused"


def test_save_missing_is_not_found(job_store: JobStore) -> None:
    with pytest.raises(NotFound):
        job_store.save(job("gone"))


def test_delete_removes_only_that_job(job_store: JobStore) -> None:
    job_store.create(job("a"))
    job_store.create(job("b"))
    job_store.delete(job_store.get("a"))
    with pytest.raises(NotFound):
        job_store.get("a")
    assert [j.id for j in job_store.list()] == ["b"]


def test_delete_from_stale_copy_is_conflict_and_keeps_the_job(job_store: JobStore) -> None:
    job_store.create(job())
    stale = job_store.get("job-1")
    job_store.save(dataclasses.replace(stale, state="Pending"))  # e.g. resubmitted meanwhile
    with pytest.raises(Conflict):
        job_store.delete(stale)
    assert job_store.get("job-1").version == 1


def test_delete_missing_is_not_found(job_store: JobStore) -> None:
    with pytest.raises(NotFound):
        job_store.delete(job("gone"))
