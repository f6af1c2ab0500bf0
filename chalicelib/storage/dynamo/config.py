"""ConfigStore on DynamoDB."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.storage.aws import error_code
from chalicelib.storage.dynamo.table import EXISTS, Table, string, translated
from chalicelib.storage.ports import NotFound


class DynamoConfigStore:
    """ConfigStore on DynamoDB; may share the index table (its items never look like one of
    the index's)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._table = Table(client, table_name)

    def put_item(self, namespace: str, name: str, value: dict[str, Any]) -> None:
        item = {
            **Table.key(f"CONFIG#{namespace}", f"CF#{name}"),
            "value": string(json.dumps(value)),
        }
        with translated():
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
        op = self._table.delete_action(f"CONFIG#{namespace}", f"CF#{name}", EXISTS)
        try:
            with translated():
                self._table.client.delete_item(**op)
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            raise NotFound(f"{namespace} item {name!r} not found") from e
