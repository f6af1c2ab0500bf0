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
"bytes": size, "chunks": c}`. Content (Orthanc's keys, values as strings as Orthanc gives
them): ReceivedInstancesCount, NetworkUsageMB, and beyond Orthanc `Instances`, the Orthanc ids
of the instances stored (what the manual says the call answers).

`Instances` is not kept in the job record, which would outgrow a DynamoDB item (400 KB, about
8,000 ids): each step writes the ids it stored to the blob store as chunk c
(`jobs/{id}/instances/{c}.json`) and counts it in the cursor; `stored_instances` reads the
chunks the saved cursor counts. A step whose result is dropped writes its chunk again when it
runs again. A record written before kept its ids in `content["Instances"]`: they come first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from chalicelib.client.http import RemoteError
from chalicelib.client.session import RemoteClient
from chalicelib.context import Context
from chalicelib.dicom.jsonmodel import json_value
from chalicelib.dicom.multipart import MultipartError, iter_multipart, parse_media_type
from chalicelib.ingest import store_instance
from chalicelib.storage.ports import JobRecord

MB = 1024 * 1024
READ_SIZE = 256 * 1024
"""Bytes read from a remote's answer at a time."""


def retrieve_step(
    ctx: Context, client: RemoteClient, job: JobRecord
) -> tuple[bool, dict[str, Any]]:
    cursor: dict[str, Any] = {
        "resource": 0,
        "series": None,
        "received": 0,
        "bytes": 0,
        "chunks": 0,
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
                result = store_instance(ctx, part.body)
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


def _chunk_key(job_id: str, chunk: int) -> str:
    return f"jobs/{job_id}/instances/{chunk}.json"


def record_instances(
    ctx: Context, job: JobRecord, cursor: dict[str, Any], instances: list[str]
) -> None:
    """Keep the Orthanc ids a step stored as the job's next chunk (none: no chunk)."""
    if not instances:
        return
    chunk = cursor.get("chunks", 0)
    ctx.blobs.put(_chunk_key(job.id, chunk), json.dumps(instances).encode(), "application/json")
    cursor["chunks"] = chunk + 1


def stored_instances(ctx: Context, job: JobRecord) -> list[str]:
    """The Orthanc ids of the instances the job stored, each once, in the order stored."""
    instances: list[str] = list(job.content.get("Instances", []))
    for chunk in range(job.cursor.get("chunks", 0)):
        instances += json.loads(ctx.blobs.get(_chunk_key(job.id, chunk)))
    return list(dict.fromkeys(instances))
