"""Store one instance: parse, validate, write the blob and its metadata, commit to the index.

Used by STOW-RS and by every other way data comes in (retrieve jobs, imports). The index
write is the commit point: a failure before it leaves no visible instance, and a blob the index
stops pointing to is deleted only after the commit. A write intent recorded before the blob
writes (`TagIndex.begin_blob_writes`) lets `remove_interrupted_writes` find the blobs of a
store stopped before its commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from chalicelib.context import Context
from chalicelib.dicom import metadata
from chalicelib.dicom.ids import is_valid_uid, orthanc_ids
from chalicelib.dicom.parse import Buffer, MissingAttribute, UnreadableInstance
from chalicelib.dicom.rawread import read_instance
from chalicelib.storage.ports import (
    BlobStore,
    BlobWrite,
    Conflict,
    InstanceRecord,
    NotFound,
    OutOfResources,
    StoreResult,
    TagIndex,
)
from chalicelib.storage.records import oversized_record, utc_stamp

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# FailureReason (0008,1197) values, PS3.4 Annex I Table I.2-2 and PS3.18 Annex I (2025b).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


@dataclass
class IngestResult:
    status: Literal["stored", "failed", "unreadable"]
    """`unreadable`: SOP Class/Instance UID could not be read, so no failure item names it."""
    message: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    failure_reason: int = 0
    outcome: str = ""
    """created | kept | replaced, for stored instances."""

    @property
    def conflict(self) -> bool:
        return self.failure_reason == PROCESSING_FAILURE


def blob_key(study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    """Keys come from validated UIDs, a content hash and a nonce: no traversal, and never
    reused, so a delete racing a re-store of the same bytes cannot remove the new blob.

    The instance's files lie in its series' folder (no folder per instance: creating one cost
    as much as writing the file, see DESIGN.md, Ingest); keys stored before are read as they
    are."""
    return f"{study_uid}/{series_uid}/{sop_uid}_{sha256[:16]}-{secrets.token_hex(4)}.dcm"


def metadata_key(key: str) -> str:
    """Where the precomputed WADO-RS metadata of the blob at `key` lives, on an index that
    does not keep it (`TagIndex.keeps_metadata`)."""
    return key.removesuffix(".dcm") + ".json.gz"


FRAME_TABLE_INLINE = 256
"""Encapsulated frames whose fragment table stays in the index record; a larger table is a
blob beside the instance (3,000 frames make ~90 KB of JSON; DynamoDB items stop at 400 KB)."""


def frames_key(key: str) -> str:
    """Where the fragment table of the blob at `key` lives when it is not in the record."""
    return key.removesuffix(".dcm") + ".frames.json"


def _split_frame_table(pixel: dict, key: str) -> tuple[dict, bytes | None]:
    """The pixel facts to index, and the frame table blob when it is too large to inline."""
    frames = pixel.get("frames")
    if not frames or len(frames) <= FRAME_TABLE_INLINE:
        return pixel, None
    facts = {k: v for k, v in pixel.items() if k != "frames"}
    facts |= {"frames_key": frames_key(key), "frame_total": len(frames)}
    return facts, json.dumps(frames, separators=(",", ":")).encode()


def store_instance(
    ctx: Context, data: Buffer, expected_study_uid: str | None = None
) -> IngestResult:
    """Store one Part-10 file (or bare dataset) and say what happened."""
    return store_instances(ctx, [data], expected_study_uid)[0]


def store_instances(
    ctx: Context, parts: Sequence[Buffer], expected_study_uid: str | None = None
) -> list[IngestResult]:
    """Store the instances of one request, each on its own, and say what happened to each
    (in the order of `parts`): one failure does not fail the others. Parts may be views of
    the request body: they are read, hashed and written from it, never copied.

    Parts are parsed and checked in parallel threads (hashing releases the GIL), their write
    intents recorded in one index write, their blobs written in parallel threads (file and
    network writes release the GIL), then committed to the index together (one SQLite
    transaction); the answer is given only after that commit.
    """
    prepared = _in_parallel(lambda data: _prepare(ctx, data, expected_study_uid), parts)
    _write_blobs(ctx, [item for item in prepared if item.record is not None])
    ready = [(item.result, item.record) for item in prepared if item.record is not None]
    if ready:
        records = [record for _, record in ready]
        try:
            outcomes = ctx.index.store_instances(records, ctx.settings.overwrite_instances)
        except Exception as exc:  # none of them was committed
            outcomes = [exc] * len(records)
        forgotten = [
            record.blob_key
            for (result, record), outcome in zip(ready, outcomes, strict=True)
            if _settle(ctx, result, record, outcome)
        ]
        _end_writes(ctx, forgotten)
    return [item.result for item in prepared]


PARALLEL_PARTS = 4
"""Threads that prepare the parts of one request; beyond the cores they still overlap the
waits (file writes, S3 PUTs), and pydicom's parsing holds the GIL whatever their number."""


@functools.cache
def _workers() -> ThreadPoolExecutor:
    """One pool per process (per Lambda container), shared by concurrent requests."""
    return ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="ingest")


def _in_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`function` of each item, on the workers unless there is only one."""
    if len(items) == 1:
        return [function(items[0])]
    return list(_workers().map(function, items))


@dataclass
class _Prepared:
    result: IngestResult
    record: InstanceRecord | None = None
    """Set when the part is checked and its blobs are next; None again if they fail."""
    data: Buffer = b""
    document: bytes = b""
    """The metadata document, written as a blob when the index does not keep it."""
    frame_table: bytes | None = None


def _prepare(ctx: Context, data: Buffer, expected_study_uid: str | None) -> _Prepared:
    """Parse and check one part, and make its record."""
    settings = ctx.settings
    try:
        parsed, described = read_instance(
            data, settings.bulk_threshold, settings.max_sequence_depth
        )
    except (UnreadableInstance, MissingAttribute) as exc:
        return _Prepared(IngestResult("unreadable", str(exc)))
    result = IngestResult(
        "failed",
        sop_class_uid=parsed.sop_class_uid,
        sop_instance_uid=parsed.sop_instance_uid,
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
    )
    for keyword, tag, value in (
        ("StudyInstanceUID", "(0020,000D)", parsed.study_uid),
        ("SeriesInstanceUID", "(0020,000E)", parsed.series_uid),
    ):
        if not value:
            result.failure_reason, result.message = CANNOT_UNDERSTAND, f"{tag} {keyword} is missing"
            return _Prepared(result)
        if not is_valid_uid(value):
            result.failure_reason = CANNOT_UNDERSTAND
            result.message = f"{tag} {keyword} '{value}' is not a valid UID"
            return _Prepared(result)
    if expected_study_uid is not None and parsed.study_uid != expected_study_uid:
        result.failure_reason = PROCESSING_FAILURE
        result.message = (
            f"(0020,000D) StudyInstanceUID '{parsed.study_uid}' does not match the study in "
            f"the URL '{expected_study_uid}'"
        )
        return _Prepared(result)

    sha256 = hashlib.sha256(data).hexdigest()
    key = blob_key(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid, sha256)
    try:
        if described is None:  # read by pydicom
            described = metadata.describe_dataset(
                parsed, settings.bulk_threshold, settings.max_sequence_depth
            )
    except UnreadableInstance as exc:
        result.failure_reason, result.message = CANNOT_UNDERSTAND, str(exc)
        return _Prepared(result)
    except Exception as exc:  # one unreadable value must not crash the request
        result.failure_reason = CANNOT_UNDERSTAND
        result.message = f"cannot read the attributes: {exc}"
        return _Prepared(result)
    pixel, frame_table = _split_frame_table(parsed.pixel, key)
    document = described.document
    inline = ctx.index.keeps_metadata
    record = InstanceRecord(
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
        sop_uid=parsed.sop_instance_uid,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        blob_key=key,
        size=len(data),
        sha256=sha256,
        study_tags=described.levels.study,
        series_tags=described.levels.series,
        instance_tags=described.levels.instance,
        orthanc_ids=orthanc_ids(
            described.patient_id, parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid
        ),
        has_file_meta=parsed.has_file_meta,
        metadata_key=None if inline else metadata_key(key),
        metadata_size=len(document),
        pixel=pixel,
        bulk=described.bulk,
        metadata=document if inline else None,
    )
    if (too_large := oversized_record(record)) is not None:  # refused before any write
        result.failure_reason, result.message = CANNOT_UNDERSTAND, too_large
        return _Prepared(result)
    return _Prepared(result, record, data, document, frame_table)


def _write_blobs(ctx: Context, prepared: list[_Prepared]) -> None:
    """Record the write intents of the checked parts (`TagIndex.begin_blob_writes`: one index
    write for the request), then write each part's blobs in parallel: the original, its
    metadata document unless the index keeps it, a large frame table. A part whose blobs
    fail loses its record, so it is not committed."""
    if not prepared:
        return
    try:
        ctx.index.begin_blob_writes([item.record for item in prepared if item.record])
    except Exception as exc:  # no blob is written without its intent
        for item in prepared:
            _fail_on_backend(item.result, exc)
            item.record = None
        return
    _in_parallel(lambda item: _write_part(ctx, item), prepared)


def _write_part(ctx: Context, item: _Prepared) -> None:
    record = item.record
    assert record is not None
    try:
        ctx.blobs.put(record.blob_key, item.data, "application/dicom")
        if record.metadata_key:
            ctx.blobs.put(record.metadata_key, item.document, "application/gzip")
        if item.frame_table is not None:
            ctx.blobs.put(record.pixel["frames_key"], item.frame_table, "application/json")
    except Exception as exc:
        if _forget(ctx, record):
            _end_writes(ctx, [record.blob_key])
        _fail_on_backend(item.result, exc)
        item.record = None


def _settle(
    ctx: Context, result: IngestResult, record: InstanceRecord, outcome: StoreResult | Exception
) -> bool:
    """Record what the index commit did with `record`, and remove the blobs left unused;
    whether `record`'s blobs were unused and are removed (its write intent may end)."""
    forgotten = False
    if isinstance(outcome, Exception):
        forgotten = _forget(ctx, record)
        _fail_on_backend(result, outcome)
        return forgotten
    if outcome.outcome == "kept" and outcome.record.blob_key != record.blob_key:
        forgotten = _forget(ctx, record)
    if not _delete_quietly(ctx, outcome.replaced_blob_keys):
        try:  # the index no longer points to them: the pending delete sweep removes them
            ctx.index.add_pending_deletes(outcome.replaced_blob_keys)
        except Exception:
            log.warning(
                "could not record blobs %s to delete", outcome.replaced_blob_keys, exc_info=True
            )
    result.status, result.outcome = "stored", outcome.outcome
    return forgotten


def _fail_on_backend(result: IngestResult, exc: Exception) -> None:
    """The failure of a part whose blob or index write raised `exc`."""
    if isinstance(exc, Conflict):
        result.failure_reason, result.message = PROCESSING_FAILURE, str(exc)
    elif isinstance(exc, OutOfResources):
        result.failure_reason, result.message = OUT_OF_RESOURCES, str(exc)
    else:  # any backend failure: this part fails, the request goes on
        log.error("storing SOP Instance %s failed", result.sop_instance_uid, exc_info=exc)
        # The raw text stays in the log: it may name files, tables or hosts. 0xA700 (as a
        # refused write): all parts failing so answer 503, retry later.
        result.failure_reason = OUT_OF_RESOURCES
        result.message = "the storage backend failed; the server log has the details"


def _forget(ctx: Context, record: InstanceRecord) -> bool:
    """Remove the blobs of a record the index does not point to; whether they are all gone
    (else its write intent stays, and `remove_interrupted_writes` removes the rest)."""
    return _delete_quietly(ctx, record.blob_keys())


def _delete_quietly(ctx: Context, keys: list[str]) -> bool:
    """Remove the blobs at `keys`; whether they are all gone."""
    try:
        failed = ctx.blobs.delete_many(keys)
    except Exception:  # an orphan blob wastes space and loses nothing; the answer goes on
        log.warning("could not delete unreferenced blobs %s", keys, exc_info=True)
        return False
    for key, reason in failed.items():
        log.warning("could not delete unreferenced blob %s: %s", key, reason)
    return not failed


def _end_writes(ctx: Context, blob_keys: list[str]) -> None:
    """End the write intents of records whose blobs are removed (`TagIndex.store_instances`
    ends those of the records it commits)."""
    if not blob_keys:
        return
    try:
        ctx.index.end_blob_writes(blob_keys)
    except Exception:  # the sweep ends it later, finding nothing left to remove
        log.warning("could not end the write intents of %s", blob_keys, exc_info=True)


INTERRUPTED_WRITE_AGE = timedelta(minutes=20)
"""When a write intent's store has surely stopped: longer than any Lambda may run (15
minutes: the upload ingest's timeout is 5) and than a local request's parts take."""


def remove_interrupted_writes(
    index: TagIndex, blobs: BlobStore, now: datetime | None = None, chunk: int = 1000
) -> int:
    """Remove the blobs of stores stopped between their blob writes and their index commit (a
    killed process, a Lambda's timeout), or whose unused blobs could not be removed then;
    how many blob keys were removed. Run by the AWS sweep (app.py) and at local start-up.

    A write intent older than INTERRUPTED_WRITE_AGE (before `now`) belongs to a store that no
    longer runs, so only what it wrote can be left: its keys that the index does not point
    to (blob keys are never reused, so no other store can come to point there). They are
    removed, then the intent ends; an intent with a key that could not be removed stays for
    the next run. `chunk` intents at a time: a run cut short keeps what it ended."""
    before = utc_stamp((now or datetime.now(UTC)) - INTERRUPTED_WRITE_AGE)
    writes = index.stale_blob_writes(before)
    removed = 0
    for start in range(0, len(writes), chunk):
        batch = writes[start : start + chunk]
        orphans = {write.blob_key: _unreferenced(index, write) for write in batch}
        failed = blobs.delete_many([key for keys in orphans.values() for key in keys])
        for key, reason in failed.items():
            log.warning("could not delete blob %s of an interrupted store: %s", key, reason)
        ended = [name for name, keys in orphans.items() if failed.keys().isdisjoint(keys)]
        index.end_blob_writes(ended)
        removed += sum(len(orphans[name]) for name in ended)
    if removed:
        log.info("removed %d blobs of interrupted stores", removed)
    return removed


def _unreferenced(index: TagIndex, write: BlobWrite) -> list[str]:
    """The keys of `write` that the index does not point to."""
    try:
        record = index.get_instance(write.study_uid, write.series_uid, write.sop_uid)
    except NotFound:
        return list(write.keys)
    referenced = set(record.blob_keys())
    return [key for key in write.keys if key not in referenced]
