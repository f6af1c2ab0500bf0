"""The retrieve job step: WADO-RS from a remote server into the local store, a series a step.

Retrieve Transaction, PS3.18 §10.4 (2025b): `GET {server}/studies/{study}[/series/{series}
[/instances/{instance}]]` with `Accept: multipart/related; type="application/dicom";
transfer-syntax=*` when the server has `HasWadoRsUniversalTransferSyntax` (the default: the
bytes come as the remote stores them), without `transfer-syntax` otherwise. Every part goes
through the normal ingest (`chalicelib/ingest.py`), so a retried step stores nothing twice.

A study resource is first listed with QIDO-RS (`studies/{study}/series`) and then fetched a
series per step, which bounds a step's time by the largest series; a remote without that
search gets the whole study in one step. The `/wado` call (any WADO-RS `Uri`) is one step. The
answer is read as it arrives and each part stored once complete (`iter_multipart`), so memory
holds a part or two, not the series (a 2 GB CT series through a 1,769 MB Lambda).

Cursor: `{"resource": i, "series": [pending series of resource i] | null, "received": n,
"bytes": size}`. Content (Orthanc's keys, values as strings as Orthanc gives them):
ReceivedInstancesCount, NetworkUsageMB, and beyond Orthanc the Orthanc ids of the instances
stored (what the manual says the call answers), in the order stored.

The list is kept where a view reads no blob (`GET jobs/{id}` and `jobs?expand` over thousands
of jobs): up to INLINE_INSTANCES ids, each once, as `Instances` in the record; past them (a
DynamoDB item holds 400 KB, about 8,000 ids, and a Lambda answer 6 MB, about 130,000) in
chunks of CHUNK_INSTANCES (`jobs/{id}/list/{c}.json`), with `InstancesCount` and
`InstancesPath` (`jobs/{id}/instances?offset=&limit=`, `instances_page`) in the record in
place of `Instances`. A record written before this (a chunk per step, `chunks` in its cursor)
is read as it was, and its next step moves its list to this form.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from chalicelib.client.http import READ_SIZE, RemoteError
from chalicelib.client.session import RemoteClient
from chalicelib.context import Context
from chalicelib.dicom.jsonmodel import json_value
from chalicelib.dicom.multipart import MultipartError, iter_multipart, parse_media_type
from chalicelib.errors import NotFound
from chalicelib.ingest import store_instance
from chalicelib.storage import ports
from chalicelib.storage.ports import JobRecord

MB = 1024 * 1024


def retrieve_step(
    ctx: Context, client: RemoteClient, job: JobRecord
) -> tuple[bool, dict[str, Any]]:
    cursor: dict[str, Any] = {
        "resource": 0,
        "series": None,
        "received": 0,
        "bytes": 0,
    }
    cursor |= job.cursor
    if "Uri" in job.params:
        _fetch(ctx, client, job, job.params["Uri"], cursor)
        job.progress = 99
        return True, cursor
    resources = job.params["Resources"]
    resource = resources[cursor["resource"]]
    path = "studies/" + quote(resource["Study"], safe="")
    if "Series" in resource:
        path += "/series/" + quote(resource["Series"], safe="")
        if "Instance" in resource:
            path += "/instances/" + quote(resource["Instance"], safe="")
        _fetch(ctx, client, job, path, cursor)
        cursor["resource"] += 1
    else:
        if cursor["series"] is None:
            cursor["series"] = _series_of(client, job, path)
        if cursor["series"]:
            series = cursor["series"][0]
            _fetch(ctx, client, job, f"{path}/series/{quote(series, safe='')}", cursor)
            cursor["series"] = cursor["series"][1:]
        else:
            _fetch(ctx, client, job, path, cursor)
        if not cursor["series"]:
            cursor["resource"] += 1
            cursor["series"] = None
    job.progress = min(99, cursor["resource"] * 100 // len(resources))
    return cursor["resource"] >= len(resources), cursor


def _series_of(client: RemoteClient, job: JobRecord, study_path: str) -> list[str]:
    """The study's series UIDs by QIDO-RS, or [] when the remote cannot list them (an error
    that is not transient, or an answer that is not a DICOM JSON array: `42` made the job
    fail with "internal error: 'int' object is not iterable")."""
    headers = {**job.params.get("HttpHeaders", {}), "Accept": "application/dicom+json"}
    try:
        answer = client.get(study_path + "/series", headers=headers).json()
    except RemoteError as exc:
        if exc.transient:
            raise
        return []
    except ValueError:
        return []
    if not isinstance(answer, list):  # not a QIDO-RS answer: fetch the study whole
        return []
    attributes = [item.get("0020000E") for item in answer if isinstance(item, dict)]
    uids = [json_value(a) for a in attributes if isinstance(a, dict)]
    return sorted(uid for uid in uids if isinstance(uid, str))


def _fetch(
    ctx: Context, client: RemoteClient, job: JobRecord, uri: str, cursor: dict[str, Any]
) -> None:
    """GET one WADO-RS resource and store every part as it arrives (memory holds one part,
    not the answer); update the job's counters."""
    accept = 'multipart/related; type="application/dicom"'
    if client.server.has_universal_transfer_syntax:
        accept += "; transfer-syntax=*"
    headers = {**job.params.get("HttpHeaders", {}), "Accept": accept}
    with client.get(uri, job.params.get("Arguments") or None, headers, stream=True) as response:
        media = parse_media_type(response.headers.get("content-type", ""))
        where = f"WADO-RS {uri} on server {client.server.name!r}"
        if media.type != "multipart/related":
            raise RemoteError(
                f"{where} answered {media.type or 'no Content-Type'}, not multipart/related"
            )
        received = 0

        def counted() -> Iterator[bytes]:
            nonlocal received
            for chunk in client.chunks(response, READ_SIZE):
                received += len(chunk)
                yield chunk

        stored: list[str] = []
        parts = iter_multipart(counted(), media.params.get("boundary", ""))
        try:
            for number, part in enumerate(parts, 1):
                result = store_instance(ctx, part.view)
                if result.status != "stored":
                    raise RemoteError(
                        f"{where}: part {number} could not be stored: {result.message}"
                    )
                record = ctx.index.get_instance(
                    result.study_uid, result.series_uid, result.sop_instance_uid
                )
                stored.append(record.orthanc_ids["instance"])
        except MultipartError as exc:
            raise RemoteError(f"{where}: unreadable multipart answer: {exc}") from None
    record_instances(ctx, job, cursor, stored)
    cursor["received"] += len(stored)
    cursor["bytes"] += received
    job.content |= {
        "ReceivedInstancesCount": str(cursor["received"]),
        "NetworkUsageMB": str(cursor["bytes"] // MB),
    }


INLINE_INSTANCES = 2000
"""Ids a job keeps in its record (`Instances`, 90 KB; a DynamoDB item holds 400 KB, the request
up to `servers.MAX_JOB_REQUEST_BYTES` of it); past them the list is in chunks."""
CHUNK_INSTANCES = 1000
"""Ids a chunk holds (45 KB): chunk c holds the list's ids c * 1000 to c * 1000 + 999."""


def _chunk_key(job_id: str, chunk: int) -> str:
    return f"jobs/{job_id}/list/{chunk}.json"


def record_instances(
    ctx: Context, job: JobRecord, cursor: dict[str, Any], instances: list[str]
) -> None:
    """Add the Orthanc ids a step stored to the job's list: to `Instances` in its record while
    the list has at most INLINE_INSTANCES ids (each once), else to its chunks after the
    `InstancesCount` ids listed, each once in the step (not checked against the whole list,
    which would read every chunk); a step run again after its result was dropped writes the
    same ids at the same place, and readers take only the saved count."""
    if chunks := cursor.pop("chunks", 0):  # a record from before: one chunk per step
        job.content["Instances"] = _listed_by_step(ctx, job, chunks)
    if not instances and not chunks:  # a moved list past INLINE_INSTANCES goes to chunks
        return
    instances = list(dict.fromkeys(instances))
    if "InstancesCount" not in job.content:
        listed = list(dict.fromkeys([*job.content.get("Instances", []), *instances]))
        if len(listed) <= INLINE_INSTANCES:
            job.content["Instances"] = listed
            return
        del job.content["Instances"]
        start, instances = 0, listed
    else:
        start = int(job.content["InstancesCount"])
    chunk, offset = divmod(start, CHUNK_INSTANCES)
    if offset:
        instances = json.loads(ctx.blobs.get(_chunk_key(job.id, chunk)))[:offset] + instances
    for first in range(0, len(instances), CHUNK_INSTANCES):
        ctx.blobs.put(
            _chunk_key(job.id, chunk + first // CHUNK_INSTANCES),
            json.dumps(instances[first : first + CHUNK_INSTANCES]).encode(),
            "application/json",
        )
    job.content |= {
        "InstancesCount": str(start + len(instances) - offset),
        "InstancesPath": f"jobs/{job.id}/instances",
    }


def _listed_by_step(ctx: Context, job: JobRecord, chunks: int) -> list[str]:
    """The list of a record written before (its `Instances`, then a chunk per step at
    `jobs/{id}/instances/{c}.json`), each id once."""
    instances: list[str] = list(job.content.get("Instances", []))
    for chunk in range(chunks):
        instances += _read_chunk(ctx, job, f"jobs/{job.id}/instances/{chunk}.json")
    return list(dict.fromkeys(instances))


def _read_chunk(ctx: Context, job: JobRecord, key: str) -> list[str]:
    """The ids of a chunk of the job's list; 404 when it is gone (the job deleted, by DELETE
    or retention, since its record was read)."""
    try:
        return json.loads(ctx.blobs.get(key))
    except ports.NotFound:
        raise NotFound(f"job {job.id}: no {key}, deleted while its list was read") from None


def retrieve_content(ctx: Context, job: JobRecord) -> dict[str, Any]:
    """The job's Content: its record's, with `Instances` when the record holds them (no chunk
    is read), else `InstancesCount` and `InstancesPath` (the paged list, `instances_page`);
    a record from before reads its chunks (404 when the job is deleted meanwhile)."""
    if "InstancesCount" in job.content:
        return job.content
    if chunks := job.cursor.get("chunks", 0):
        return job.content | {"Instances": _listed_by_step(ctx, job, chunks)}
    return job.content | {"Instances": job.content.get("Instances", [])}


def instances_page(ctx: Context, job: JobRecord, offset: int, limit: int) -> list[str]:
    """The ids `offset` to `offset + limit - 1` of the job's list; reads the chunks they are
    in and no other; 404 when the job is deleted meanwhile."""
    if "InstancesCount" not in job.content:
        return retrieve_content(ctx, job)["Instances"][offset : offset + limit]
    end = min(int(job.content["InstancesCount"]), offset + limit)
    first = offset // CHUNK_INSTANCES
    instances: list[str] = []
    for chunk in range(first, -(-end // CHUNK_INSTANCES)):
        instances += _read_chunk(ctx, job, _chunk_key(job.id, chunk))
    return instances[offset - first * CHUNK_INSTANCES : end - first * CHUNK_INSTANCES]
