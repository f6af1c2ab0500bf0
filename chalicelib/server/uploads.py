"""Uploads: studies too large for one request, stored file by file (an extension).

API Gateway takes at most 10 MB per request and Lambda 6 MB per event, so a 600 MB CT cannot
be sent through STOW-RS (PS3.18 §10.5, Store Transaction, 2025b) on AWS. Instead:

1. `POST {root}/uploads` with `{"Files": n}` (and optionally `"StudyInstanceUID"`, which
   restricts the upload as `POST /studies/{study}` does) answers `201` with an upload `ID`, its
   `Path`, and one URL per file, to `PUT` a DICOM Part-10 file to with the given headers.
2. On AWS the URLs are presigned S3 PUTs to `incoming/{ID}/{n}`; S3 ObjectCreated runs the
   ingest Lambda (`ingest_upload` in app.py, `ingest_s3_event` here). Where the store cannot
   presign (the local backend) the URLs are `PUT {root}/uploads/{ID}/files/{n}` on this server.
   Either way each file goes through `chalicelib.ingest.store_instance`, as STOW-RS parts do.
3. `GET {root}/uploads/{ID}` answers `202` with `{"Status": "Pending", ...}` and `Retry-After`
   while files are missing, then the store response of STOW-RS: status by PS3.18
   Table 10.5.3-1, the same FailureReasons and `Warning` headers, in JSON or XML.

The upload's state lives in the BlobStore under `uploads/{ID}/`: a manifest and one result
per file.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote_plus

from chalicelib.context import Context
from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.query import UNSIGNED_INT
from chalicelib.errors import BadRequest, NotFound
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response
from chalicelib.server.resources import parallel_map
from chalicelib.server.stow import negotiate_store_response, store_response
from chalicelib.storage import ports

service = Service("uploads")

INCOMING_PREFIX = "incoming/"
UPLOADS_PREFIX = "uploads/"
MAX_FILES = 10_000
URL_EXPIRES_IN = 3600
RETRY_AFTER = "5"
DICOM = "application/dicom"
_ID = re.compile(r"[0-9a-f]{32}")
_INCOMING_KEY = re.compile(rf"{INCOMING_PREFIX}([0-9a-f]{{32}})/([0-9]+)")


def _manifest_key(upload_id: str) -> str:
    return f"{UPLOADS_PREFIX}{upload_id}/manifest.json"


def _result_key(upload_id: str, number: int) -> str:
    return f"{UPLOADS_PREFIX}{upload_id}/results/{number}.json"


def _parse_request(body: bytes) -> tuple[int, str | None]:
    try:
        document = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadRequest(f"the uploads request body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest('the uploads request body must be a JSON object like {"Files": 3}')
    files = document.get("Files")
    if not isinstance(files, int) or isinstance(files, bool) or not 1 <= files <= MAX_FILES:
        raise BadRequest(f"uploads: Files={files!r} must be a whole number from 1 to {MAX_FILES}")
    study = document.get("StudyInstanceUID")
    if study is not None and (not isinstance(study, str) or not is_valid_uid(study)):
        raise BadRequest(f"uploads: StudyInstanceUID={study!r} is not a valid UID")
    return files, study


def _manifest(ctx: Context, upload_id: str) -> dict[str, Any]:
    if not _ID.fullmatch(upload_id):
        raise NotFound(f"no upload {upload_id[:80]!r}: upload IDs are 32 hexadecimal digits")
    try:
        return json.loads(ctx.blobs.get(_manifest_key(upload_id)))
    except ports.NotFound:
        raise NotFound(f"no upload {upload_id} (or it has expired)") from None


def _file_url(request: WebRequest, upload_id: str, number: int) -> str:
    key = f"{INCOMING_PREFIX}{upload_id}/{number}"
    presigned = request.context.blobs.presigned_upload_url(key, DICOM, URL_EXPIRES_IN)
    return presigned or f"{request.dicomweb_root}/uploads/{upload_id}/files/{number}"


@service.route("/uploads", "POST", scope="write")
def create_upload(request: WebRequest) -> WebResponse:
    files, study = _parse_request(request.body)
    upload_id = uuid.uuid4().hex
    manifest = {"Files": files, "StudyInstanceUID": study}
    request.context.blobs.put(
        _manifest_key(upload_id), json.dumps(manifest).encode(), "application/json"
    )
    path = f"{request.dicomweb_root}/uploads/{upload_id}"
    document = {
        "ID": upload_id,
        "Path": path,
        "ExpiresIn": URL_EXPIRES_IN,
        "Files": [
            {
                "Url": _file_url(request, upload_id, n),
                "Method": "PUT",
                "Headers": {"Content-Type": DICOM},
            }
            for n in range(1, files + 1)
        ],
    }
    return json_response(document, 201, headers={"Location": path})


def ingest_file(ctx: Context, upload_id: str, number: int, data: bytes) -> IngestResult:
    """Store file `number` of an upload as a STOW-RS part, and record what happened."""
    manifest = _manifest(ctx, upload_id)
    if not 1 <= number <= manifest["Files"]:
        raise NotFound(f"upload {upload_id} has files 1 to {manifest['Files']}, not {number}")
    result = store_instance(ctx, data, manifest["StudyInstanceUID"])
    ctx.blobs.put(
        _result_key(upload_id, number), json.dumps(asdict(result)).encode(), "application/json"
    )
    return result


@service.route("/uploads/{upload}/files/{number}", "PUT", scope="write")
def upload_file(request: WebRequest, upload: str, number: str) -> WebResponse:
    """The local stand-in for a presigned S3 PUT: store the file at once."""
    if not UNSIGNED_INT.fullmatch(number):
        raise NotFound(f"upload file number {number[:20]!r} is not a number")
    if not request.body:
        raise BadRequest("the upload body is empty: PUT one DICOM Part-10 file")
    ingest_file(request.context, upload, int(number), request.body)
    return WebResponse(204)


@service.route("/uploads/{upload}", "GET", scope="write")
def retrieve_upload(request: WebRequest, upload: str) -> WebResponse:
    ctx: Context = request.context
    manifest = _manifest(ctx, upload)
    chosen = negotiate_store_response(request)

    def result(number: int) -> IngestResult | None:
        try:
            return IngestResult(**json.loads(ctx.blobs.get(_result_key(upload, number))))
        except ports.NotFound:
            return None

    results = parallel_map(result, range(1, manifest["Files"] + 1))
    done = [r for r in results if r is not None]
    if len(done) < len(results):
        status = {"ID": upload, "Status": "Pending", "Files": len(results), "Stored": len(done)}
        return json_response(status, 202, headers={"Retry-After": RETRY_AFTER})
    return store_response(request, chosen, done, manifest["StudyInstanceUID"])


def ingest_s3_event(ctx: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The ingest Lambda: each S3 ObjectCreated record under `incoming/` is one uploaded file,
    stored, its result recorded, then the incoming object deleted."""
    outcomes = []
    for record in event.get("Records", []):
        key = unquote_plus(record["s3"]["object"]["key"])
        match = _INCOMING_KEY.fullmatch(key)
        if match is None:
            outcomes.append({"Key": key, "Status": "ignored: not an upload file"})
            continue
        upload_id, number = match.group(1), int(match.group(2))
        try:
            result = ingest_file(ctx, upload_id, number, ctx.blobs.get(key))
        except (NotFound, ports.NotFound) as exc:
            outcomes.append({"Key": key, "Status": f"ignored: {exc}"})
            continue
        ctx.blobs.delete(key)
        outcomes.append({"Key": key, "Status": result.status})
    return outcomes


__all__ = ["service"]
