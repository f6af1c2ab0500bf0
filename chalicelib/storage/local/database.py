"""The SQLite database the local index and config stores share (one file, `index.sqlite`).

Safe for the threads of a ThreadingHTTPServer: each object holds one connection behind a lock,
and several objects (or processes) on the same file serialize their writes through SQLite
(WAL, `BEGIN IMMEDIATE`, busy timeout).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chalicelib.storage.local.files import make_private_database
from chalicelib.storage.ports import BackendError, OutOfResources

_IN_CHUNK = 500
"""Values per `IN (...)` (SQLite allows 999 parameters in older builds)."""


class Database:
    """One SQLite connection behind a lock; writes run in `BEGIN IMMEDIATE` transactions."""

    def __init__(
        self,
        path: Path,
        schema: str,
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Open (or create) the database, create what `schema` lacks, then run `migrate` in
        the same transaction (an earlier version's database brought up to date)."""
        make_private_database(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self.write() as db:
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)
            if migrate is not None:
                migrate(db)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, translated_sqlite():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock, translated_sqlite():
            return self._db.execute(sql, params).fetchall()

    def read_in(self, sql: str, values: Iterable[str]) -> list[tuple[Any, ...]]:
        """`sql` with `IN ({})` run over `values` in chunks (SQLite's parameter limit)."""
        values = list(dict.fromkeys(values))
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            rows += self.read(sql.format(", ".join("?" * len(chunk))), tuple(chunk))
        return rows

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the database (a read transaction): a delete
        committed between two of them must not make them disagree."""
        with self._lock, translated_sqlite():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


@contextmanager
def translated_sqlite() -> Iterator[None]:
    """SQLite's errors as port errors (issue 11: an untranslated OperationalError made the
    whole STOW a 500 and left the stored blobs behind)."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise OutOfResources(f"the SQLite index is busy ({e}); retry later") from e
        raise BackendError(f"SQLite failed: {e}") from e
    except sqlite3.Error as e:
        raise BackendError(f"SQLite failed: {e}") from e
