"""Local adapters (what `make run` uses): blobs as files under a folder (`blobs.py`), the index
(`index.py`, its tables in `tables.py`, search reads in `search.py`) and the config store
(`config.py`) in one SQLite file (`database.py`); every folder and file for the owner only
(`files.py`)."""

from chalicelib.storage.local.blobs import LocalBlobStore
from chalicelib.storage.local.config import SqliteConfigStore
from chalicelib.storage.local.index import SqliteTagIndex

__all__ = ["LocalBlobStore", "SqliteConfigStore", "SqliteTagIndex"]
