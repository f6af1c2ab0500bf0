"""TagIndex on DynamoDB: stores and deletes in transactions, reads by key (see `items.py` for
the items); searches go through the shared driver (`storage/search.py`) over
`DynamoSearchReads`.

Listings follow the sort key: series by SeriesInstanceUID, instances by (SeriesInstanceUID,
SOPInstanceUID), byte order ('#' sorts before every UID character, so this is the same order
as sorting the UID pairs). Counts change only inside transactions: a store ADDs atomically
(guarded by attribute_not_exists on the new items), a delete is conditioned on the counts it
read and retried on fresh reads when anything changed meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.dicom.matching import Narrowing
from chalicelib.dicom.tags import Level
from chalicelib.storage.aws import error_code
from chalicelib.storage.dynamo.items import (
    FILE_ATTRIBUTES,
    PENDING_PK,
    WRITE_SHARDS,
    Terms,
    file_of,
    instance_item,
    instance_sk,
    new_series_item,
    pending_item,
    record_of,
    series_of,
    series_values,
    sop_pointer,
    study_additions,
    study_of,
    study_terms,
    study_values,
    term_actions,
    terms_condition,
    terms_of,
    write_item,
    write_key,
    write_of,
)
from chalicelib.storage.dynamo.search import DynamoSearchReads
from chalicelib.storage.dynamo.table import (
    ABSENT,
    ATTEMPTS,
    EXISTS,
    SERIES_INDEX,
    SOP_INDEX,
    STUDY_SK,
    Condition,
    Table,
    Value,
    backoff,
    contention,
    equals,
    int_of,
    number,
    projected,
    string,
    string_set,
    translated,
)
from chalicelib.storage.ports import (
    BlobWrite,
    Conflict,
    DeleteResult,
    InstanceFile,
    InstanceRecord,
    NotFound,
    OutOfResources,
    SearchCandidate,
    SeriesRecord,
    StorageError,
    StoreResult,
    StudyRecord,
)
from chalicelib.storage.records import (
    blob_write,
    modality,
    released_keys,
    series_conflict,
    sop_conflict,
    stamped,
    utc_stamp,
)
from chalicelib.storage.search import run_search

log = logging.getLogger(__name__)

_TRANSACTION_ACTIONS = 100
_TRANSACTION_BYTES = 3_000_000
"""Of TransactWriteItems' 4 MB: room for the series and study items beside the instances."""
_TERM_ACTIONS = 14
"""At most: the items of a study's search index entries and their prefix keys, written or
deleted (5 + 3 × 3)."""
_CHUNK = _TRANSACTION_ACTIONS - _TERM_ACTIONS - 3
"""Instances deleted per transaction (83): beside them the series and study items, the
pending blob deletes and the study's search index items, within TransactWriteItems' limit."""
_PENDING_KEYS = 1000
"""Keys per pending delete item of `add_pending_deletes` (~150 bytes each; 400 KB an item)."""
_KEYS_EMPTIED: Condition = ("attribute_not_exists(#k)", {"#k": "keys"}, {})


class DynamoTagIndex:
    """TagIndex on DynamoDB (see `items.py` for the items).

    `iter_studies` scans the table for study items, with consistent reads (the GSI
    `study_date` that searches list may lag a store or a delete). `get_instance` without a
    series and `find_instance` read the SOP pointer item, then the instance, both
    consistently: an instance is found as soon as its store returned (GSIs, eventually
    consistent, answer only for instances stored before pointers existed)."""

    keeps_metadata = False
    """Metadata documents are blobs: with them an item could pass DynamoDB's 400 KB."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._table = Table(client, table_name)
        self._reads = DynamoSearchReads(self._table)

    def store_instance(self, record: InstanceRecord, overwrite: bool) -> StoreResult:
        new = stamped(record)
        sk = instance_sk(new.series_uid, new.sop_uid)
        created: list[_NewInstance] = []
        for attempt in range(ATTEMPTS):
            if attempt:
                backoff(attempt)
            item = self._table.get(new.study_uid, sk)
            if item is not None:
                old = record_of(item)
                if not overwrite:
                    return StoreResult("kept", old)
                terms = terms_of(self._table.get(new.study_uid, STUDY_SK, "sk", "ix"))
                if self._replace(new, item, terms) is None:
                    if (modality(old), old.sop_class_uid) != (modality(new), new.sop_class_uid):
                        self._refresh_sets(new.study_uid)
                    return StoreResult("replaced", new, released_keys(old, new))
                continue
            self._check_sop_elsewhere(new)
            terms = terms_of(self._table.get(new.study_uid, STUDY_SK, "sk", "ix"))
            created = created or [_NewInstance.of(new)]
            # Most stores go to an existing series: try that first; on a new series the
            # series condition fails and the variant that creates it follows.
            codes = self._create(created, terms, {new.series_uid})
            if codes is not None and codes[1] == "ConditionalCheckFailed":
                self._check_series_elsewhere(new)
                codes = self._create(created, terms, set())
            if codes is None:
                return StoreResult("created", new)
        raise contention(f"storing instance {new.sop_uid}")

    def store_instances(
        self, records: Sequence[InstanceRecord], overwrite: bool
    ) -> list[StoreResult | Exception]:
        """The new instances of each study committed together: after one BatchGetItem of the
        study, series and instance items they touch, one `series_uid` GSI query per new
        series and one `sop_uid` GSI query per new instance (the SOP Instance UID stored under
        another study or series), one transaction per chunk of them (`_chunks`: their items
        and SOP pointers, each series and the study updated once). Throttled, the batch is
        tried again with backoff (what it committed stays), and what DynamoDB still refuses
        after ATTEMPTS fails with OutOfResources. An instance stored before (kept or
        replaced), a SOP Instance UID's later parts, and the instances of a transaction a
        concurrent writer cancelled then go through `store_instance`, a transaction each;
        whatever refuses one record leaves the others."""
        results: list[StoreResult | Exception | None] = [None] * len(records)
        first: dict[str, int] = {}
        for position, record in enumerate(records):
            first.setdefault(record.sop_uid, position)
        by_study: dict[str, list[int]] = {}
        for position in first.values():
            by_study.setdefault(records[position].study_uid, []).append(position)
        for positions in by_study.values():
            self._create_study_together(records, positions, results)
        final: list[StoreResult | Exception] = []
        for record, result in zip(records, results, strict=True):
            if result is None:
                try:
                    result = self.store_instance(record, overwrite)
                except Exception as exc:  # reported in its record's place; the others go on
                    result = exc
            final.append(result)
        committed = [
            r.record.blob_key for r in final if isinstance(r, StoreResult) and r.outcome != "kept"
        ]
        try:
            self.end_blob_writes(committed)
        except StorageError:  # committed all the same: the sweep finds the index points there
            log.warning("could not end the write intents of %d instances", len(committed))
        return final

    def _create_study_together(
        self,
        records: Sequence[InstanceRecord],
        positions: list[int],
        results: list[StoreResult | Exception | None],
    ) -> None:
        """`_create_together`, again with backoff while DynamoDB throttles it (issue 14's
        review: each record then went on its own, a transaction each, which throttling
        refuses all the more); still throttled, the records left fail with that error. Any
        other failure leaves them to `store_instance`."""
        for attempt in range(ATTEMPTS):
            if attempt:
                backoff(attempt)
            left = [p for p in positions if results[p] is None]
            if not left:
                return
            try:
                self._create_together(records, left, results)
                return
            except OutOfResources as exc:
                throttled = exc
            except Exception:  # what did not commit is stored one by one
                log.warning("storing instances of a study together failed", exc_info=True)
                return
        for p in positions:
            if results[p] is None:
                results[p] = throttled

    def _create_together(
        self,
        records: Sequence[InstanceRecord],
        positions: list[int],
        results: list[StoreResult | Exception | None],
    ) -> None:
        """Create the instances at `positions` (one study, distinct SOP Instance UIDs) that
        are not stored yet and set their results: created, or the Conflict that refuses one.
        A cancelled transaction stops it: the results left None are for `store_instance`."""
        study_uid = records[positions[0]].study_uid
        series_uids = {records[p].series_uid for p in positions}
        keys = [(study_uid, STUDY_SK), *((study_uid, f"SE#{uid}") for uid in series_uids)]
        keys += [
            (study_uid, instance_sk(records[p].series_uid, records[p].sop_uid)) for p in positions
        ]
        found = {item["sk"]["S"]: item for item in self._table.batch_get(keys)}
        existing_series = {uid for uid in series_uids if f"SE#{uid}" in found}
        elsewhere = {
            uid: self._series_elsewhere(study_uid, uid) for uid in series_uids - existing_series
        }
        new: dict[str, int] = {}
        for p in positions:
            record = records[p]
            if instance_sk(record.series_uid, record.sop_uid) in found:
                continue  # stored before: store_instance keeps or replaces it
            try:
                if (other_study := elsewhere.get(record.series_uid)) is not None:
                    raise series_conflict(record, other_study)
                self._check_sop_elsewhere(record)
            except Conflict as exc:
                results[p] = exc
                continue
            new[record.sop_uid] = p
        terms = terms_of(found.get(STUDY_SK))
        for chunk in _chunks([_NewInstance.of(stamped(records[p])) for p in new.values()]):
            if self._create(chunk, terms, existing_series) is not None:
                return  # a concurrent writer came first: store_instance reads again
            for created in chunk:
                results[new[created.record.sop_uid]] = StoreResult("created", created.record)
            existing_series |= {created.record.series_uid for created in chunk}
            terms = study_terms(study_uid, chunk[-1].record.study_tags)

    def _create(
        self, instances: list[_NewInstance], terms: Terms | None, existing_series: set[str]
    ) -> list[str] | None:
        """Put the instances (each only if absent) of one study and count them in their
        series and study, in one transaction. A series in `existing_series` must exist, any
        other is created (and counted once in the study); each takes the tags of its last
        instance, the study those of the last one. `terms` are the study's search index
        entries as read: they are brought up to date in the same transaction. The first two
        actions are the first instance's and its series' (`store_instance` reads codes[1])."""
        records = [instance.record for instance in instances]
        pk, last = records[0].study_uid, records[-1]
        by_series: dict[str, list[InstanceRecord]] = {}
        for record in records:
            by_series.setdefault(record.series_uid, []).append(record)
        series_actions = []
        for series_uid, group in by_series.items():
            if series_uid in existing_series:
                counts = {"num_instances": number(len(group)), "version": number(1)}
                update = self._table.update_action(
                    pk, f"SE#{series_uid}", series_values(group[-1]), counts, EXISTS
                )
                series_actions.append(("Update", update))
            else:
                item = new_series_item(group[-1], len(group))
                series_actions.append(("Put", self._table.put_action(item, ABSENT)))
        created = len(by_series.keys() - existing_series)
        additions = study_additions(last, len(records), created, also=records[:-1])
        return self._table.transact(
            [
                ("Put", self._table.put_action(instances[0].item, ABSENT)),
                *series_actions,
                *(("Put", self._table.put_action(i.item, ABSENT)) for i in instances[1:]),
                self._study_update(last, terms, additions),
                *term_actions(self._table, pk, terms, study_terms(pk, last.study_tags)),
                *(("Put", self._table.put_action(sop_pointer(r))) for r in records),
            ]
        )

    def _study_update(
        self, record: InstanceRecord, terms: Terms | None, additions: dict[str, Value | None]
    ) -> tuple[str, dict[str, Any]]:
        """The study item's update, conditioned on its search index entries being `terms`."""
        values = {
            **study_values(record),
            "ix": string(
                json.dumps(study_terms(record.study_uid, record.study_tags), sort_keys=True)
            ),
        }
        action = self._table.update_action(
            record.study_uid, STUDY_SK, values, additions, terms_condition(terms), bump="version"
        )
        return ("Update", action)

    def _replace(
        self, record: InstanceRecord, old_item: dict[str, Value], terms: Terms | None
    ) -> list[str] | None:
        """Replace the instance item, if unchanged since read, and bump the parents' versions."""
        pk = record.study_uid
        return self._table.transact(
            [
                (
                    "Put",
                    self._table.put_action(
                        instance_item(record), equals("record", old_item["record"])
                    ),
                ),
                (
                    "Update",
                    self._table.update_action(
                        pk,
                        f"SE#{record.series_uid}",
                        series_values(record),
                        {"version": number(1)},
                        EXISTS,
                    ),
                ),
                self._study_update(record, terms, study_additions(record, 0, 0)),
                *term_actions(
                    self._table, pk, terms, study_terms(record.study_uid, record.study_tags)
                ),
            ]
        )

    def _check_sop_elsewhere(self, record: InstanceRecord) -> None:
        """Raise Conflict when the SOP Instance UID is stored under another study or series.

        Found through the GSI, confirmed by a consistent read. Two stores of one SOP Instance
        UID racing into different series are not caught here (DESIGN.md accepts that)."""
        here = (record.study_uid, instance_sk(record.series_uid, record.sop_uid))
        for pk, sk in self._table.lookup(SOP_INDEX, record.sop_uid):
            if (pk, sk) != here and self._table.get(pk, sk) is not None:
                raise sop_conflict(record, pk, sk.split("#")[1])

    def _check_series_elsewhere(self, record: InstanceRecord) -> None:
        if (other_study := self._series_elsewhere(record.study_uid, record.series_uid)) is not None:
            raise series_conflict(record, other_study)

    def _series_elsewhere(self, study_uid: str, series_uid: str) -> str | None:
        """The other study that holds the series (through the GSI, confirmed consistently)."""
        for pk, sk in self._table.lookup(SERIES_INDEX, series_uid):
            if pk != study_uid and self._table.get(pk, sk) is not None:
                return pk
        return None

    def metadata_documents(self, sop_uids: Sequence[str]) -> dict[str, bytes]:
        return {}

    def get_instance(self, study_uid: str, series_uid: str | None, sop_uid: str) -> InstanceRecord:
        if series_uid is None:
            record = self._find(sop_uid)
            if record is not None and record.study_uid == study_uid:
                return record
        elif (item := self._table.get(study_uid, instance_sk(series_uid, sop_uid))) is not None:
            return record_of(item)
        raise NotFound(
            f"instance {sop_uid} not found in study {study_uid}"
            + (f" series {series_uid}" if series_uid else "")
        )

    def find_instance(self, sop_uid: str) -> InstanceRecord:
        record = self._find(sop_uid)
        if record is None:
            raise NotFound(f"instance {sop_uid} not found")
        return record

    def _find(self, sop_uid: str) -> InstanceRecord | None:
        """Through the SOP pointer (consistent reads: read-after-write holds); through the
        `sop_uid` GSI for instances stored before pointers existed."""
        pointer = self._table.get(f"SOP#{sop_uid}", "SOP")
        if pointer is not None:
            pk, sk = pointer["at"]["S"].split("|", 1)
            item = self._table.get(pk, sk)
            return record_of(item) if item is not None else None
        for pk, sk in self._table.lookup(SOP_INDEX, sop_uid):
            if (item := self._table.get(pk, sk)) is not None:
                return record_of(item)
        return None

    def get_series(self, study_uid: str, series_uid: str) -> SeriesRecord:
        item = self._table.get(study_uid, f"SE#{series_uid}")
        if item is None:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        return series_of(item)

    def get_study(self, study_uid: str) -> StudyRecord:
        item = self._table.get(study_uid, STUDY_SK)
        if item is None:
            raise NotFound(f"study {study_uid} not found")
        return study_of(item)

    def list_series(self, study_uid: str) -> list[SeriesRecord]:
        return [series_of(item) for item in self._table.query(study_uid, "SE#")]

    def list_instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceRecord]:
        prefix = "IN#" if series_uid is None else f"IN#{series_uid}#"
        return [record_of(item) for item in self._table.query(study_uid, prefix)]

    def list_instance_files(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceFile]:
        """A Query (a GetItem for one instance) projected on the items' `FILE_ATTRIBUTES`;
        an item stored before they existed is read once more, whole. DynamoDB counts read
        capacity on whole items all the same: the projection saves the transfer and the
        decoding of the records."""
        if sop_uid is not None and series_uid is None:
            try:
                return [InstanceFile.of(self.get_instance(study_uid, None, sop_uid))]
            except NotFound:
                return []
        if sop_uid is not None:
            item = self._table.get(study_uid, instance_sk(series_uid, sop_uid), *FILE_ATTRIBUTES)
            items: Iterable[dict[str, Value]] = [item] if item is not None else []
        else:
            prefix = "IN#" if series_uid is None else f"IN#{series_uid}#"
            items = self._table.query(study_uid, prefix, **projected(*FILE_ATTRIBUTES))
        files = []
        for item in items:
            file = file_of(study_uid, item)
            if file is None:
                whole = self._table.get(study_uid, item["sk"]["S"], "record")
                if whole is None:  # deleted since the query
                    continue
                file = InstanceFile.of(record_of(whole))
            files.append(file)
        return files

    def iter_studies(self) -> Iterator[StudyRecord]:
        """Every study, in the table's scan order (stable while the table does not change)."""
        items = self._table.pages(
            "scan",
            FilterExpression="sk = :sk",
            ExpressionAttributeValues={":sk": string(STUDY_SK)},
            ConsistentRead=True,
        )
        yield from map(study_of, items)

    def search(
        self, level: Level, hints: Sequence[Narrowing], budget: int | None
    ) -> Iterator[SearchCandidate]:
        return run_search(self._reads, level, hints, budget)

    def delete_study(self, study_uid: str) -> DeleteResult:
        if self._table.get(study_uid, STUDY_SK) is None:
            raise NotFound(f"study {study_uid} not found")
        items = list(self._table.query(study_uid, "IN#"))
        removed: list[InstanceRecord] = []
        for series_uid, group in groupby(items, key=lambda item: item["sk"]["S"].split("#")[1]):
            removed += self._remove_series_items(study_uid, series_uid, list(group))
        self._refresh_sets(study_uid)
        return DeleteResult(removed)

    def delete_series(self, study_uid: str, series_uid: str) -> DeleteResult:
        if self._table.get(study_uid, f"SE#{series_uid}") is None:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        items = list(self._table.query(study_uid, f"IN#{series_uid}#"))
        removed = self._remove_series_items(study_uid, series_uid, items)
        self._refresh_sets(study_uid)
        return DeleteResult(removed)

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> DeleteResult:
        item = self._table.get(study_uid, instance_sk(series_uid, sop_uid))
        removed = self._remove(study_uid, series_uid, [item]) if item is not None else []
        if not removed:
            raise NotFound(f"instance {sop_uid} not found in study {study_uid} series {series_uid}")
        self._refresh_sets(study_uid)
        return DeleteResult(removed)

    def pending_blob_deletes(self) -> list[str]:
        return [key for item in self._pending_items() for key in item["keys"]["SS"]]

    def blobs_deleted(self, keys: Sequence[str]) -> None:
        """Take `keys` out of the pending items' sets (atomically, so that concurrent calls
        lose nothing), then drop each item whose set is empty."""
        done = set(keys)
        for item in self._pending_items():
            confirmed = done.intersection(item["keys"]["SS"])
            if not confirmed:
                continue
            try:
                with translated():
                    left = self._table.client.update_item(
                        TableName=self._table.name,
                        Key=Table.key(PENDING_PK, item["sk"]["S"]),
                        UpdateExpression="DELETE #k :done",
                        ConditionExpression="attribute_exists(#k)",
                        ExpressionAttributeNames={"#k": "keys"},
                        ExpressionAttributeValues={":done": {"SS": sorted(confirmed)}},
                        ReturnValues="ALL_NEW",
                    )
                    if "keys" not in left["Attributes"]:  # DynamoDB removes an emptied set
                        self._table.client.delete_item(
                            **self._table.delete_action(PENDING_PK, item["sk"]["S"], _KEYS_EMPTIED)
                        )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise  # else emptied by a concurrent call, which drops the item

    def _pending_items(self) -> Iterator[dict[str, Value]]:
        return self._table.query(PENDING_PK, "DEL#")

    def add_pending_deletes(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _PENDING_KEYS):
            if (item := pending_item(keys[start : start + _PENDING_KEYS])) is not None:
                with translated():
                    self._table.client.put_item(**self._table.put_action(item, ABSENT))

    def begin_blob_writes(self, records: Sequence[InstanceRecord]) -> None:
        at = utc_stamp()
        self._table.batch_write(
            [{"PutRequest": {"Item": write_item(blob_write(record, at))}} for record in records]
        )

    def stale_blob_writes(self, before: str) -> list[BlobWrite]:
        writes = [
            write_of(item)
            for shard in range(WRITE_SHARDS)
            for item in self._table.pages(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                FilterExpression="#at < :before",
                ExpressionAttributeNames={"#at": "at"},
                ExpressionAttributeValues={
                    ":pk": string(f"WRITES#{shard}"),
                    ":prefix": string("PUT#"),
                    ":before": string(before),
                },
                ConsistentRead=True,
            )
        ]
        return sorted(writes, key=lambda write: (write.at, write.blob_key))

    def end_blob_writes(self, blob_keys: Sequence[str]) -> None:
        self._table.batch_write(
            [
                {"DeleteRequest": {"Key": Table.key(*write_key(key))}}
                for key in dict.fromkeys(blob_keys)
            ]
        )

    def _remove_series_items(
        self, study_uid: str, series_uid: str, items: list[dict[str, Value]]
    ) -> list[InstanceRecord]:
        """Remove a series' instance items, one transaction per chunk; counts stay exact after
        each chunk (a large series disappears chunk by chunk)."""
        removed: list[InstanceRecord] = []
        for start in range(0, len(items), _CHUNK):
            removed += self._remove(study_uid, series_uid, items[start : start + _CHUNK])
        return removed

    def _remove(
        self, study_uid: str, series_uid: str, items: list[dict[str, Value]]
    ) -> list[InstanceRecord]:
        """Delete instance items of one series and uncount them in one transaction, deleting
        the series and study items they empty. Conditions on the counts read make any
        concurrent change cancel it; it is retried without the items already gone."""
        series_sk = f"SE#{series_uid}"
        for attempt in range(ATTEMPTS):
            if attempt:
                backoff(attempt)
            series = self._table.get(study_uid, series_sk)
            study = self._table.get(study_uid, STUDY_SK)
            if not items or series is None or study is None:
                return []  # removed meanwhile by another delete
            count = len(items)
            in_series, in_study = int_of(series, "num_instances"), int_of(study, "num_instances")
            series_emptied = in_series <= count
            actions = [
                ("Delete", self._table.delete_action(study_uid, item["sk"]["S"], EXISTS))
                for item in items
            ]
            series_condition = equals("num_instances", number(in_series))
            if series_emptied:
                actions.append(
                    ("Delete", self._table.delete_action(study_uid, series_sk, series_condition))
                )
            else:
                uncount = {"num_instances": number(-count), "version": number(1)}
                actions.append(
                    (
                        "Update",
                        self._table.update_action(
                            study_uid, series_sk, {}, uncount, series_condition
                        ),
                    )
                )
            study_condition = equals("num_instances", number(in_study))
            if in_study <= count:
                actions.append(
                    ("Delete", self._table.delete_action(study_uid, STUDY_SK, study_condition))
                )
                actions += term_actions(self._table, study_uid, terms_of(study), {})
            else:
                uncount = {
                    "num_instances": number(-count),
                    "num_series": number(-1) if series_emptied else None,
                    "version": number(1),
                }
                actions.append(
                    (
                        "Update",
                        self._table.update_action(
                            study_uid, STUDY_SK, {}, uncount, study_condition
                        ),
                    )
                )
            records = [record_of(item) for item in items]
            # The intent to remove their blobs, committed with the delete (issue 11: a kill
            # between the two left files nothing pointed to).
            if (pending := pending_item(k for r in records for k in r.blob_keys())) is not None:
                actions.append(("Put", self._table.put_action(pending, ABSENT)))
            codes = self._table.transact(actions)
            if codes is None:
                self._drop_sop_pointers(records)
                return records
            items = [
                item
                for item, code in zip(items, codes, strict=False)
                if code != "ConditionalCheckFailed"
            ]
        raise contention(f"deleting instances of series {series_uid}")

    def _drop_sop_pointers(self, records: list[InstanceRecord]) -> None:
        """Delete the SOP pointers of deleted instances, each only while it still points to
        the deleted item (a re-store elsewhere has replaced it). Best effort: a stale pointer
        leads to no item, which reads as not found."""
        for record in records:
            at = sop_pointer(record)["at"]
            try:
                with translated():
                    self._table.client.delete_item(
                        **self._table.delete_action(
                            f"SOP#{record.sop_uid}", "SOP", equals("at", at)
                        )
                    )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise

    def _refresh_sets(self, study_uid: str) -> None:
        """Recompute a study's modalities and SOP classes from its instance items, on the
        condition that the study did not change meanwhile."""
        for attempt in range(ATTEMPTS):
            if attempt:
                backoff(attempt)
            study = self._table.get(study_uid, STUDY_SK)
            if study is None:
                return
            items = list(
                self._table.query(
                    study_uid,
                    "IN#",
                    ProjectionExpression="#m, #c",
                    ExpressionAttributeNames={"#m": "modality", "#c": "sop_class_uid"},
                )
            )
            modalities = string_set({i.get("modality", {}).get("S", "") for i in items})
            sop_classes = string_set({i.get("sop_class_uid", {}).get("S", "") for i in items})
            stored = [
                string_set(set(study.get(name, {}).get("SS", [])))
                for name in ("modalities", "sop_classes")
            ]
            if stored == [modalities, sop_classes]:
                return
            op = self._table.update_action(
                study_uid,
                STUDY_SK,
                {"modalities": modalities, "sop_classes": sop_classes},
                condition=equals("version", study["version"]),
            )
            try:
                with translated():
                    self._table.client.update_item(**op)
                return
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
        raise contention(f"updating the modalities of study {study_uid}")


@dataclass(frozen=True)
class _NewInstance:
    """A record to create with its item, serialized once (`_chunks` sizes it, `_create` puts
    it)."""

    record: InstanceRecord
    item: dict[str, Value]

    @classmethod
    def of(cls, record: InstanceRecord) -> _NewInstance:
        return cls(record, instance_item(record))


def _chunks(created: list[_NewInstance]) -> Iterator[list[_NewInstance]]:
    """`created` in order, cut where a store transaction (`DynamoTagIndex._create`) would
    pass DynamoDB's limits: two actions per instance (item, SOP pointer), one per series, the
    study's and its search entries' (100 actions); the instances' records (4 MB)."""
    chunk: list[_NewInstance] = []
    series: set[str] = set()
    size = 0
    for instance in created:
        record_size = len(instance.item["record"]["S"])
        grown = series | {instance.record.series_uid}
        actions = 2 * (len(chunk) + 1) + len(grown) + 1 + _TERM_ACTIONS
        if chunk and (actions > _TRANSACTION_ACTIONS or size + record_size > _TRANSACTION_BYTES):
            yield chunk
            chunk, grown, size = [], {instance.record.series_uid}, 0
        chunk.append(instance)
        series = grown
        size += record_size
    if chunk:
        yield chunk
