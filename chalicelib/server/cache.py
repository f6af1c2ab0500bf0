"""Derived documents cached in the BlobStore (series metadata, thumbnails).

An entry lives at one stable key per resource and starts with the tag it was built from (a
series version, a digest of versions) and a newline: a store or delete changes the tag, the
next request rebuilds and overwrites the entry, so stale entries never pile up. Entries are
rebuilt on demand, so DELETE may simply remove a study's cache folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from chalicelib.storage import ports

METADATA_PREFIX = "cache/metadata/"
"""Series and study metadata documents, under `{METADATA_PREFIX}{study}/`."""


def versioned(blobs: ports.BlobStore, key: str, tag: str, produce: Callable[[], bytes]) -> bytes:
    """The payload cached at `key` when it was built for `tag`; else produce and keep it."""
    header = tag.encode("ascii") + b"\n"
    try:
        entry = blobs.get(key)
        if entry.startswith(header):
            return entry[len(header) :]
    except ports.NotFound:
        pass
    payload = produce()
    with contextlib.suppress(ports.StorageError):  # a failed cache write fails no answer
        blobs.put(key, header + payload, "application/octet-stream")
    return payload
