"""File modes of the local store: it holds patient data, so everything it creates (folders,
blobs, the SQLite file) is for its owner only, whatever the umask."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def make_folders(path: Path) -> None:
    """Create `path` and its missing parents with PRIVATE_FOLDER (`os.makedirs` gives the
    mode to the last one only); existing folders are left as they are."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, PRIVATE_FOLDER)


def make_private_database(path: Path) -> None:
    """Create the SQLite file `path` with PRIVATE_FILE before SQLite opens it (SQLite gives its
    -wal and -shm files the database file's mode); narrow an older file's mode."""
    make_folders(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, PRIVATE_FILE)
