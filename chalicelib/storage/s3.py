"""BlobStore on S3: objects under `prefix` in one bucket; ranges are S3 Range GETs.

The client is built by `chalicelib/context.py` with SigV4 signing, which presigned URLs need
in every region opened since 2014 and which S3 requires of all new buckets.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.storage.aws import error_code
from chalicelib.storage.ports import BackendError, NotFound, OutOfResources, StorageError
from chalicelib.storage.records import not_removed, validate_key

_MISSING = {"NoSuchKey", "404", "NotFound"}
_FORBIDDEN = {"403", "Forbidden", "AccessDenied"}
"""What HeadObject answers for a missing key when the caller may not list the bucket."""
_THROTTLED = {"SlowDown", "503"}
DELETE_BATCH = 1000
"""Keys per DeleteObjects call: S3's limit."""


@contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turn S3's errors into port errors (NotFound, OutOfResources, BackendError)."""
    try:
        yield
    except ClientError as e:
        if error_code(e) in _MISSING:
            raise NotFound(f"blob {key} not found") from e
        if error_code(e) in _THROTTLED:
            raise OutOfResources(f"S3 is throttling requests ({error_code(e)}); retry later") from e
        if error_code(e) == "InvalidRange":
            raise  # get_range answers it
        raise BackendError(f"S3 failed on {key}: {error_code(e)}") from e
    except BotoCoreError as e:
        raise BackendError(f"S3 could not be reached for {key}: {type(e).__name__}") from e


class S3BlobStore:
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def _key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def put(
        self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
    ) -> None:
        # botocore takes bytes, bytearray or a file, not a view: the copy costs little beside
        # the upload.
        body = bytes(data)  # no copy when `data` is bytes already
        with _translated(key):
            self._client.put_object(
                Bucket=self._bucket, Key=self._key(key), Body=body, ContentType=content_type
            )

    def get(self, key: str) -> bytes:
        with _translated(key):
            return self._client.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"byte range start={start} length={length} must not be negative")
        if length == 0:
            if not self.exists(key):
                raise NotFound(f"blob {key} not found")
            return b""
        try:
            with _translated(key):
                response = self._client.get_object(
                    Bucket=self._bucket,
                    Key=self._key(key),
                    Range=f"bytes={start}-{start + length - 1}",
                )
        except ClientError as e:
            if error_code(e) == "InvalidRange":  # the range starts at or past the end of the object
                return b""
            raise
        return response["Body"].read()

    def open(self, key: str, start: int = 0) -> BinaryIO:
        if start < 0:
            raise ValueError(f"byte offset start={start} must not be negative")
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            with _translated(key):
                response = self._client.get_object(
                    Bucket=self._bucket, Key=self._key(key), **ranged
                )
        except ClientError as e:
            if error_code(e) == "InvalidRange":  # the object ends before `start`
                return io.BytesIO()
            raise
        return response["Body"]

    def delete(self, key: str) -> None:
        with _translated(key):
            self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """DeleteObjects, `DELETE_BATCH` keys a call; a key S3 reports an error for, or
        one of a call that failed altogether, is answered with the reason."""
        names = {self._key(key): key for key in keys}
        objects = list(names)
        failed: dict[str, str] = {}
        for start in range(0, len(objects), DELETE_BATCH):
            for name, reason in self._delete_objects(objects[start : start + DELETE_BATCH]).items():
                failed[names.get(name, name)] = reason
        return failed

    def delete_prefix(self, prefix: str) -> None:
        """One DeleteObjects per listed page (at most `DELETE_BATCH` keys); every page is
        tried, then the keys S3 did not delete are reported (it answers 200 with per-key
        errors: a denied or failed key is only in the answer's Errors)."""
        paginator = self._client.get_paginator("list_objects_v2")
        failed: dict[str, str] = {}
        with _translated(prefix):
            folder = self._key(prefix.rstrip("/")) + "/"
            for page in paginator.paginate(Bucket=self._bucket, Prefix=folder):
                if names := [item["Key"] for item in page.get("Contents", [])]:
                    failed |= self._delete_objects(names)
        if failed:
            left = {name.removeprefix(self._prefix): reason for name, reason in failed.items()}
            raise BackendError(not_removed(prefix, left))

    def _delete_objects(self, names: list[str]) -> dict[str, str]:
        """DeleteObjects of the S3 keys `names` (at most `DELETE_BATCH`): the names S3 did not
        delete, each with the reason (all of them when the call failed)."""
        try:
            with _translated(f"DeleteObjects of {len(names)} keys"):
                response = self._client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": name} for name in names], "Quiet": True},
                )
        except StorageError as e:
            return dict.fromkeys(names, str(e))
        failed = {}
        for error in response.get("Errors", []):
            reason = f"S3 did not delete it: {error.get('Code')} {error.get('Message', '')}"
            failed[error["Key"]] = reason.rstrip()
        return failed

    def exists(self, key: str) -> bool:
        try:
            with _translated(key):
                try:
                    self._client.head_object(Bucket=self._bucket, Key=self._key(key))
                except ClientError as e:
                    # S3 hides whether a key exists from a caller without s3:ListBucket:
                    # HeadObject (which has no error body) then answers 403, not 404.
                    if error_code(e) in _FORBIDDEN:
                        return False
                    raise
        except NotFound:
            return False
        return True

    def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key(key)},
            ExpiresIn=expires_in,
        )

    def presigned_upload_url(
        self, key: str, content_type: str, expires_in: int = 3600
    ) -> str | None:
        return self._client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": self._key(key), "ContentType": content_type},
            ExpiresIn=expires_in,
        )
