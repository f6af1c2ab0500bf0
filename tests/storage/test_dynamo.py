"""DynamoDB-only checks: racing writers forced between our reads and our transaction (moto's
DynamoDB is not thread-safe, so the interleavings are forced sequentially), and the item
attributes other indexes will key on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.storage.dynamo import DynamoTagIndex
from chalicelib.storage.dynamo.table import ATTEMPTS
from chalicelib.storage.ports import InstanceFile, InstanceRecord, NotFound, OutOfResources
from tests.storage.conftest import SERIES, SOP, STUDY, TABLE, build_record


class RacingClient:
    """A DynamoDB client that runs `race` just before its `at`-th TransactWriteItems call."""

    def __init__(self, client: Any, race: Callable[[], object], at: int = 1) -> None:
        self._client = client
        self._race = race
        self._calls_left = at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self._calls_left -= 1
        if self._calls_left == 0:
            self._race()
        return self._client.transact_write_items(**kwargs)


@pytest.fixture
def index(dynamodb: Any) -> DynamoTagIndex:
    return DynamoTagIndex(dynamodb, TABLE)


def _racing(dynamodb: Any, race: Callable[[], object], at: int = 1) -> DynamoTagIndex:
    return DynamoTagIndex(RacingClient(dynamodb, race, at), TABLE)


def test_store_instance_series_created_meanwhile_counted_once(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    """Our first transaction finds no series; before our second creates it, another writer
    does: we retry as a store into the existing series."""
    other = build_record(sop=f"{SERIES}.2")
    racing = _racing(dynamodb, lambda: index.store_instance(other, overwrite=False), at=2)
    result = racing.store_instance(build_record(sop=f"{SERIES}.1"), overwrite=False)
    assert result.outcome == "created"
    study = index.get_study(STUDY)
    assert (study.num_series, study.num_instances) == (1, 2)
    assert index.get_series(STUDY, SERIES).num_instances == 2


def test_store_instance_same_sop_stored_meanwhile_kept(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    theirs = build_record(blob_key="a/theirs.dcm")
    racing = _racing(dynamodb, lambda: index.store_instance(theirs, overwrite=False))
    result = racing.store_instance(build_record(blob_key="a/ours.dcm"), overwrite=False)
    assert (result.outcome, result.record.blob_key) == ("kept", "a/theirs.dcm")
    assert index.get_study(STUDY).num_instances == 1


def test_store_instance_replaced_meanwhile_replaces_latest(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    index.store_instance(build_record(blob_key="a/first.dcm"), overwrite=False)
    theirs = build_record(blob_key="a/theirs.dcm")
    racing = _racing(dynamodb, lambda: index.store_instance(theirs, overwrite=True))
    result = racing.store_instance(build_record(blob_key="a/ours.dcm"), overwrite=True)
    assert (result.outcome, result.replaced_blob_keys) == ("replaced", ["a/theirs.dcm"])
    assert index.get_instance(STUDY, SERIES, SOP).blob_key == "a/ours.dcm"
    assert index.get_study(STUDY).num_instances == 1


class CountingClient:
    """A DynamoDB client that counts its TransactWriteItems calls (and their actions)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transactions: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions.append(len(kwargs["TransactItems"]))
        return self._client.transact_write_items(**kwargs)


class ThrottlingClient(CountingClient):
    """A counting DynamoDB client whose first `throttled` TransactWriteItems calls DynamoDB
    answers with ThrottlingException (what moto never does)."""

    def __init__(self, client: Any, throttled: int) -> None:
        super().__init__(client)
        self._throttled = throttled

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self._throttled:
            self._throttled -= 1
            self.transactions.append(0)
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "TransactWriteItems")
        return super().transact_write_items(**kwargs)


def test_store_instances_throttled_keeps_batching(dynamodb: Any) -> None:
    """Throttled twice, the batch is sent again as a batch: one transaction for 20 new
    instances, not one each (which throttling refuses all the more)."""
    client = ThrottlingClient(dynamodb, throttled=2)
    index = DynamoTagIndex(client, TABLE)
    results = index.store_instances(_series_records(20), overwrite=False)
    assert [getattr(r, "outcome", r) for r in results] == ["created"] * 20
    assert client.transactions[:2] == [0, 0] and len(client.transactions) == 3
    assert client.transactions[2] >= 2 * 20  # every instance's item and SOP pointer
    assert index.get_study(STUDY).num_instances == 20


def test_store_instances_still_throttled_fails_the_batch(dynamodb: Any) -> None:
    client = ThrottlingClient(dynamodb, throttled=1000)
    index = DynamoTagIndex(client, TABLE)
    results = index.store_instances(_series_records(20), overwrite=False)
    assert all(isinstance(r, OutOfResources) for r in results)
    assert len(client.transactions) == ATTEMPTS  # the batch's attempts, none per record
    with pytest.raises(NotFound):
        index.get_study(STUDY)


def _series_records(count: int, series: str = SERIES) -> list[InstanceRecord]:
    return [build_record(series=series, sop=f"{series}.{n}") for n in range(count)]


# Issue 14: store_instances committed one transaction per instance, two for the first of a
# new series (21 for a 20-instance STOW-RS request of a new series).
@pytest.mark.parametrize(("count", "transactions"), [(1, 1), (20, 1), (100, 3)])
def test_store_instances_new_series_in_few_transactions(
    dynamodb: Any, count: int, transactions: int
) -> None:
    client = CountingClient(dynamodb)
    index = DynamoTagIndex(client, TABLE)
    results = index.store_instances(_series_records(count), overwrite=False)
    assert [r.outcome for r in results if not isinstance(r, Exception)] == ["created"] * count
    assert len(client.transactions) == transactions
    assert max(client.transactions) <= 100
    study = index.get_study(STUDY)
    assert (study.num_series, study.num_instances) == (1, count)
    assert index.get_series(STUDY, SERIES).num_instances == count
    assert [r.sop_uid for r in index.list_instances(STUDY)] == sorted(
        r.sop_uid for r in _series_records(count)
    )
    assert index.find_instance(f"{SERIES}.{count - 1}").series_uid == SERIES  # its SOP pointer


def test_store_instances_series_created_meanwhile_counted_once(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    """Another writer creates the series between our reads and our transaction: the
    transaction is cancelled, and each instance is stored again on its own."""
    other = build_record(sop=f"{SERIES}.99")
    racing = _racing(dynamodb, lambda: index.store_instance(other, overwrite=False))
    results = racing.store_instances(_series_records(20), overwrite=False)
    assert [r.outcome for r in results if not isinstance(r, Exception)] == ["created"] * 20
    study = index.get_study(STUDY)
    assert (study.num_series, study.num_instances) == (1, 21)
    assert index.get_series(STUDY, SERIES).num_instances == 21


def test_store_instances_one_stored_meanwhile_kept(dynamodb: Any, index: DynamoTagIndex) -> None:
    records = _series_records(5)
    index.store_instance(build_record(sop=f"{SERIES}.0", blob_key="a/first.dcm"), overwrite=False)
    theirs = build_record(sop=f"{SERIES}.3", blob_key="a/theirs.dcm")
    racing = _racing(dynamodb, lambda: index.store_instance(theirs, overwrite=False))
    results = racing.store_instances(records, overwrite=False)
    outcomes = [r.outcome for r in results if not isinstance(r, Exception)]
    assert outcomes == ["kept", "created", "created", "kept", "created"]
    assert results[3].record.blob_key == "a/theirs.dcm"
    assert index.get_study(STUDY).num_instances == 5
    assert index.get_series(STUDY, SERIES).num_instances == 5


def test_delete_instance_store_meanwhile_keeps_series(dynamodb: Any, index: DynamoTagIndex) -> None:
    """We read a one-instance series, then another writer adds one: the series must stay."""
    index.store_instance(build_record(sop=f"{SERIES}.1"), overwrite=False)
    other = build_record(sop=f"{SERIES}.2", modality="MR")
    racing = _racing(dynamodb, lambda: index.store_instance(other, overwrite=False))
    racing.delete_instance(STUDY, SERIES, f"{SERIES}.1")
    study = index.get_study(STUDY)
    assert (study.num_series, study.num_instances, study.modalities) == (1, 1, ["MR"])
    assert index.get_series(STUDY, SERIES).num_instances == 1


def test_delete_instance_deleted_meanwhile_not_found(dynamodb: Any, index: DynamoTagIndex) -> None:
    index.store_instance(build_record(sop=f"{SERIES}.1"), overwrite=False)
    index.store_instance(build_record(sop=f"{SERIES}.2"), overwrite=False)
    racing = _racing(dynamodb, lambda: index.delete_instance(STUDY, SERIES, f"{SERIES}.1"))
    with pytest.raises(NotFound):
        racing.delete_instance(STUDY, SERIES, f"{SERIES}.1")
    assert index.get_study(STUDY).num_instances == 1


def test_store_instance_items_carry_search_attributes(dynamodb: Any, index: DynamoTagIndex) -> None:
    record: InstanceRecord = build_record()
    index.store_instance(record, overwrite=False)

    def item(sk: str) -> dict[str, Any]:
        key = {"pk": {"S": STUDY}, "sk": {"S": sk}}
        return dynamodb.get_item(TableName=TABLE, Key=key)["Item"]

    study = item("ST")
    assert {name: study[name]["S"] for name in ("patient_id", "patient_name", "study_date")} == {
        "patient_id": "PAT-1",
        "patient_name": "Doe^Jane",
        "study_date": "20240102",
    }
    assert study["accession_number"]["S"] == "ACC-1"
    series = item(f"SE#{SERIES}")
    assert (series["series_uid"]["S"], series["modality"]["S"]) == (SERIES, "CT")
    assert item(f"IN#{SERIES}#{SOP}")["sop_uid"]["S"] == SOP


def _without_sop_index(dynamodb: Any, record: InstanceRecord) -> None:
    """Remove the instance item's `sop_uid` attribute, as a GSI that has not caught up yet
    would not see it (moto's GSIs are updated at once)."""
    dynamodb.update_item(
        TableName=TABLE,
        Key={
            "pk": {"S": record.study_uid},
            "sk": {"S": f"IN#{record.series_uid}#{record.sop_uid}"},
        },
        UpdateExpression="REMOVE sop_uid",
    )


# Issue 11: find_instance and get_instance without a series read the eventually consistent
# `sop_uid` GSI, so a client that stored and then retrieved could get 404.
def test_find_instance_reads_the_base_table(dynamodb: Any, index: DynamoTagIndex) -> None:
    record = index.store_instance(build_record(), overwrite=False).record
    _without_sop_index(dynamodb, record)
    assert index.find_instance(SOP) == record
    assert index.get_instance(STUDY, None, SOP) == record


def test_find_instance_after_delete_and_restore_elsewhere(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    index.store_instance(build_record(), overwrite=False)
    index.delete_study(STUDY)
    with pytest.raises(NotFound):
        index.find_instance(SOP)
    pointer = {"pk": {"S": f"SOP#{SOP}"}, "sk": {"S": "SOP"}}
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key=pointer)
    moved = index.store_instance(build_record(study="1.2.4", series="1.2.4.1"), False).record
    _without_sop_index(dynamodb, moved)
    assert index.find_instance(SOP) == moved


class RecordingClient:
    """A DynamoDB client that keeps the items each Query and GetItem returned."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.items: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **kwargs: Any) -> Any:
        response = self._client.query(**kwargs)
        self.items += response.get("Items", [])
        return response

    def get_item(self, **kwargs: Any) -> Any:
        response = self._client.get_item(**kwargs)
        self.items += [response["Item"]] if "Item" in response else []
        return response


def test_list_instance_files_reads_no_record(dynamodb: Any, index: DynamoTagIndex) -> None:
    records = [
        index.store_instance(build_record(sop=f"{SERIES}.{n}"), overwrite=False).record
        for n in range(3)
    ]
    recording = RecordingClient(dynamodb)
    reader = DynamoTagIndex(recording, TABLE)
    assert reader.list_instance_files(STUDY, SERIES) == [InstanceFile.of(r) for r in records]
    assert reader.list_instance_files(STUDY, SERIES, f"{SERIES}.1") == [InstanceFile.of(records[1])]
    assert len(recording.items) == 4
    assert not any("record" in item for item in recording.items)


def test_list_instance_files_of_items_stored_before_file_attributes(
    dynamodb: Any, index: DynamoTagIndex
) -> None:
    """Items written before the file attributes existed: their records give the files."""
    records = [
        index.store_instance(build_record(sop=f"{SERIES}.{n}"), overwrite=False).record
        for n in range(2)
    ]
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": STUDY}, "sk": {"S": f"IN#{SERIES}#{SERIES}.1"}},
        UpdateExpression="REMOVE transfer_syntax_uid, blob_key, #s, has_file_meta",
        ExpressionAttributeNames={"#s": "size"},
    )
    expected = [InstanceFile.of(r) for r in records]
    assert index.list_instance_files(STUDY) == expected
    assert index.list_instance_files(STUDY, SERIES, f"{SERIES}.1") == expected[1:]


class UnprocessingClient:
    """A DynamoDB client whose BatchWriteItem and BatchGetItem calls get only part of their
    requests done, `calls` calls long (what moto never does): the first `done` requests of
    each go to moto, the others come back as UnprocessedItems / UnprocessedKeys."""

    def __init__(self, client: Any, done: int, calls: int) -> None:
        self._client = client
        self._done = done
        self._calls = calls
        self.sent: list[int] = []
        """The requests of each batch call."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _split(self, requests: list[Any]) -> tuple[list[Any], list[Any]]:
        self.sent.append(len(requests))
        if not self._calls:
            return requests, []
        self._calls -= 1
        return requests[: self._done], requests[self._done :]

    def batch_write_item(self, RequestItems: dict[str, Any]) -> Any:
        ((table, requests),) = RequestItems.items()
        done, left = self._split(requests)
        if done:
            self._client.batch_write_item(RequestItems={table: done})
        return {"UnprocessedItems": {table: left} if left else {}}

    def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:
        ((table, request),) = RequestItems.items()
        done, left = self._split(request["Keys"])
        response = {"Responses": {table: []}, "UnprocessedKeys": {}}
        if done:
            response = self._client.batch_get_item(RequestItems={table: {**request, "Keys": done}})
        if left:
            response["UnprocessedKeys"] = {table: {**request, "Keys": left}}
        return response


class StalledWrites(UnprocessingClient):
    """A DynamoDB client whose BatchWriteItem calls never get anything done."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, done=0, calls=1000)

    def batch_get_item(self, **kwargs: Any) -> Any:
        return self._client.batch_get_item(**kwargs)


FUTURE = "9999-12-31T00:00:00.000000Z"
"""A `stale_blob_writes` bound after every intent."""


def test_blob_writes_send_again_what_dynamodb_left_unprocessed(dynamodb: Any) -> None:
    """BatchWriteItem leaves items unprocessed under load: each is sent again until written
    or deleted, none dropped."""
    records = _series_records(30)
    client = UnprocessingClient(dynamodb, done=4, calls=3)
    index = DynamoTagIndex(client, TABLE)
    index.begin_blob_writes(records)
    assert client.sent == [25, 21, 17, 13, 5]
    written = index.stale_blob_writes(FUTURE)
    assert sorted(w.blob_key for w in written) == sorted(r.blob_key for r in records)
    client = UnprocessingClient(dynamodb, done=4, calls=3)
    DynamoTagIndex(client, TABLE).end_blob_writes([r.blob_key for r in records])
    assert client.sent == [25, 21, 17, 13, 5]
    assert index.stale_blob_writes(FUTURE) == []


def test_blob_writes_done_slowly_are_all_written(dynamodb: Any) -> None:
    """A batch DynamoDB gets done one item a call is sent again as long as that goes on (it
    gave up after 16 calls, with items left)."""
    records = _series_records(25)
    client = UnprocessingClient(dynamodb, done=1, calls=100)
    index = DynamoTagIndex(client, TABLE)
    index.begin_blob_writes(records)
    assert client.sent == list(range(25, 0, -1))
    assert len(index.stale_blob_writes(FUTURE)) == 25


def test_batch_get_sends_again_what_dynamodb_left_unprocessed(dynamodb: Any) -> None:
    """BatchGetItem (a batch store's first read) leaves keys unprocessed: an item missed
    there would be created again, counted twice."""
    index = DynamoTagIndex(dynamodb, TABLE)
    records = _series_records(20)
    index.store_instances(records[:10], overwrite=False)
    client = UnprocessingClient(dynamodb, done=7, calls=2)
    results = DynamoTagIndex(client, TABLE).store_instances(records, overwrite=False)
    assert [getattr(r, "outcome", r) for r in results] == ["kept"] * 10 + ["created"] * 10
    assert client.sent[:3] == [22, 15, 8]
    assert index.get_series(STUDY, SERIES).num_instances == 20


def test_blob_writes_never_processed_fail_and_the_store_goes_on(dynamodb: Any) -> None:
    """Batch calls that get nothing done give up after ATTEMPTS of them with OutOfResources
    (a store then fails before writing a blob); write intents that cannot end stay listed
    for the sweep, and the instances are stored all the same."""
    records = _series_records(5)
    client = StalledWrites(dynamodb)
    stalled = DynamoTagIndex(client, TABLE)
    with pytest.raises(OutOfResources, match="unprocessed"):
        stalled.begin_blob_writes(records)
    assert client.sent == [5] * ATTEMPTS
    index = DynamoTagIndex(dynamodb, TABLE)
    index.begin_blob_writes(records)
    results = stalled.store_instances(records, overwrite=False)
    assert [getattr(r, "outcome", r) for r in results] == ["created"] * 5
    assert len(index.stale_blob_writes(FUTURE)) == 5
