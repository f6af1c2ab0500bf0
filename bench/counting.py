"""What a request reads from the index: counting wrappers around the real backends.

`CountingDynamoClient` wraps a boto3 DynamoDB client (real or moto) the way the storage race
tests wrap it (`tests/storage/test_dynamo.py`): every read asks for ReturnConsumedCapacity=TOTAL
and adds ScannedCount/Count, the capacity DynamoDB reports and an estimate of the read capacity
units billed. `CountingSqlite` counts the rows an SQLite connection hands back and the virtual
machine steps it runs. The scale benchmark (`bench/scale.py`) and the cost tests of QIDO-RS use
them; neither changes what the wrapped client does.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

_READS = ("get_item", "batch_get_item", "query", "scan")
_UNIT = 4096
"""DynamoDB bills reads in 4 KB units: per item for GetItem and BatchGetItem, per response
(the items' sizes added) for Query and Scan; an eventually consistent read costs half."""


@dataclass
class DynamoReads:
    calls: int = 0
    items_read: int = 0
    """Items DynamoDB evaluated: ScannedCount of a Query or Scan, items found by a Get."""
    items_returned: int = 0
    consumed_capacity: float = 0.0
    """ConsumedCapacity.CapacityUnits as the service reports it (moto: a flat figure per call)."""
    rcu_estimate: float = 0.0
    """Read capacity units DynamoDB would bill for the returned items, from their sizes."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (approximately,
    numbers as their digits)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind in ("S", "N", "B"):
        return len(data.encode()) if isinstance(data, str) else len(data)
    if kind in ("SS", "NS", "BS", "L"):
        return 3 + sum(_value_size(v) if kind == "L" else len(str(v).encode()) for v in data)
    if kind == "M":
        return 3 + item_size(data)
    return 1  # BOOL, NULL


def _units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / _UNIT))
    return units if consistent else units / 2


class CountingDynamoClient:
    """A DynamoDB client that counts what its reads cost; every other call passes through."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = DynamoReads()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def reset(self) -> DynamoReads:
        """The reads since the last reset, and a fresh count."""
        reads, self.reads = self.reads, DynamoReads()
        return reads

    def _call(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        response = getattr(self._client, operation)(ReturnConsumedCapacity="TOTAL", **kwargs)
        self.reads.calls += 1
        capacity = response.get("ConsumedCapacity") or []
        for entry in capacity if isinstance(capacity, list) else [capacity]:
            self.reads.consumed_capacity += float(entry.get("CapacityUnits", 0))
        return response

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        response = self._call("get_item", kwargs)
        if "Item" in response:
            self.reads.items_read += 1
            self.reads.items_returned += 1
        size = item_size(response["Item"]) if "Item" in response else 1
        self.reads.rcu_estimate += _units(size, kwargs.get("ConsistentRead", False))
        return response

    def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        response = self._call("batch_get_item", kwargs)
        for table, items in response.get("Responses", {}).items():
            consistent = kwargs["RequestItems"].get(table, {}).get("ConsistentRead", False)
            self.reads.items_read += len(items)
            self.reads.items_returned += len(items)
            self.reads.rcu_estimate += sum(_units(item_size(i), consistent) for i in items)
        return response

    def query(self, **kwargs: Any) -> dict[str, Any]:
        return self._paged("query", kwargs)

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        return self._paged("scan", kwargs)

    def _paged(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        response = self._call(operation, kwargs)
        items = response.get("Items", [])
        self.reads.items_read += response.get("ScannedCount", len(items))
        self.reads.items_returned += response.get("Count", len(items))
        size = sum(item_size(item) for item in items)
        self.reads.rcu_estimate += _units(size, kwargs.get("ConsistentRead", False))
        return response


@dataclass
class SqliteReads:
    rows: int = 0
    """Rows handed back to Python by SELECTs."""
    vm_steps: int = 0
    """SQLite virtual machine instructions run, in hundreds (what rows scanned cost)."""
    statements: int = 0
    """Statements run."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CountingCursor:
    def __init__(self, cursor: sqlite3.Cursor, reads: SqliteReads) -> None:
        self._cursor = cursor
        self._reads = reads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        for row in self._cursor:
            self._reads.rows += 1
            yield row

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        self._reads.rows += row is not None
        return row

    def fetchall(self) -> list[Any]:
        rows = self._cursor.fetchall()
        self._reads.rows += len(rows)
        return rows

    def fetchmany(self, size: int = 1) -> list[Any]:
        rows = self._cursor.fetchmany(size)
        self._reads.rows += len(rows)
        return rows


class CountingSqlite:
    """An sqlite3 connection that counts the rows its statements return and the steps they
    take; put it in place of the connection an adapter holds."""

    _STEP = 100

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.reads = SqliteReads()
        connection.set_progress_handler(self._step, self._STEP)

    def _step(self) -> int:
        self.reads.vm_steps += 1
        return 0  # go on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def reset(self) -> SqliteReads:
        reads, self.reads = self.reads, SqliteReads()
        return reads

    def execute(self, sql: str, parameters: Any = ()) -> _CountingCursor:
        self.reads.statements += 1
        return _CountingCursor(self._connection.execute(sql, parameters), self.reads)
