"""ConfigStore on SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalicelib.storage.local.database import Database
from chalicelib.storage.ports import NotFound

_CONFIG_SCHEMA = """
CREATE TABLE IF NOT EXISTS config (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
)
"""


class SqliteConfigStore:
    """ConfigStore on SQLite; may share the index's database file."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, _CONFIG_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put_item(self, namespace: str, name: str, value: dict[str, Any]) -> None:
        with self._db.write() as db:
            db.execute(
                "REPLACE INTO config (namespace, name, value) VALUES (?, ?, ?)",
                (namespace, name, json.dumps(value)),
            )

    def get_item(self, namespace: str, name: str) -> dict[str, Any]:
        rows = self._db.read(
            "SELECT value FROM config WHERE namespace = ? AND name = ?", (namespace, name)
        )
        if not rows:
            raise NotFound(f"{namespace} item {name!r} not found")
        return json.loads(rows[0][0])

    def list_items(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows = self._db.read(
            "SELECT name, value FROM config WHERE namespace = ? ORDER BY name", (namespace,)
        )
        return {name: json.loads(value) for name, value in rows}

    def delete_item(self, namespace: str, name: str) -> None:
        with self._db.write() as db:
            deleted = db.execute(
                "DELETE FROM config WHERE namespace = ? AND name = ?", (namespace, name)
            ).rowcount
        if not deleted:
            raise NotFound(f"{namespace} item {name!r} not found")
