"""BlobStore on a folder: one file per key, written atomically."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from chalicelib.storage.local.files import PRIVATE_FILE, make_folders
from chalicelib.storage.ports import BackendError, NotFound, OutOfResources, StorageError
from chalicelib.storage.records import not_removed, validate_key


class LocalBlobStore:
    """Files under `root`, named by their key, for the owner only (`files.py`); every write is
    atomic: a temporary file in `root/.tmp` (named after the writing process), then a rename
    into place. Temporary files of processes that no longer run (killed mid-write) are removed
    when a store opens, and once those of the older scheme, beside the blobs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders = threading.Lock()
        """Held to make a blob's missing folders and rename into them, and to remove an empty
        folder: a put whose folder a concurrent delete prunes, again and again under load,
        cannot lose every race (it lost 100 in a row once, a 500)."""
        self._folder = str(root)
        self._temp = root / _TEMP_FOLDER
        make_folders(root)
        marked_now = mark_top_folder(root)
        make_folders(self._temp)
        _remove_dead_temp_files(self._temp)
        if marked_now:
            _remake_empty_folder(self._temp)
        if not (root / _OLDER_SCHEME_SWEPT).is_dir():
            self._remove_older_temp_files()
            make_folders(root / _OLDER_SCHEME_SWEPT)

    def _remove_older_temp_files(self) -> None:
        """Before `root/.tmp`, `put` wrote `.{8 random}.tmp` in the blob's folder; a kill
        mid-write left it there (one walk of the store, the first time it opens)."""
        for folder, _, names in os.walk(self.root):
            for name in names:
                if _OLDER_TEMP_NAME.fullmatch(name):
                    path = Path(folder, name)
                    path.unlink(missing_ok=True)
                    self._prune(path)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(
        self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
    ) -> None:
        path = self._path(key)
        temp = _write_temp(self._temp, data)
        try:
            self._rename_into_place(temp, path)
        except OSError as e:
            raise BackendError(f"cannot write blob {key}: {e.strerror}") from e

    def _rename_into_place(self, temp: str, path: Path) -> None:
        """Rename `temp` to `path`; a put into an existing folder is one rename. When the
        folder is missing (the first blob of a folder, or a concurrent delete pruned it), it
        is made and the rename done under `_folders`, which every folder removal takes."""
        try:
            try:
                os.replace(temp, path)
            except FileNotFoundError:
                with self._folders:
                    make_folders(path.parent)
                    os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as e:
            raise NotFound(f"blob {key} not found") from e
        except OSError as e:
            raise BackendError(f"cannot read blob {key}: {e.strerror}") from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"byte range start={start} length={length} must not be negative")
        try:
            with self._path(key).open("rb") as f:
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError) as e:
            raise NotFound(f"blob {key} not found") from e
        except OSError as e:
            raise BackendError(f"cannot read blob {key}: {e.strerror}") from e

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """The file, unbuffered and opened by its path as text: a streamed answer takes its
        descriptor to `sendfile`, and a series opens a hundred (a `Path` and a buffer cost
        2.5 times the open itself)."""
        if start < 0:
            raise ValueError(f"byte offset start={start} must not be negative")
        path = os.path.join(self._folder, validate_key(key))
        try:
            source = open(path, "rb", buffering=0)  # noqa: SIM115 (the caller closes it)
        except (FileNotFoundError, IsADirectoryError) as e:
            raise NotFound(f"blob {key} not found") from e
        except OSError as e:
            raise BackendError(f"cannot read blob {key}: {e.strerror}") from e
        if start:
            source.seek(start)
        return source

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise BackendError(f"cannot delete blob {key}: {e.strerror}") from e
        self._prune(path)

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        for key in keys:
            validate_key(key)
        failed = {}
        for key in keys:
            try:
                self.delete(key)
            except StorageError as e:
                failed[key] = str(e)
        return failed

    def _prune(self, path: Path) -> None:
        """Remove the folders of a removed file that are now empty, up to the root."""
        for folder in path.parents:
            if folder == self.root:
                break
            try:
                with self._folders:
                    folder.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                break

    def delete_prefix(self, prefix: str) -> None:
        """Remove the folder's files, then its folders, deepest first; every file is tried,
        then those left are reported. What a concurrent put adds meanwhile may stay: a
        folder that is not empty then is kept, without an error, as on S3."""
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return
        failed: dict[str, str] = {}

        def fail(error: OSError) -> None:
            if error.errno != errno.ENOENT:  # removed meanwhile is removed
                key = os.path.relpath(error.filename or folder, self.root)
                failed[key] = error.strerror or type(error).__name__

        for parent, _, names in os.walk(folder, topdown=False, onerror=fail):
            for name in names:
                try:
                    os.unlink(os.path.join(parent, name))
                except OSError as e:
                    fail(e)
            with self._folders, contextlib.suppress(OSError):  # not empty: what failed, a new put
                os.rmdir(parent)
        if failed:
            raise BackendError(not_removed(prefix, failed))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        return None

    def presigned_upload_url(
        self, key: str, content_type: str, expires_in: int = 3600
    ) -> str | None:
        return None


_FS_TOPDIR_FL = 0x00020000
"""`chattr +T`, "the top of directory hierarchies for the purposes of the Orlov block
allocator" (chattr(1); linux/fs.h)."""
_IOCTL_FLAGS_SIZE = struct.calcsize("l")
_FS_IOC_GETFLAGS = 2 << 30 | _IOCTL_FLAGS_SIZE << 16 | ord("f") << 8 | 1  # _IOR('f', 1, long)
_FS_IOC_SETFLAGS = 1 << 30 | _IOCTL_FLAGS_SIZE << 16 | ord("f") << 8 | 2  # _IOW('f', 2, long)


def mark_top_folder(root: Path) -> bool:
    """Have ext4 place the folders made in `root` (the temporary files' folder, the studies')
    as it places top-level ones: each in a block group of its own with free inodes and blocks
    above the average (Orlov), not beside `root`'s parent. Best effort: file systems without
    the flag (tmpfs, xfs, btrfs, macOS) are left as they are. True when the flag was set now
    (it places only the folders made after it: an older store's stay where they are).

    Why: every blob is a new inode, and ext4 without a journal passes over each inode of the
    group freed in the last 5 to 35 s before it takes a free one (`recently_deleted` in
    fs/ext4/ialloc.c). Beside a busy parent such as /tmp, where other programs create and
    remove many files, a create cost 0.8-2 ms on this project's machine (1,200 files written
    and removed before, as by a benchmark run), against 0.14-0.4 ms in a folder so placed;
    one request of 20 instances spent 20-40 ms there (DESIGN.md, Ingest)."""
    if sys.platform != "linux":
        return False
    import fcntl

    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            (flags,) = struct.unpack_from(
                "i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(_IOCTL_FLAGS_SIZE))
            )
            if flags & _FS_TOPDIR_FL:
                return False
            value = struct.pack("i", flags | _FS_TOPDIR_FL).ljust(_IOCTL_FLAGS_SIZE, b"\0")
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value)
            return True
        finally:
            os.close(fd)
    except OSError:
        return False


def _remake_empty_folder(folder: Path) -> None:
    """Remove `folder` and make it again, so that a root marked by `mark_top_folder` places
    it anew. Best effort: left as it is when it is not empty (a running process's temporary
    file) or cannot be removed (`_write_temp` makes it again if another process removed it)."""
    try:
        folder.rmdir()
    except OSError:
        return
    make_folders(folder)


_TEMP_ATTEMPTS = 100
_TEMP_FOLDER = ".tmp"
"""Not a key the app writes (UIDs, `cache/...`): temporary files of `put`, one folder."""
_OLDER_TEMP_NAME = re.compile(r"\.[a-z0-9_]{8}\.tmp")
"""`tempfile.mkstemp(prefix=".", suffix=".tmp")`, which `put` used beside the blob."""
_OLDER_SCHEME_SWEPT = ".older-temp-files-removed"
"""An empty folder that marks the older scheme's temporary files gone (a folder, so that no
listing of the stored files sees it; not a key the app writes)."""


def _remove_dead_temp_files(folder: Path) -> None:
    for path in folder.glob("*.tmp"):
        pid = path.name.split("-", 1)[0]
        if not (pid.isdigit() and _process_runs(int(pid))):
            path.unlink(missing_ok=True)


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _write_temp(folder: Path, data: bytes | memoryview) -> str:
    """A new file in `folder` holding `data`, named after this process (`{pid}-{n}.tmp`)."""
    for attempt in range(_TEMP_ATTEMPTS):
        name = f"{folder}/{os.getpid()}-{next(_temp_numbers)}.tmp"
        try:
            if attempt:
                make_folders(folder)  # removed while the store runs: make it again
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            break
        except FileExistsError:  # left by an earlier process with the same id: next number
            continue
        except FileNotFoundError as e:
            if attempt == _TEMP_ATTEMPTS - 1:
                raise BackendError(f"cannot create a file in {folder}: {e.strerror}") from e
        except OSError as e:
            raise BackendError(f"cannot create a file in {folder}: {e.strerror}") from e
    else:
        raise BackendError(f"cannot create a file in {folder}: every name tried is taken")
    try:
        with memoryview(data) as view:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
    except OSError as e:
        os.close(fd)
        os.unlink(name)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutOfResources(f"no space left in {folder} for {len(data)} bytes") from e
        raise BackendError(f"cannot write in {folder}: {e.strerror}") from e
    os.close(fd)
    return name


_temp_numbers = itertools.count()
"""Numbers of the temporary files of this process (`next` on it is atomic under the GIL)."""
