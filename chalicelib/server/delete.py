"""DELETE of a study, series or instance: an extension, not a PS3.18 transaction.

PS3.18 (2025b) defines no delete transaction for studies, series or instances; this one
follows the Orthanc plugin and dicomweb-client's `delete_*` (which note the same). It is on
when `DicomWeb.EnableDelete` is true (the default locally; the AWS stage's configuration turns
it off); when off, DELETE is answered 405. It needs the `admin` scope.

Order: the cached series and study metadata and the cached thumbnails are recorded as
pending deletes; the index delete is the commit point (the resource disappears from QIDO, WADO
and the counts at once, the versions are bumped, and the original bytes and precomputed
metadata are recorded as pending deletes); then everything pending goes. Blob keys are
never reused (`ingest.blob_key` adds a nonce), so a delete racing a re-store of the same
instance cannot remove the new blob. Answers 204, or 404 when nothing is stored under the
path; `DELETE /studies` stays 405.
"""

from __future__ import annotations

import logging

from chalicelib.server.cache import METADATA_PREFIX
from chalicelib.server.http import Service, WebRequest, WebResponse
from chalicelib.server.rendered import thumbnail_folder, thumbnail_keys
from chalicelib.server.resources import check_path_uids, not_found
from chalicelib.storage import ports

log = logging.getLogger(__name__)

service = Service("delete")

PENDING_CHUNK = 1000
"""Pending blob deletes removed, then confirmed, at a time (`finish_pending_deletes`)."""


def derived_entries(
    study: str, series: str | None = None, instance: str | None = None
) -> list[str]:
    """The BlobStore keys and folders (ending with '/') of the documents derived from a
    resource: the study's cached metadata, the thumbnails of the resource, of what it holds
    and of its parents. Each is rebuilt on demand, so removing one loses nothing."""
    entries = [f"{METADATA_PREFIX}{study}/", *thumbnail_keys(study)]
    if series is None:
        return [*entries, thumbnail_folder(study)]
    entries += thumbnail_keys(study, series)
    if instance is None:
        return [*entries, thumbnail_folder(study, series)]
    return entries + thumbnail_keys(study, series, instance)


def delete_resource(
    request: WebRequest, study: str, series: str | None = None, instance: str | None = None
) -> ports.DeleteResult:
    """Delete from the index (the commit point, which records the instances' blobs as pending
    deletes), then the blobs nothing points to any more. The derived documents are recorded
    as pending deletes before, so that a DELETE stopped anywhere leaves none of them behind
    for good. Blob keys are never reused (ingest adds a nonce), so a concurrent re-store of
    the same instance writes other keys and nothing it needs is removed here."""
    index, blobs = request.context.index, request.context.blobs
    check_path_uids(study, series, instance)
    index.add_pending_deletes(derived_entries(study, series, instance))
    try:
        if instance is not None and series is not None:
            result = index.delete_instance(study, series, instance)
        elif series is not None:
            result = index.delete_series(study, series)
        else:
            result = index.delete_study(study)
    except ports.NotFound:
        finish_pending_deletes(index, blobs)
        raise not_found(study, series, instance) from None
    finish_pending_deletes(index, blobs)
    return result


def finish_pending_deletes(
    index: ports.TagIndex, blobs: ports.BlobStore, chunk: int = PENDING_CHUNK
) -> int:
    """Remove the blobs of deletes interrupted between their index commit and their blob
    removal (a killed server, a stopped Lambda), recorded with the commit; how many. Run at
    local start-up, after every DELETE, and on AWS by the scheduled `sweep` Lambda (app.py).
    Blob keys are never reused (ingest adds a nonce), so none of them is in use again.

    The removals are confirmed `chunk` keys at a time: a run cut short (a Lambda's timeout
    in the middle of a large study's blobs) keeps what it confirmed, and the next goes on."""
    keys = index.pending_blob_deletes()
    removed = 0
    for start in range(0, len(keys), chunk):
        if done := _remove_blobs(blobs, keys[start : start + chunk]):
            index.blobs_deleted(done)
            removed += len(done)
    if removed:
        log.info("removed %d blobs of earlier deletes", removed)
    return removed


def _remove_blobs(blobs: ports.BlobStore, entries: list[str]) -> list[str]:
    """Delete the keys together (`BlobStore.delete_many`: on S3 one call per 1,000) and the
    folders (entries ending with '/') each; the entries removed."""
    keys = [entry for entry in entries if not entry.endswith("/")]
    failed = blobs.delete_many(keys)
    for folder in set(entries) - set(keys):
        try:
            blobs.delete_prefix(folder)
        except ports.StorageError as e:
            failed[folder] = str(e)
    for entry, reason in failed.items():
        # The index no longer points here: an orphan blob wastes space, loses nothing; its
        # delete stays pending, finished by a later DELETE, start or sweep.
        log.warning("could not delete blob %s after its index delete: %s", entry, reason)
    return [entry for entry in entries if entry not in failed]


@service.route("/studies/{study}", "DELETE", scope="admin")
def delete_study(request: WebRequest, study: str) -> WebResponse:
    delete_resource(request, study)
    return WebResponse(204)


@service.route("/studies/{study}/series/{series}", "DELETE", scope="admin")
def delete_series(request: WebRequest, study: str, series: str) -> WebResponse:
    delete_resource(request, study, series)
    return WebResponse(204)


@service.route("/studies/{study}/series/{series}/instances/{instance}", "DELETE", scope="admin")
def delete_instance(request: WebRequest, study: str, series: str, instance: str) -> WebResponse:
    delete_resource(request, study, series, instance)
    return WebResponse(204)
