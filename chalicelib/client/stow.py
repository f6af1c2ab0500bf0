"""The STOW job step: send stored instances to a remote server with STOW-RS, a batch a step.

Store Transaction, PS3.18 §10.5 (2025b): one `multipart/related; type="application/dicom"`
request per batch, bounded by `StowMaxInstances` and `StowMaxSize` (a single instance larger
than the size bound goes alone), sent chunked when the server has `ChunkedTransfers`. Every
answer is checked as Orthanc's `CheckStowAnswer` does, and stricter: each instance sent must
be in ReferencedSOPSequence (0008,1199), and FailedSOPSequence (0008,1198) and
OtherFailuresSequence (0008,119A) must be empty; else the job fails naming the instances and
the remote's FailureReason (0008,1197) values.

Cursor: `{"resource": i, "offset": n, "sent": count, "bytes": size}` over the resolved
resources (`client/resources.py`); re-sending a batch after a crash stores nothing new on the
remote (same SOP Instance UIDs, same bytes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from chalicelib.client.http import RemoteError
from chalicelib.client.session import RemoteClient
from chalicelib.config import Settings
from chalicelib.context import Context
from chalicelib.dicom.jsonmodel import json_value, json_values
from chalicelib.dicom.multipart import multipart_content_type, new_boundary
from chalicelib.storage.ports import InstanceFile, JobRecord

MB = 1024 * 1024


def stow_step(ctx: Context, client: RemoteClient, job: JobRecord) -> tuple[bool, dict[str, Any]]:
    cursor = {"resource": 0, "offset": 0, "sent": 0, "bytes": 0, **job.cursor}
    resources = job.params["Resources"]
    while cursor["resource"] < len(resources):
        files = ctx.index.list_instance_files(*resources[cursor["resource"]])
        batch = next_batch(files[cursor["offset"] :], ctx.settings)
        if batch:
            cursor["bytes"] += _send(ctx, client, job, batch)
            cursor["sent"] += len(batch)
            cursor["offset"] += len(batch)
        if cursor["offset"] >= len(files):
            cursor["resource"] += 1
            cursor["offset"] = 0
        if batch:
            break
    total = max(job.params.get("InstancesTotal", 0), cursor["sent"], 1)
    job.progress = min(99, cursor["sent"] * 100 // total)
    job.content |= {
        "InstancesCount": str(cursor["sent"]),
        "NetworkSizeMB": str(cursor["bytes"] // MB),
    }
    return cursor["resource"] >= len(resources), cursor


def next_batch(files: list[InstanceFile], settings: Settings) -> list[InstanceFile]:
    """The first files, at most StowMaxInstances and StowMaxSize MB (at least one)."""
    limit = settings.stow_max_size * MB
    batch: list[InstanceFile] = []
    size = 0
    for file in files[: max(1, settings.stow_max_instances)]:
        if batch and limit and size + file.size > limit:
            break
        batch.append(file)
        size += file.size
    return batch


def _send(ctx: Context, client: RemoteClient, job: JobRecord, batch: list[InstanceFile]) -> int:
    """POST one batch and check the answer; return the body size."""
    boundary = new_boundary()
    delimiter = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    blobs = [ctx.blobs.get(file.blob_key) for file in batch]
    size = sum(len(delimiter) + len(b) + 2 for b in blobs) + len(boundary) + 6

    def chunks() -> Iterator[bytes]:
        for blob in blobs:
            yield delimiter
            yield blob
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    headers = {
        **job.params.get("HttpHeaders", {}),
        "Content-Type": multipart_content_type("application/dicom", boundary),
        "Accept": "application/dicom+json",
    }
    body: Any = chunks() if client.server.chunked_transfers else b"".join(chunks())
    response = client.request(
        "POST", client.server.url + "studies", data=body, headers=headers, check_status=False
    )
    check_store_answer(client.server.name, batch, response.status_code, response.content)
    return size


def check_store_answer(server: str, batch: list[InstanceFile], status: int, body: bytes) -> None:
    """Raise RemoteError unless the Store Instances Response (PS3.18 §10.5.3, 2025b) names
    every instance of `batch` as stored and none as failed."""
    try:
        answer = json.loads(body) if body.strip() else {}
    except ValueError:
        answer = None
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if not isinstance(answer, dict):
        raise RemoteError(
            f"STOW-RS to server {server!r} answered {status} with a body that is not DICOM "
            f"JSON: {body[:200]!r}",
            status=status,
        )
    referenced = {
        json_value(item.get("00081155", {}))
        for item in json_values(answer.get("00081199", {}))
        if isinstance(item, dict)
    }
    problems = []
    for keyword, tag in (("FailedSOPSequence", "00081198"), ("OtherFailuresSequence", "0008119A")):
        for item in json_values(answer.get(tag, {})):
            uid = json_value(item.get("00081155", {})) or "?"
            reason = json_value(item.get("00081197", {}))
            reason_text = f" FailureReason 0x{reason:04X}" if isinstance(reason, int) else ""
            problems.append(f"{uid} in {keyword} ({tag[:4]},{tag[4:]}){reason_text}")
    missing = [r.sop_uid for r in batch if r.sop_uid not in referenced]
    if missing:
        problems.append(
            f"{len(missing)} instance(s) not in ReferencedSOPSequence (0008,1199): "
            + ", ".join(missing[:10])
        )
    if problems or status >= 400:
        raise RemoteError(
            f"STOW-RS to server {server!r} answered {status}: " + "; ".join(problems or ["error"]),
            status=status,
            transient=status >= 500 or status == 429,
        )
