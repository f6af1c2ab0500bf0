"""BlobStore contract: the same behaviour from files and from S3."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.storage.ports import BackendError, BlobStore, NotFound
from tests.conftest import deny_s3_deletes
from tests.storage.conftest import BUCKET

KEY = "1.2.3/1.2.3.1/1.2.3.1.1/0123456789abcdef.dcm"
DATA = bytes(range(256)) * 4


def test_put_then_get_returns_bytes(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA, "application/dicom")
    assert blob_store.get(KEY) == DATA


def test_put_same_key_replaces_bytes(blob_store: BlobStore) -> None:
    blob_store.put(KEY, b"old")
    blob_store.put(KEY, b"new")
    assert blob_store.get(KEY) == b"new"


def test_put_empty_object(blob_store: BlobStore) -> None:
    blob_store.put(KEY, b"")
    assert blob_store.get(KEY) == b""
    assert blob_store.get_range(KEY, 0, 10) == b""


def test_get_missing_raises_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(NotFound):
        blob_store.get(KEY)


def test_get_prefix_of_key_raises_not_found(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA)
    with pytest.raises(NotFound):
        blob_store.get("1.2.3/1.2.3.1")


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (0, 10, DATA[:10]),
        (100, 28, DATA[100:128]),
        (1020, 100, DATA[1020:]),
        (1023, 1, DATA[1023:]),
        (1024, 10, b""),
        (5000, 10, b""),
        (10, 0, b""),
    ],
    ids=["head", "middle", "past-end", "last-byte", "at-end", "beyond-end", "empty"],
)
def test_get_range_clamped_at_end(
    blob_store: BlobStore, start: int, length: int, expected: bytes
) -> None:
    blob_store.put(KEY, DATA)
    assert blob_store.get_range(KEY, start, length) == expected


@pytest.mark.parametrize("length", [0, 10])
def test_get_range_missing_raises_not_found(blob_store: BlobStore, length: int) -> None:
    with pytest.raises(NotFound):
        blob_store.get_range(KEY, 0, length)


def test_get_range_negative_raises_value_error(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA)
    with pytest.raises(ValueError, match="negative"):
        blob_store.get_range(KEY, -1, 10)


@pytest.mark.parametrize(
    ("start", "expected"),
    [(0, DATA), (100, DATA[100:]), (1024, b""), (5000, b"")],
    ids=["whole", "from-middle", "at-end", "beyond-end"],
)
def test_open_reads_from_start_in_blocks(
    blob_store: BlobStore, start: int, expected: bytes
) -> None:
    blob_store.put(KEY, DATA)
    with blob_store.open(KEY, start) as source:
        blocks = iter(lambda: source.read(100), b"")
        assert b"".join(blocks) == expected


def test_open_missing_raises_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(NotFound):
        blob_store.open(KEY)


def test_delete_removes_object(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA)
    blob_store.delete(KEY)
    assert not blob_store.exists(KEY)
    with pytest.raises(NotFound):
        blob_store.get(KEY)


def test_delete_keeps_neighbours(blob_store: BlobStore) -> None:
    neighbour = "1.2.3/1.2.3.1/1.2.3.1.2/fedcba9876543210.dcm"
    blob_store.put(KEY, DATA)
    blob_store.put(neighbour, b"other")
    blob_store.delete(KEY)
    assert blob_store.get(neighbour) == b"other"
    blob_store.put(KEY, b"again")
    assert blob_store.get(KEY) == b"again"


def test_delete_missing_is_not_an_error(blob_store: BlobStore) -> None:
    blob_store.delete(KEY)
    assert not blob_store.exists(KEY)


def test_exists_reports_presence(blob_store: BlobStore) -> None:
    assert not blob_store.exists(KEY)
    blob_store.put(KEY, DATA)
    assert blob_store.exists(KEY)


@pytest.mark.parametrize(
    "key",
    ["../escape.dcm", "a/../../b", "/etc/passwd", "a//b", "a/./b", "a/b/", "a b", "a\\b", ""],
)
def test_put_invalid_key_raises_value_error(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="blob key"):
        blob_store.put(key, DATA)


def test_presigned_url_names_key_or_is_none(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA)
    url = blob_store.presigned_url(KEY, expires_in=60)
    assert url is None or (url.startswith("https://") and KEY.split("/")[-1] in url)


def test_delete_prefix_removes_folder_only(blob_store: BlobStore) -> None:
    inside = ["cache/1.2/a.json", "cache/1.2/sub/b.json"]
    outside = ["cache/1.23/c.json", "cache/1.2.json", "other/1.2/d.json"]
    for key in inside + outside:
        blob_store.put(key, b"x")
    blob_store.delete_prefix("cache/1.2/")
    assert [blob_store.exists(k) for k in inside] == [False, False]
    assert [blob_store.exists(k) for k in outside] == [True, True, True]
    blob_store.delete_prefix("cache/nothing/")  # a missing folder is not an error


def test_delete_many_removes_those_keys_only(blob_store: BlobStore) -> None:
    removed = [KEY, "1.2.3/1.2.3.1/1.2.3.1.2/fedcba9876543210.dcm", "cache/1.2/a.json"]
    kept = ["1.2.3/1.2.3.1/1.2.3.1.3/0000000000000000.dcm", "cache/1.2/b.json"]
    for key in removed + kept:
        blob_store.put(key, DATA)
    assert blob_store.delete_many([*removed, "1.2.3/missing.dcm"]) == {}
    assert [blob_store.exists(k) for k in removed] == [False, False, False]
    assert [blob_store.exists(k) for k in kept] == [True, True]
    assert blob_store.delete_many([]) == {}


def test_delete_many_invalid_key_removes_nothing(blob_store: BlobStore) -> None:
    blob_store.put(KEY, DATA)
    with pytest.raises(ValueError, match="blob key"):
        blob_store.delete_many([KEY, "../escape.dcm"])
    assert blob_store.exists(KEY)


@pytest.fixture
def undeletable(backend: str, blob_store: BlobStore, request: pytest.FixtureRequest) -> str:
    """A stored key the store refuses to delete: on S3 a bucket policy denies it (DeleteObjects
    then reports it alone), in a folder it is a folder."""
    key = "locked/1.2.3.dcm"
    if backend == "aws":
        blob_store.put(key, DATA)
        deny_s3_deletes(BUCKET, "blobs/locked/*")
    else:
        blob_store.put(f"{key}/inside", DATA)
    return key


def test_delete_many_reports_the_keys_it_could_not_remove(
    blob_store: BlobStore, undeletable: str
) -> None:
    others = [KEY, "1.2.3/1.2.3.1/1.2.3.1.2/fedcba9876543210.dcm"]
    for key in others:
        blob_store.put(key, DATA)
    failed = blob_store.delete_many([others[0], undeletable, others[1]])
    assert list(failed) == [undeletable] and failed[undeletable]
    assert [blob_store.exists(k) for k in others] == [False, False]


@pytest.fixture
def undeletable_in_folder(
    backend: str, blob_store: BlobStore, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A stored key under `cache/1.2/` the store refuses to delete: on S3 a bucket policy
    denies it (DeleteObjects answers 200 and names it in Errors); in a folder its own folder
    is immutable (chattr +i, as root) or read-only (as another user)."""
    key = "cache/1.2/locked/a.json"
    blob_store.put(key, DATA)
    if backend == "aws":
        deny_s3_deletes(BUCKET, "blobs/cache/1.2/locked/*")
        yield key
        return
    folder = tmp_path / "blobs" / "cache" / "1.2" / "locked"
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield key
        folder.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("root without CAP_LINUX_IMMUTABLE: no folder here refuses a delete")
    try:
        yield key
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_delete_prefix_reports_what_it_could_not_remove(
    blob_store: BlobStore, undeletable_in_folder: str
) -> None:
    """Every other blob of the folder goes, and the error names the one left (S3's per-key
    errors were ignored: a study DELETE claimed done with objects left)."""
    others = ["cache/1.2/b.json", "cache/1.2/sub/c.json"]
    for key in others:
        blob_store.put(key, DATA)
    with pytest.raises(BackendError, match=r"could not delete 1 blobs under cache/1\.2/: ") as e:
        blob_store.delete_prefix("cache/1.2/")
    assert undeletable_in_folder in str(e.value)
    assert [blob_store.exists(k) for k in others] == [False, False]
    assert blob_store.exists(undeletable_in_folder)
