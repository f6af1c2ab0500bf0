"""The DynamoDB index table: its definition (keys, GSIs), attribute value helpers, and `Table`,
the few calls the adapters make with DynamoDB's errors translated into port errors."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.storage.aws import error_code
from chalicelib.storage.ports import BackendError, OutOfResources
from chalicelib.storage.records import first_version

Value = dict[str, Any]
"""A DynamoDB attribute value: {"S": ...}, {"N": ...}, {"SS": [...]}."""
Condition = tuple[str, dict[str, str], dict[str, Value]]
"""A condition expression with its attribute names and values."""

STUDY_SK = "ST"
SOP_INDEX = "sop_uid"
SERIES_INDEX = "series_uid"
DATE_INDEX = "study_date"
SEARCH_INDEX = "search"
KEY_INDEX = "study_keys"
DATE_SHARDS = 4
ATTEMPTS = 8
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
EXISTS: Condition = ("attribute_exists(sk)", {}, {})
ABSENT: Condition = ("attribute_not_exists(sk)", {}, {})


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
            "Projection": projection,
        }
        for name, hash_key, range_key, projection in (
            (DATE_INDEX, "ds", "dk", {"ProjectionType": "ALL"}),
            (SEARCH_INDEX, "sx", "sxs", {"ProjectionType": "KEYS_ONLY"}),
            (KEY_INDEX, "kx", "kd", {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["term"]}),
        )
    ]
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", SOP_INDEX, SERIES_INDEX, "ds", "dk", "sx", "sxs", "kx", "kd")
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


def string(value: str) -> Value:
    return {"S": value}


def number(value: int) -> Value:
    return {"N": str(value)}


def optional_string(value: str) -> Value | None:
    return {"S": value} if value else None


def string_set(values: set[str]) -> Value | None:
    values = values - {""}
    return {"SS": sorted(values)} if values else None


def int_of(item: dict[str, Value], name: str) -> int:
    return int(item[name]["N"])


def equals(name: str, value: Value) -> Condition:
    return ("#c = :c", {"#c": name}, {":c": value})


def projected(*names: str) -> dict[str, Any]:
    """The options of a read that returns only the attributes `names`."""
    aliases = {f"#p{i}": name for i, name in enumerate(names)}
    return {"ProjectionExpression": ", ".join(aliases), "ExpressionAttributeNames": aliases}


def backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.005 * 2**attempt))


def contention(what: str) -> OutOfResources:
    return OutOfResources(f"{what}: too many concurrent changes after {ATTEMPTS} attempts")


_HANDLED_BY_CALLERS = {"TransactionCanceledException", "ConditionalCheckFailedException"}


@contextmanager
def translated() -> Iterator[None]:
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


def _requests(request: dict[str, Any]) -> int:
    """How many requests (BatchWriteItem) or keys (BatchGetItem) a batch request holds."""
    return sum(len(v) if isinstance(v, list) else len(v["Keys"]) for v in request.values())


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


class Table:
    """The few DynamoDB calls the adapters make, with throttling turned into OutOfResources."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    @staticmethod
    def key(pk: str, sk: str) -> dict[str, Value]:
        return {"pk": string(pk), "sk": string(sk)}

    def get(self, pk: str, sk: str, *projection: str) -> dict[str, Value] | None:
        options = projected(*projection) if projection else {}
        with translated():
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
            for response in self._batch("batch_get_item", request, "UnprocessedKeys"):
                items += response.get("Responses", {}).get(self.name, [])
        return items

    def batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        """BatchWriteItem of `requests` ({"PutRequest": ...} or {"DeleteRequest": ...}), 25 a
        call."""
        for start in range(0, len(requests), 25):
            request = {self.name: list(requests[start : start + 25])}
            self._batch("batch_write_item", request, "UnprocessedItems")

    def _batch(
        self, operation: str, request: dict[str, Any], unprocessed: str
    ) -> list[dict[str, Any]]:
        """The responses of the batch `operation` of `request`, what DynamoDB leaves
        `unprocessed` sent again with backoff for as long as the calls get some of it done;
        OutOfResources after ATTEMPTS calls in a row that got none of it done (what the
        earlier calls did stays done)."""
        responses = []
        stalled = 0
        while True:
            with translated():
                responses.append(getattr(self.client, operation)(RequestItems=request))
            left = responses[-1].get(unprocessed) or {}
            if not left:
                return responses
            stalled = stalled + 1 if _requests(left) >= _requests(request) else 0
            if stalled == ATTEMPTS:
                raise OutOfResources(
                    f"DynamoDB left all {_requests(left)} requests unprocessed in {ATTEMPTS} "
                    f"{operation} calls in a row; retry later"
                )
            backoff(max(stalled, 1))
            request = left

    def query(self, pk: str, prefix: str, **options: Any) -> Iterator[dict[str, Value]]:
        """Items of partition `pk` whose sort key starts with `prefix`, page after page."""
        yield from self.pages(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": string(pk), ":prefix": string(prefix)},
            ConsistentRead=True,
            **options,
        )

    def lookup(self, index: str, value: str) -> list[tuple[str, str]]:
        """(pk, sk) of the items whose `index` attribute is `value` (eventually consistent)."""
        items = self.pages(
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": index},
            ExpressionAttributeValues={":v": string(value)},
        )
        return [(item["pk"]["S"], item["sk"]["S"]) for item in items]

    def pages(
        self, operation: str = "query", growing: int | None = None, **params: Any
    ) -> Iterator[dict[str, Value]]:
        """The items of a Query or Scan, page after page. With `growing`, the first page holds
        at most that many items and each next one twice as many (DynamoDB's 1 MB bound stays):
        a reader that stops early reads little more than it takes."""
        while True:
            if growing:
                params["Limit"] = growing
                growing *= 2
            with translated():
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
            values[":bump0"], values[":bump1"] = number(first_version() - 1), number(1)
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
            with translated():
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
