"""Resource lookups and links shared by the services.

Path UIDs are checked on entry: a malformed UID names no stored resource, so it is answered
404 like an unknown one (PS3.18 §8.2, 2025b), never 5xx.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.errors import NotFound
from chalicelib.server.http import WebRequest
from chalicelib.storage import ports


def study_url(request: WebRequest, study: str) -> str:
    return f"{request.dicomweb_root}/studies/{study}"


def series_url(request: WebRequest, study: str, series: str) -> str:
    return f"{study_url(request, study)}/series/{series}"


def instance_url(request: WebRequest, study: str, series: str, instance: str) -> str:
    return f"{series_url(request, study, series)}/instances/{instance}"


def check_path_uids(study: str, series: str | None = None, instance: str | None = None) -> None:
    """NotFound for a malformed UID in the path: it names nothing stored."""
    for keyword, uid in (
        ("StudyInstanceUID", study),
        ("SeriesInstanceUID", series),
        ("SOPInstanceUID", instance),
    ):
        if uid is not None and not is_valid_uid(uid):
            raise NotFound(f"{keyword} '{uid[:80]}' is not a valid UID, so no such resource exists")


def not_found(study: str, series: str | None = None, instance: str | None = None) -> NotFound:
    what = f"series {series} in study {study}" if series else f"study {study}"
    if instance is not None:
        what = f"instance {instance} in series {series} of study {study}"
    return NotFound(f"no {what} is stored here")


def find_instances(
    request: WebRequest, study: str, series: str | None = None, instance: str | None = None
) -> list[ports.InstanceRecord]:
    """The instances of a study, series or single instance; NotFound when there are none."""
    index = request.context.index
    check_path_uids(study, series, instance)
    try:
        if instance is not None:
            return [index.get_instance(study, series, instance)]
        records = index.list_instances(study, series)
    except ports.NotFound:
        records = []
    if not records:
        raise not_found(study, series, instance)
    return records


def find_instance_files(
    request: WebRequest, study: str, series: str | None = None, instance: str | None = None
) -> list[ports.InstanceFile]:
    """The stored files of a study, series or single instance (`TagIndex.list_instance_files`:
    no tags decoded); NotFound when there are none."""
    check_path_uids(study, series, instance)
    files = request.context.index.list_instance_files(study, series, instance)
    if not files:
        raise not_found(study, series, instance)
    return files


Item = TypeVar("Item")
Result = TypeVar("Result")


def parallel_map(
    function: Callable[[Item], Result], items: Iterable[Item], threads: int = 8
) -> list[Result]:
    """`function` over `items` in order, on a thread pool when there is more than one: the
    services' blob reads and deletes wait on I/O (S3 round trips), not on the CPU."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(function, items))


def metadata_documents(
    request: WebRequest, records: Sequence[ports.InstanceRecord], threads: int = 8
) -> list[bytes | None]:
    """The precomputed metadata documents of `records` (plain DICOM JSON, BulkDataURIs under
    the placeholder of `dicom.metadata`), in order: those the index keeps in one read, those
    that are blobs (`metadata_key`: DynamoDB's, SQLite's stored before version 3) read in
    parallel. None for a record that has none, or whose document a concurrent DELETE removed
    since the record was listed (issue 11: 500s in a delete race)."""
    context = request.context
    kept = [record.sop_uid for record in records if not record.metadata_key]
    inline = context.index.metadata_documents(kept) if kept else {}

    def read(record: ports.InstanceRecord) -> bytes | None:
        if not record.metadata_key:
            found = inline.get(record.sop_uid)
            return None if found is None else gzip.decompress(found)
        try:
            return gzip.decompress(context.blobs.get(record.metadata_key))
        except ports.NotFound:
            return None

    if len(kept) == len(records):  # no blob to wait for
        return [read(record) for record in records]
    return parallel_map(read, records, threads)
