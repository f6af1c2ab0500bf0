"""STOW-RS: Store Instances, PS3.18 §10.5 (Store Transaction, 2025b).

`POST {root}/studies` and `POST {root}/studies/{study}` with a
`multipart/related; type="application/dicom"` body. Each part is stored on its own (one
failure does not fail the others) and the answer is the Store Instances Response Module
(PS3.18 §10.5.3, Table 10.5.3-1; PS3.4 Annex I), in JSON or XML.
"""

from __future__ import annotations

from chalicelib import ingest
from chalicelib.context import Context
from chalicelib.dicom.jsonmodel import element_json, json_to_xml
from chalicelib.dicom.multipart import MultipartError, parse_media_type, split_multipart
from chalicelib.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from chalicelib.ingest import OUT_OF_RESOURCES, IngestResult
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response, warning_header
from chalicelib.server.negotiate import choose, parse_accept
from chalicelib.server.resources import instance_url, study_url

service = Service("stow")

_DICOM_JSON = "application/dicom+json"
_DICOM_XML = "application/dicom+xml"


def _read_parts(request: WebRequest, settings_limit: int) -> list[memoryview]:
    """The application/dicom parts of the body, as views of it (not copied out)."""
    content_type = request.header("content-type")
    media = parse_media_type(content_type) if content_type else None
    if media is None or media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'STOW-RS takes Content-Type multipart/related; type="application/dicom", '
            f"not {content_type or 'none'!r}"
        )
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"multipart/related type={part_type!r} is not supported: send each instance as an "
            f"application/dicom part"
        )
    if settings_limit and len(request.body) > settings_limit:
        raise PayloadTooLarge(
            f"the STOW-RS body has {len(request.body)} bytes, more than the {settings_limit} "
            f"this server accepts in one request: send the instances in several requests"
        )
    if not request.body:
        raise BadRequest("the STOW-RS body is empty: it must hold one application/dicom part")
    try:
        parts = split_multipart(request.body, media.params.get("boundary", ""))
    except MultipartError as exc:
        raise BadRequest(f"multipart/related body: {exc}") from None
    if not parts:
        raise BadRequest("the multipart/related body has no part")
    limit = request.context.settings.max_stow_parts
    if len(parts) > limit:
        raise PayloadTooLarge(
            f"the STOW-RS body has {len(parts)} parts, more than the {limit} this server "
            "accepts in one request (DicomWeb.MaxStowParts): send them in several requests"
        )
    bodies = []
    for number, part in enumerate(parts, 1):
        part_media = part.content_type
        if part_media is not None and part_media.type != "application/dicom":
            raise UnsupportedMediaType(
                f"part {number} has Content-Type {part_media.type!r}; every part must be "
                f"application/dicom"
            )
        bodies.append(part.view)
    return bodies


def _status(results: list[IngestResult]) -> int:
    """The status code of PS3.18 Table 10.5.3-1 (2025b)."""
    stored = [r for r in results if r.status == "stored"]
    if len(stored) == len(results):
        return 200
    if stored:
        return 202
    failures = [r for r in results if r.status == "failed"]
    if any(r.conflict for r in failures):
        return 409
    if failures and all(r.failure_reason == OUT_OF_RESOURCES for r in failures):
        return 503
    return 400


def _response_dataset(
    request: WebRequest, results: list[IngestResult], study_uid: str | None
) -> dict:
    """The Store Instances Response Module, PS3.18 Table 10.5.3-2 (2025b)."""
    referenced, failed = [], []
    for result in results:
        if result.status == "stored":
            item = {
                **element_json("00081150", "UI", [result.sop_class_uid]),
                **element_json("00081155", "UI", [result.sop_instance_uid]),
                **element_json(
                    "00081190",
                    "UR",
                    [
                        instance_url(
                            request, result.study_uid, result.series_uid, result.sop_instance_uid
                        )
                    ],
                ),
            }
            referenced.append(item)
        elif result.status == "failed":
            failed.append(
                {
                    **element_json("00081150", "UI", [result.sop_class_uid]),
                    **element_json("00081155", "UI", [result.sop_instance_uid]),
                    **element_json("00081197", "US", [result.failure_reason]),
                }
            )
    dataset: dict = {}
    studies = {r.study_uid for r in results if r.status == "stored"}
    retrieve_study = study_uid or (studies.pop() if len(studies) == 1 else None)
    if retrieve_study:
        dataset.update(element_json("00081190", "UR", [study_url(request, retrieve_study)]))
    if failed:
        dataset.update(element_json("00081198", "SQ", failed))
    if referenced:
        dataset.update(element_json("00081199", "SQ", referenced))
    return dataset


def _warning_texts(results: list[IngestResult]) -> list[str]:
    """One text per refused part, so that every reason is readable (RFC 9111 §5.5)."""
    return [
        f"part {number}: {result.message}"
        for number, result in enumerate(results, 1)
        if result.status != "stored"
    ]


def negotiate_store_response(request: WebRequest) -> str:
    """The media type of the store response (406 before anything is stored)."""
    accept = parse_accept(request.accept)
    chosen, _ = choose(
        accept,
        [_DICOM_JSON, "application/json", _DICOM_XML, "multipart/related"],
        "the STOW-RS response",
    )
    return chosen


@service.route("/studies", "POST", scope="write")
@service.route("/studies/{study}", "POST", scope="write")
def store_instances(request: WebRequest, study: str | None = None) -> WebResponse:
    ctx: Context = request.context
    chosen = negotiate_store_response(request)
    bodies = _read_parts(request, ctx.settings.max_stow_body)
    results = ingest.store_instances(ctx, bodies, study)
    return store_response(request, chosen, results, study)


def store_response(
    request: WebRequest, chosen: str, results: list[IngestResult], study: str | None
) -> WebResponse:
    """The store response of `results` (one per part, in order), PS3.18 §10.5.3 (2025b):
    status by Table 10.5.3-1, a Warning per part not stored, as `chosen` JSON or XML."""
    status = _status(results)
    dataset = _response_dataset(request, results, study)
    headers = warning_header(request.header("host", "-"), _warning_texts(results))
    if chosen in (_DICOM_XML, "multipart/related"):
        (document,) = json_to_xml([dataset])
        return WebResponse(status, document, headers, _DICOM_XML)
    return json_response(dataset, status, _DICOM_JSON, headers)


__all__ = ["service"]
