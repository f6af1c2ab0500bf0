"""TagIndex and ConfigStore on DynamoDB: one table, one partition per study.

Items, keyed by partition key `pk` and sort key `sk`:

- study `pk`=StudyInstanceUID, `sk`="ST": study_tags (JSON string), orthanc_id, num_series,
  num_instances, version, modalities and sop_classes (string sets, absent when empty),
  patient_id, patient_name, study_date, accession_number (absent when empty: a DynamoDB index
  key cannot be an empty string), `ix` (JSON of the study's search index entries, see below),
  and the keys of the GSI `study_date`: `ds`="DS#{n}" (n = CRC-32 of the UID modulo
  `DATE_SHARDS`, spreading the listing over a few partitions) and `dk`="{YYYYMMDD}#{UID}"
  ("#{UID}" when the date is absent or malformed);
- search index entries `sk`="IX#{entry}" (PatientID, AccessionNumber, PatientNameA|I|P for
  each component group, case-folded by `matching.index_text`): keys `sx`="{keyword}#{first
  character}" and `sxs`="{value}#{StudyInstanceUID}" of the shared GSI `search`; written in
  the store transaction only when the study's values change;
- series `sk`="SE#{SeriesInstanceUID}": series_uid (key of the sparse GSI `series_uid`),
  series_tags, orthanc_id, modality, num_instances, version, and `sx`="Modality#{first
  character}", `sxs`="{Modality}#{StudyInstanceUID}#{SeriesInstanceUID}" in the GSI `search`;
- instance `sk`="IN#{SeriesInstanceUID}#{SOPInstanceUID}": sop_uid (key of the sparse GSI
  `sop_uid`), record (the InstanceRecord as JSON), modality, sop_class_uid;
- SOP pointer `pk`="SOP#{SOPInstanceUID}", `sk`="SOP": `at` = the instance's pk and sk,
  written in the store transaction, so that a lookup by SOP Instance UID alone reads the base
  table consistently (the `sop_uid` GSI may lag a store: a client that stores, then
  retrieves, got 404); removed after a delete; a stale one leads to no item (not found);
- config `pk`="CONFIG#{namespace}", `sk`="CF#{name}": value (JSON string).

QIDO-RS searches (`search`) read these GSIs and keys, never Scan: `study_date` (projection ALL)
lists studies newest first and answers StudyDate ranges; `search` (KEYS_ONLY) answers exact
and prefix keys on PatientID, AccessionNumber, PatientName and Modality/ModalitiesInStudy, one
Query per value with `begins_with` on `sxs`; `series_uid` and `sop_uid` answer UID keys. GSI
reads are eventually consistent: a study stored a moment ago may be missing from a search.

Listings follow the sort key: series by SeriesInstanceUID, instances by (SeriesInstanceUID,
SOPInstanceUID), byte order ('#' sorts before every UID character, so this is the same order
as sorting the UID pairs). Counts change only inside transactions: a store ADDs atomically
(guarded by attribute_not_exists on the new items), a delete is conditioned on the counts it
read and retried on fresh reads when anything changed meanwhile.
"""

from __future__ import annotations

import heapq
import json
import random
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import groupby
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.dicom.matching import Narrowing
from chalicelib.dicom.tags import Level
from chalicelib.storage.aws import error_code
from chalicelib.storage.ports import (
    BackendError,
    DeleteResult,
    InstanceRecord,
    NotFound,
    OutOfResources,
    ScanBudgetExceeded,
    SearchCandidate,
    SearchInstance,
    SeriesRecord,
    StoreResult,
    StudyRecord,
)
from chalicelib.storage.records import (
    date_bounds,
    first_version,
    instance_order,
    modality,
    record_from_json,
    record_to_json,
    released_keys,
    search_attributes,
    search_hint,
    search_terms,
    series_conflict,
    sop_conflict,
    stamped,
    study_date,
    study_order,
    term_name,
)

Value = dict[str, Any]
"""A DynamoDB attribute value: {"S": ...}, {"N": ...}, {"SS": [...]}."""
Condition = tuple[str, dict[str, str], dict[str, Value]]
"""A condition expression with its attribute names and values."""

STUDY_SK = "ST"
SOP_INDEX = "sop_uid"
SERIES_INDEX = "series_uid"
DATE_INDEX = "study_date"
SEARCH_INDEX = "search"
DATE_SHARDS = 4
_ATTEMPTS = 8
_CHUNK = 93
"""Instances deleted per transaction: with the series and study items and up to five search
index entries, TransactWriteItems' limit of 100 actions."""
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_EXISTS: Condition = ("attribute_exists(sk)", {}, {})
_ABSENT: Condition = ("attribute_not_exists(sk)", {}, {})


def table_definition() -> dict[str, Any]:
    """The index table's keys and sparse GSIs, as CreateTable takes them (on demand); the
    deployment (infra/stack.py) builds the same table from this."""
    uid_indexes = [
        {
            "IndexName": name,
            "KeySchema": [{"AttributeName": name, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
        for name in (SOP_INDEX, SERIES_INDEX)
    ]
    search_indexes = [
        {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": projection},
        }
        for name, hash_key, range_key, projection in (
            (DATE_INDEX, "ds", "dk", "ALL"),
            (SEARCH_INDEX, "sx", "sxs", "KEYS_ONLY"),
        )
    ]
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", SOP_INDEX, SERIES_INDEX, "ds", "dk", "sx", "sxs")
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": uid_indexes + search_indexes,
    }


def create_table(client: Any, table_name: str) -> None:
    """Create the index table (`table_definition`) and wait until it exists."""
    client.create_table(TableName=table_name, **table_definition())
    client.get_waiter("table_exists").wait(TableName=table_name)


def _s(value: str) -> Value:
    return {"S": value}


def _n(value: int) -> Value:
    return {"N": str(value)}


def _optional(value: str) -> Value | None:
    return {"S": value} if value else None


def _string_set(values: set[str]) -> Value | None:
    values = values - {""}
    return {"SS": sorted(values)} if values else None


def _int(item: dict[str, Value], name: str) -> int:
    return int(item[name]["N"])


def _equals(name: str, value: Value) -> Condition:
    return ("#c = :c", {"#c": name}, {":c": value})


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.005 * 2**attempt))


def _contention(what: str) -> OutOfResources:
    return OutOfResources(f"{what}: too many concurrent changes after {_ATTEMPTS} attempts")


_HANDLED_BY_CALLERS = {"TransactionCanceledException", "ConditionalCheckFailedException"}


@contextmanager
def _translated() -> Iterator[None]:
    """Turn DynamoDB's errors into port errors; the conditional failures that callers act on
    pass through as they are."""
    try:
        yield
    except ClientError as e:
        if error_code(e) in _THROTTLED:
            raise OutOfResources(f"DynamoDB is throttling requests ({error_code(e)})") from e
        if error_code(e) in _HANDLED_BY_CALLERS:
            raise
        raise BackendError(f"DynamoDB failed: {error_code(e)}") from e
    except BotoCoreError as e:
        raise BackendError(f"DynamoDB could not be reached: {type(e).__name__}") from e


def _with_condition(op: dict[str, Any], condition: Condition | None) -> dict[str, Any]:
    if condition is not None:
        expression, names, values = condition
        op["ConditionExpression"] = expression
        op.setdefault("ExpressionAttributeNames", {}).update(names)
        op.setdefault("ExpressionAttributeValues", {}).update(values)
    for name in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        if not op.get(name, True):
            del op[name]  # DynamoDB rejects empty maps
    return op


class _Table:
    """The few DynamoDB calls the adapters make, with throttling turned into OutOfResources."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    @staticmethod
    def key(pk: str, sk: str) -> dict[str, Value]:
        return {"pk": _s(pk), "sk": _s(sk)}

    def get(self, pk: str, sk: str, *projection: str) -> dict[str, Value] | None:
        options: dict[str, Any] = {}
        if projection:
            names = {f"#p{i}": name for i, name in enumerate(projection)}
            options = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        with _translated():
            response = self.client.get_item(
                TableName=self.name, Key=self.key(pk, sk), ConsistentRead=True, **options
            )
        return response.get("Item")

    def batch_get(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Value]]:
        """The items that exist among `keys` (consistent reads), in no particular order."""
        items: list[dict[str, Value]] = []
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 100):
            request = {
                self.name: {
                    "Keys": [self.key(pk, sk) for pk, sk in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            for attempt in range(_ATTEMPTS * 2):
                if attempt:
                    _backoff(min(attempt, _ATTEMPTS))
                with _translated():
                    response = self.client.batch_get_item(RequestItems=request)
                items += response.get("Responses", {}).get(self.name, [])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise OutOfResources("DynamoDB left keys unprocessed in BatchGetItem")
        return items

    def query(self, pk: str, prefix: str, **options: Any) -> Iterator[dict[str, Value]]:
        """Items of partition `pk` whose sort key starts with `prefix`, page after page."""
        yield from self.pages(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": _s(pk), ":prefix": _s(prefix)},
            ConsistentRead=True,
            **options,
        )

    def lookup(self, index: str, value: str) -> list[tuple[str, str]]:
        """(pk, sk) of the items whose `index` attribute is `value` (eventually consistent)."""
        items = self.pages(
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": index},
            ExpressionAttributeValues={":v": _s(value)},
        )
        return [(item["pk"]["S"], item["sk"]["S"]) for item in items]

    def pages(self, operation: str = "query", **params: Any) -> Iterator[dict[str, Value]]:
        while True:
            with _translated():
                response = getattr(self.client, operation)(TableName=self.name, **params)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def put_action(
        self, item: dict[str, Value], condition: Condition | None = None
    ) -> dict[str, Any]:
        return _with_condition({"TableName": self.name, "Item": item}, condition)

    def delete_action(self, pk: str, sk: str, condition: Condition | None = None) -> dict[str, Any]:
        return _with_condition({"TableName": self.name, "Key": self.key(pk, sk)}, condition)

    def update_action(
        self,
        pk: str,
        sk: str,
        set_: dict[str, Value | None],
        add: dict[str, Value | None] | None = None,
        condition: Condition | None = None,
        bump: str | None = None,
    ) -> dict[str, Any]:
        """An Update action: SET the values of `set_` (REMOVE those that are None), ADD those
        of `add` (skipping None), add 1 to the counter `bump` (from `first_version()` when the
        item is new)."""
        names: dict[str, str] = {}
        values: dict[str, Value] = {}
        clauses: dict[str, list[str]] = {"SET": [], "REMOVE": [], "ADD": []}
        for verb, attributes in (("SET", set_), ("ADD", add or {})):
            for name, value in attributes.items():
                token = f"{verb[0].lower()}{len(names)}"
                if value is None:
                    if verb == "SET":
                        names[f"#{token}"] = name
                        clauses["REMOVE"].append(f"#{token}")
                    continue
                names[f"#{token}"] = name
                values[f":{token}"] = value
                clauses[verb].append(
                    f"#{token} = :{token}" if verb == "SET" else f"#{token} :{token}"
                )
        if bump is not None:
            names["#bump"] = bump
            values[":bump0"], values[":bump1"] = _n(first_version() - 1), _n(1)
            clauses["SET"].append("#bump = if_not_exists(#bump, :bump0) + :bump1")
        expression = " ".join(
            f"{verb} {', '.join(parts)}" for verb, parts in clauses.items() if parts
        )
        op = {
            "TableName": self.name,
            "Key": self.key(pk, sk),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        return _with_condition(op, condition)

    def transact(self, actions: list[tuple[str, dict[str, Any]]]) -> list[str] | None:
        """Run the actions (("Put" | "Update" | "Delete", op), ...) in one transaction.

        None when committed; when cancelled, one cancellation code per action ("None",
        "ConditionalCheckFailed", "TransactionConflict", ...)."""
        try:
            with _translated():
                self.client.transact_write_items(TransactItems=[{verb: op} for verb, op in actions])
        except ClientError as e:
            if error_code(e) != "TransactionCanceledException":
                raise
            reasons = e.response.get("CancellationReasons", [])
            codes = [reason.get("Code", "None") for reason in reasons]
            if any(code in _THROTTLED for code in codes):
                raise OutOfResources(f"DynamoDB is throttling requests ({codes})") from e
            return codes
        return None


def _instance_sk(series_uid: str, sop_uid: str) -> str:
    return f"IN#{series_uid}#{sop_uid}"


def _record(item: dict[str, Value]) -> InstanceRecord:
    return record_from_json(item["record"]["S"])


def _search_instance(item: dict[str, Value]) -> SearchInstance:
    """An instance item as a search candidate: UIDs from its keys, the record decoded later."""
    _, series_uid, sop_uid = item["sk"]["S"].split("#")
    record = partial(record_from_json, item["record"]["S"])
    return SearchInstance(item["pk"]["S"], series_uid, sop_uid, record)


def _study(item: dict[str, Value]) -> StudyRecord:
    return StudyRecord(
        study_uid=item["pk"]["S"],
        study_tags=json.loads(item["study_tags"]["S"]),
        num_series=_int(item, "num_series"),
        num_instances=_int(item, "num_instances"),
        modalities=sorted(item.get("modalities", {}).get("SS", [])),
        sop_classes=sorted(item.get("sop_classes", {}).get("SS", [])),
        version=_int(item, "version"),
        orthanc_id=item.get("orthanc_id", {}).get("S", ""),
    )


def _series(item: dict[str, Value]) -> SeriesRecord:
    return SeriesRecord(
        study_uid=item["pk"]["S"],
        series_uid=item["series_uid"]["S"],
        series_tags=json.loads(item["series_tags"]["S"]),
        num_instances=_int(item, "num_instances"),
        version=_int(item, "version"),
        orthanc_id=item.get("orthanc_id", {}).get("S", ""),
    )


def _instance_item(record: InstanceRecord) -> dict[str, Value]:
    item = {
        "pk": _s(record.study_uid),
        "sk": _s(_instance_sk(record.series_uid, record.sop_uid)),
        SOP_INDEX: _s(record.sop_uid),
        "record": _s(record_to_json(record)),
        "modality": _optional(modality(record)),
        "sop_class_uid": _optional(record.sop_class_uid),
    }
    return {name: value for name, value in item.items() if value is not None}


def _sop_pointer(record: InstanceRecord) -> dict[str, Value]:
    at = f"{record.study_uid}|{_instance_sk(record.series_uid, record.sop_uid)}"
    return {"pk": _s(f"SOP#{record.sop_uid}"), "sk": _s("SOP"), "at": _s(at)}


def _series_values(record: InstanceRecord) -> dict[str, Value | None]:
    value = modality(record)
    return {
        "series_tags": _s(json.dumps(record.series_tags)),
        "orthanc_id": _s(record.orthanc_ids.get("series", "")),
        "modality": _optional(value),
        "sx": _optional(value and f"Modality#{value[:1]}"),
        "sxs": _optional(value and f"{value}#{record.study_uid}#{record.series_uid}"),
    }


def _date_shard(study_uid: str) -> str:
    return f"DS#{zlib.crc32(study_uid.encode('ascii', 'replace')) % DATE_SHARDS}"


def _study_values(record: InstanceRecord) -> dict[str, Value | None]:
    search = search_attributes(record.study_tags)
    return {
        "study_tags": _s(json.dumps(record.study_tags)),
        "orthanc_id": _s(record.orthanc_ids.get("study", "")),
        **{name: _optional(value) for name, value in search.items()},
        "ds": _s(_date_shard(record.study_uid)),
        "dk": _s(f"{study_date(record.study_tags)}#{record.study_uid}"),
    }


Terms = dict[str, str]
"""The search index entries of a study: entry name → value (see `records.search_terms`)."""


def _terms_of(item: dict[str, Value] | None) -> Terms | None:
    """The entries a study item says it has; None when the study does not exist."""
    if item is None:
        return None
    return json.loads(item.get("ix", {}).get("S", "null"))


def _term_actions(
    table: _Table, study_uid: str, old: Terms | None, new: Terms
) -> list[tuple[str, dict[str, Any]]]:
    """Puts of the changed entries and deletes of the dropped ones."""
    old = old or {}
    actions = [
        (
            "Put",
            table.put_action(
                {
                    **table.key(study_uid, f"IX#{entry}"),
                    "sx": _s(f"{term_name(entry)}#{value[:1]}"),
                    "sxs": _s(f"{value}#{study_uid}"),
                }
            ),
        )
        for entry, value in new.items()
        if old.get(entry) != value
    ]
    actions += [
        ("Delete", table.delete_action(study_uid, f"IX#{entry}"))
        for entry in old
        if entry not in new
    ]
    return actions


def _terms_condition(old: Terms | None) -> Condition:
    """The study item still has the entries read (so that entries and study_tags agree)."""
    if old is None:
        return ("attribute_not_exists(#ix)", {"#ix": "ix"}, {})
    return ("#ix = :ix", {"#ix": "ix"}, {":ix": _s(json.dumps(old, sort_keys=True))})


def _study_additions(
    record: InstanceRecord, instances: int, series: int
) -> dict[str, Value | None]:
    return {
        "num_instances": _n(instances) if instances else None,
        "num_series": _n(series) if series else None,
        "modalities": _string_set({modality(record)}),
        "sop_classes": _string_set({record.sop_class_uid}),
    }


class DynamoTagIndex:
    """TagIndex on DynamoDB (see the module docstring for the items).

    `iter_studies` scans the table for study items: a bounded listing for now, until the
    date-sorted study GSI of DESIGN.md exists. `get_instance` without a series and
    `find_instance` read the SOP pointer item, then the instance, both consistently: an
    instance is found as soon as its store returned (GSIs, eventually consistent, answer
    only for instances stored before pointers existed)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._table = _Table(client, table_name)

    def store_instance(self, record: InstanceRecord, overwrite: bool) -> StoreResult:
        new = stamped(record)
        sk = _instance_sk(new.series_uid, new.sop_uid)
        for attempt in range(_ATTEMPTS):
            if attempt:
                _backoff(attempt)
            item = self._table.get(new.study_uid, sk)
            if item is not None:
                old = _record(item)
                if not overwrite:
                    return StoreResult("kept", old)
                terms = _terms_of(self._table.get(new.study_uid, STUDY_SK, "sk", "ix"))
                if self._replace(new, item, terms) is None:
                    if (modality(old), old.sop_class_uid) != (modality(new), new.sop_class_uid):
                        self._refresh_sets(new.study_uid)
                    return StoreResult("replaced", new, released_keys(old, new))
                continue
            self._check_sop_elsewhere(new)
            terms = _terms_of(self._table.get(new.study_uid, STUDY_SK, "sk", "ix"))
            # Most stores go to an existing series: try that first; on a new series the
            # series condition fails and the variant that creates it follows.
            codes = self._create(new, terms, series_exists=True)
            if codes is not None and codes[1] == "ConditionalCheckFailed":
                self._check_series_elsewhere(new)
                codes = self._create(new, terms, series_exists=False)
            if codes is None:
                return StoreResult("created", new)
        raise _contention(f"storing instance {new.sop_uid}")

    def _create(
        self, record: InstanceRecord, terms: Terms | None, series_exists: bool
    ) -> list[str] | None:
        """Put the instance (only if absent) and count it in its series and study; the series
        must exist (`series_exists`) or is created, counted once in the study. `terms` are the
        study's search index entries as read: they are brought up to date in the same
        transaction."""
        pk = record.study_uid
        series_sk = f"SE#{record.series_uid}"
        if series_exists:
            series_action = self._table.update_action(
                pk,
                series_sk,
                _series_values(record),
                {"num_instances": _n(1), "version": _n(1)},
                _EXISTS,
            )
            verb = "Update"
        else:
            series_item = {
                "pk": _s(pk),
                "sk": _s(series_sk),
                SERIES_INDEX: _s(record.series_uid),
                "num_instances": _n(1),
                "version": _n(first_version()),
                **_series_values(record),
            }
            series_action = self._table.put_action(
                {name: value for name, value in series_item.items() if value is not None}, _ABSENT
            )
            verb = "Put"
        return self._table.transact(
            [
                ("Put", self._table.put_action(_instance_item(record), _ABSENT)),
                (verb, series_action),
                self._study_update(
                    record, terms, _study_additions(record, 1, 0 if series_exists else 1)
                ),
                *_term_actions(self._table, pk, terms, search_terms(record.study_tags)),
                (
                    "Put",
                    self._table.put_action(_sop_pointer(record)),
                ),  # last: codes[1] is the series
            ]
        )

    def _study_update(
        self, record: InstanceRecord, terms: Terms | None, additions: dict[str, Value | None]
    ) -> tuple[str, dict[str, Any]]:
        """The study item's update, conditioned on its search index entries being `terms`."""
        values = {
            **_study_values(record),
            "ix": _s(json.dumps(search_terms(record.study_tags), sort_keys=True)),
        }
        action = self._table.update_action(
            record.study_uid, STUDY_SK, values, additions, _terms_condition(terms), bump="version"
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
                        _instance_item(record), _equals("record", old_item["record"])
                    ),
                ),
                (
                    "Update",
                    self._table.update_action(
                        pk,
                        f"SE#{record.series_uid}",
                        _series_values(record),
                        {"version": _n(1)},
                        _EXISTS,
                    ),
                ),
                self._study_update(record, terms, _study_additions(record, 0, 0)),
                *_term_actions(self._table, pk, terms, search_terms(record.study_tags)),
            ]
        )

    def _check_sop_elsewhere(self, record: InstanceRecord) -> None:
        """Raise Conflict when the SOP Instance UID is stored under another study or series.

        Found through the GSI, confirmed by a consistent read. Two stores of one SOP Instance
        UID racing into different series are not caught here (DESIGN.md accepts that)."""
        here = (record.study_uid, _instance_sk(record.series_uid, record.sop_uid))
        for pk, sk in self._table.lookup(SOP_INDEX, record.sop_uid):
            if (pk, sk) != here and self._table.get(pk, sk) is not None:
                raise sop_conflict(record, pk, sk.split("#")[1])

    def _check_series_elsewhere(self, record: InstanceRecord) -> None:
        for pk, sk in self._table.lookup(SERIES_INDEX, record.series_uid):
            if pk != record.study_uid and self._table.get(pk, sk) is not None:
                raise series_conflict(record, pk)

    def get_instance(self, study_uid: str, series_uid: str | None, sop_uid: str) -> InstanceRecord:
        if series_uid is None:
            record = self._find(sop_uid)
            if record is not None and record.study_uid == study_uid:
                return record
        elif (item := self._table.get(study_uid, _instance_sk(series_uid, sop_uid))) is not None:
            return _record(item)
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
            return _record(item) if item is not None else None
        for pk, sk in self._table.lookup(SOP_INDEX, sop_uid):
            if (item := self._table.get(pk, sk)) is not None:
                return _record(item)
        return None

    def get_series(self, study_uid: str, series_uid: str) -> SeriesRecord:
        item = self._table.get(study_uid, f"SE#{series_uid}")
        if item is None:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        return _series(item)

    def get_study(self, study_uid: str) -> StudyRecord:
        item = self._table.get(study_uid, STUDY_SK)
        if item is None:
            raise NotFound(f"study {study_uid} not found")
        return _study(item)

    def list_series(self, study_uid: str) -> list[SeriesRecord]:
        return [_series(item) for item in self._table.query(study_uid, "SE#")]

    def list_instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceRecord]:
        prefix = "IN#" if series_uid is None else f"IN#{series_uid}#"
        return [_record(item) for item in self._table.query(study_uid, prefix)]

    def iter_studies(self) -> Iterator[StudyRecord]:
        """Every study, in the table's scan order (stable while the table does not change)."""
        items = self._table.pages(
            "scan",
            FilterExpression="sk = :sk",
            ExpressionAttributeValues={":sk": _s(STUDY_SK)},
            ConsistentRead=True,
        )
        yield from map(_study, items)

    def search(
        self, level: Level, hints: Sequence[Narrowing], budget: int | None
    ) -> Iterator[SearchCandidate]:
        hint = search_hint(level, hints)
        if hint is None:
            yield from self._listing(level, budget)
        elif hint.keyword == "SOPInstanceUID":
            keys = [key for uid in hint.values for key in self._table.lookup(SOP_INDEX, uid)]
            instances = map(_search_instance, self._table.batch_get(keys))
            yield from self._with_parents(sorted(instances, key=instance_order))
        elif hint.keyword in ("SeriesInstanceUID", "Modality"):
            yield from self._below_series(level, self._series_for(hint, hints))
        elif level == "study" and hint.keyword == "StudyDate":
            yield from (SearchCandidate(_study(item)) for item in self._date_listing(hint))
        elif level == "study":
            keys = [(uid, STUDY_SK) for uid in self._studies_for(hint)]
            studies = sorted(map(_study, self._table.batch_get(keys)), key=study_order)
            yield from (SearchCandidate(study) for study in reversed(studies))
        else:
            yield from self._below_studies(level, sorted(self._studies_for(hint)))

    def _studies_for(self, hint: Narrowing) -> set[str]:
        """StudyInstanceUIDs satisfying a study-level hint, from the GSIs."""
        if hint.keyword == "StudyInstanceUID":
            return set(hint.values)
        if hint.keyword == "StudyDate":
            return {item["pk"]["S"] for item in self._date_listing(hint)}
        keyword = "Modality" if hint.keyword == "ModalitiesInStudy" else hint.keyword
        return {pk for pk, _ in self._search_index(keyword, hint)}

    def _series_for(self, hint: Narrowing, hints: Sequence[Narrowing]) -> list[tuple[str, str]]:
        """(StudyInstanceUID, SeriesInstanceUID) of the series satisfying a series hint."""
        if hint.keyword == "Modality":
            keys = self._search_index("Modality", hint)
        else:
            studies = [h.values for h in hints if h.keyword == "StudyInstanceUID"]
            if len(studies) == 1 and len(studies[0]) == 1:
                # The series of a study in the URL: the keys are known, no GSI read needed.
                keys = [(studies[0][0], f"SE#{uid}") for uid in hint.values]
            else:
                keys = [key for uid in hint.values for key in self._table.lookup(SERIES_INDEX, uid)]
        return sorted({(pk, sk.removeprefix("SE#")) for pk, sk in keys})

    def _search_index(self, keyword: str, hint: Narrowing) -> list[tuple[str, str]]:
        """(pk, sk) of the items of the shared GSI `search` whose `keyword` value equals one of
        the hint's values (`exact`) or starts with one (`prefix`)."""
        keys = []
        for value in hint.values:
            items = self._table.pages(
                IndexName=SEARCH_INDEX,
                KeyConditionExpression="sx = :sx AND begins_with(sxs, :v)",
                ExpressionAttributeValues={
                    ":sx": _s(f"{keyword}#{value[:1]}"),
                    ":v": _s(value if hint.kind == "prefix" else f"{value}#"),
                },
            )
            keys += [(item["pk"]["S"], item["sk"]["S"]) for item in items]
        return keys

    def _date_listing(self, hint: Narrowing | None = None) -> Iterator[dict[str, Value]]:
        """Study items from the GSI `study_date`, newest first (within `hint`'s range), the
        shards merged."""
        condition, values = "ds = :ds", {}
        if hint is not None:
            low, high = date_bounds(hint)
            condition += " AND dk BETWEEN :low AND :high"
            # "#" < "0" < "9" < "$": every dated key of the range, none without a date.
            values = {":low": _s(low or "0"), ":high": _s(f"{high or '9' * 8}$")}
        shards = [
            self._table.pages(
                IndexName=DATE_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeValues={":ds": _s(f"DS#{n}"), **values},
                ScanIndexForward=False,
            )
            for n in range(DATE_SHARDS)
        ]
        yield from heapq.merge(*shards, key=lambda item: item["dk"]["S"], reverse=True)

    def _below_studies(self, level: Level, study_uids: list[str]) -> Iterator[SearchCandidate]:
        """The series or instances of studies, each study from one Query of its partition."""
        for study_uid in study_uids:
            condition, values = "pk = :pk", {":pk": _s(study_uid)}
            if level == "series":  # "SE#..." < "ST": the series items and the study item
                condition, values[":se"] = "pk = :pk AND sk >= :se", _s("SE#")
            items = list(
                self._table.pages(
                    KeyConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ConsistentRead=True,
                )
            )
            study = next((_study(i) for i in items if i["sk"]["S"] == STUDY_SK), None)
            if study is None:
                continue
            series = {
                s.series_uid: s for s in (_series(i) for i in items if i["sk"]["S"][:3] == "SE#")
            }
            if level == "series":
                yield from (SearchCandidate(study, s) for _, s in sorted(series.items()))
                continue
            for item in items:
                if item["sk"]["S"][:3] == "IN#":
                    instance = _search_instance(item)
                    if instance.series_uid in series:
                        yield SearchCandidate(study, series[instance.series_uid], instance)

    def _below_series(self, level: Level, keys: list[tuple[str, str]]) -> Iterator[SearchCandidate]:
        for study_uid, group in groupby(keys, key=lambda key: key[0]):
            series_uids = [series_uid for _, series_uid in group]
            items = self._table.batch_get(
                [(study_uid, STUDY_SK), *((study_uid, f"SE#{uid}") for uid in series_uids)]
            )
            study = next((_study(i) for i in items if i["sk"]["S"] == STUDY_SK), None)
            series = {i["series_uid"]["S"]: _series(i) for i in items if i["sk"]["S"] != STUDY_SK}
            if study is None:
                continue
            for series_uid in series_uids:
                if series_uid not in series:
                    continue
                if level == "series":
                    yield SearchCandidate(study, series[series_uid])
                else:
                    for item in self._table.query(study_uid, f"IN#{series_uid}#"):
                        yield SearchCandidate(study, series[series_uid], _search_instance(item))

    def _with_parents(self, instances: list[SearchInstance]) -> Iterator[SearchCandidate]:
        parents = {
            item["pk"]["S"] + item["sk"]["S"]: item
            for item in self._table.batch_get(
                [
                    key
                    for i in instances
                    for key in ((i.study_uid, STUDY_SK), (i.study_uid, f"SE#{i.series_uid}"))
                ]
            )
        }
        for instance in instances:
            study = parents.get(instance.study_uid + STUDY_SK)
            series = parents.get(f"{instance.study_uid}SE#{instance.series_uid}")
            if study is not None and series is not None:
                yield SearchCandidate(_study(study), _series(series), instance)

    def _listing(self, level: Level, budget: int | None) -> Iterator[SearchCandidate]:
        """Every resource of the level in search order, under `budget`."""
        if level == "study":
            candidates = (SearchCandidate(_study(item)) for item in self._date_listing())
        else:
            study_uids = sorted(item["pk"]["S"] for item in self._date_listing())
            candidates = self._below_studies(level, study_uids)
        for read, candidate in enumerate(candidates, 1):
            if budget is not None and read > budget:
                raise ScanBudgetExceeded(level, budget)
            yield candidate

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
        item = self._table.get(study_uid, _instance_sk(series_uid, sop_uid))
        removed = self._remove(study_uid, series_uid, [item]) if item is not None else []
        if not removed:
            raise NotFound(f"instance {sop_uid} not found in study {study_uid} series {series_uid}")
        self._refresh_sets(study_uid)
        return DeleteResult(removed)

    def pending_blob_deletes(self) -> list[str]:
        """Not recorded on DynamoDB yet: a Lambda stopped between the index delete and the S3
        deletes leaves objects no item points to (they cost storage, lose nothing)."""
        return []

    def blobs_deleted(self, keys: Sequence[str]) -> None:
        pass

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
        for attempt in range(_ATTEMPTS):
            if attempt:
                _backoff(attempt)
            series = self._table.get(study_uid, series_sk)
            study = self._table.get(study_uid, STUDY_SK)
            if not items or series is None or study is None:
                return []  # removed meanwhile by another delete
            count = len(items)
            in_series, in_study = _int(series, "num_instances"), _int(study, "num_instances")
            series_emptied = in_series <= count
            actions = [
                ("Delete", self._table.delete_action(study_uid, item["sk"]["S"], _EXISTS))
                for item in items
            ]
            series_condition = _equals("num_instances", _n(in_series))
            if series_emptied:
                actions.append(
                    ("Delete", self._table.delete_action(study_uid, series_sk, series_condition))
                )
            else:
                uncount = {"num_instances": _n(-count), "version": _n(1)}
                actions.append(
                    (
                        "Update",
                        self._table.update_action(
                            study_uid, series_sk, {}, uncount, series_condition
                        ),
                    )
                )
            study_condition = _equals("num_instances", _n(in_study))
            if in_study <= count:
                actions.append(
                    ("Delete", self._table.delete_action(study_uid, STUDY_SK, study_condition))
                )
                actions += _term_actions(self._table, study_uid, _terms_of(study), {})
            else:
                uncount = {
                    "num_instances": _n(-count),
                    "num_series": _n(-1) if series_emptied else None,
                    "version": _n(1),
                }
                actions.append(
                    (
                        "Update",
                        self._table.update_action(
                            study_uid, STUDY_SK, {}, uncount, study_condition
                        ),
                    )
                )
            codes = self._table.transact(actions)
            if codes is None:
                removed = [_record(item) for item in items]
                self._drop_sop_pointers(removed)
                return removed
            items = [
                item
                for item, code in zip(items, codes, strict=False)
                if code != "ConditionalCheckFailed"
            ]
        raise _contention(f"deleting instances of series {series_uid}")

    def _drop_sop_pointers(self, records: list[InstanceRecord]) -> None:
        """Delete the SOP pointers of deleted instances, each only while it still points to
        the deleted item (a re-store elsewhere has replaced it). Best effort: a stale pointer
        leads to no item, which reads as not found."""
        for record in records:
            at = _sop_pointer(record)["at"]
            try:
                with _translated():
                    self._table.client.delete_item(
                        **self._table.delete_action(
                            f"SOP#{record.sop_uid}", "SOP", _equals("at", at)
                        )
                    )
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise

    def _refresh_sets(self, study_uid: str) -> None:
        """Recompute a study's modalities and SOP classes from its instance items, on the
        condition that the study did not change meanwhile."""
        for attempt in range(_ATTEMPTS):
            if attempt:
                _backoff(attempt)
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
            modalities = _string_set({i.get("modality", {}).get("S", "") for i in items})
            sop_classes = _string_set({i.get("sop_class_uid", {}).get("S", "") for i in items})
            stored = [
                _string_set(set(study.get(name, {}).get("SS", [])))
                for name in ("modalities", "sop_classes")
            ]
            if stored == [modalities, sop_classes]:
                return
            op = self._table.update_action(
                study_uid,
                STUDY_SK,
                {"modalities": modalities, "sop_classes": sop_classes},
                condition=_equals("version", study["version"]),
            )
            try:
                with _translated():
                    self._table.client.update_item(**op)
                return
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
        raise _contention(f"updating the modalities of study {study_uid}")


class DynamoConfigStore:
    """ConfigStore on DynamoDB; may share the index table (its items never look like one of
    the index's)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._table = _Table(client, table_name)

    def put_item(self, namespace: str, name: str, value: dict[str, Any]) -> None:
        item = {
            **_Table.key(f"CONFIG#{namespace}", f"CF#{name}"),
            "value": _s(json.dumps(value)),
        }
        with _translated():
            self._table.client.put_item(**self._table.put_action(item))

    def get_item(self, namespace: str, name: str) -> dict[str, Any]:
        item = self._table.get(f"CONFIG#{namespace}", f"CF#{name}")
        if item is None:
            raise NotFound(f"{namespace} item {name!r} not found")
        return json.loads(item["value"]["S"])

    def list_items(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            item["sk"]["S"].removeprefix("CF#"): json.loads(item["value"]["S"])
            for item in self._table.query(f"CONFIG#{namespace}", "CF#")
        }

    def delete_item(self, namespace: str, name: str) -> None:
        op = self._table.delete_action(f"CONFIG#{namespace}", f"CF#{name}", _EXISTS)
        try:
            with _translated():
                self._table.client.delete_item(**op)
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            raise NotFound(f"{namespace} item {name!r} not found") from e
