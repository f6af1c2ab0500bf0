"""WADO-RS Retrieve Metadata, PS3.18 §10.4.1.1.2 (Retrieve Transaction, 2025b).

`GET .../studies/{study}/metadata`, `.../series/{series}/metadata` and
`.../instances/{instance}/metadata` answer the DICOM JSON Model (PS3.18 Annex F) of every
instance (`application/dicom+json`, also as `application/json`), or the Native DICOM Model
(PS3.19) as `multipart/related; type="application/dicom+xml"`, one part per instance.

Each instance's document is precomputed at ingest (`dicom/metadata.py`) and kept in the index
(SQLite) or as a blob (DynamoDB; `resources.metadata_documents` reads either). A series'
document is built on first request from its instances' documents (one index read, or blob
reads in parallel) and kept gzip
compressed in the BlobStore under a key made of the series version, which every store and
delete in the series bumps, and of the request's DICOMweb root (BulkDataURIs are absolute):
a warm series is one read. A study's document is the concatenation of its series' documents,
kept the same way under a key made of all its series versions. `ETag` is the series version
(a digest of the series versions for a study); `If-None-Match` gets 304. The gzip bytes go
out as they are with `Content-Encoding: gzip` when `Accept-Encoding` allows gzip.

Note on Content-Encoding: `chalice local` and `chalice.test.Client` pass the header and the
bytes through untouched; on AWS, Chalice base64-encodes the binary body (binary_types `*/*`)
and API Gateway (REST) decodes it and forwards `Content-Encoding: gzip` to the client as is
(it does not compress again a response that already names an encoding). An answer above
`InlineLimit` goes through S3 (303) uncompressed, since the presigned GET carries no
Content-Encoding.

The Orthanc options are honoured for studies and series: `StudiesMetadata` /
`SeriesMetadata` = `Full` (default), `MainDicomTags` (the main attributes kept in the index,
no blob read) or `Extrapolate` (main attributes plus the `...ExtrapolatedTags` whose value is
shared by most of up to 3 sampled instances).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.jsonmodel import json_to_xml
from chalicelib.dicom.metadata import resolve_base
from chalicelib.dicom.multipart import encode_multipart, multipart_content_type, new_boundary
from chalicelib.errors import NotAcceptable, NotFound
from chalicelib.server.cache import METADATA_PREFIX, versioned
from chalicelib.server.delivery import deliver
from chalicelib.server.http import Service, WebRequest, WebResponse, not_modified
from chalicelib.server.negotiate import (
    AcceptEntry,
    accept_category,
    best_match,
    parse_accept,
    part_type,
    type_matches,
)
from chalicelib.server.resources import (
    check_path_uids,
    find_instances,
    metadata_documents,
    not_found,
    parallel_map,
)
from chalicelib.storage import ports

service = Service("wado-rs-metadata")

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
_READ_THREADS = 16
_EXTRAPOLATION_SAMPLES = 3
_INSTANCE_NUMBER = "00200013"


def negotiate_metadata(request: WebRequest) -> str:
    """application/dicom+json (default), application/json, or the XML multipart type; DICOM and
    rendered media types together are 400 (PS3.18 §8.7.5, 2025b, `accept_category`)."""
    entries = parse_accept(request.accept)
    category = accept_category(entries)
    found = best_match(entries, (DICOM_JSON, "application/json", DICOM_XML), _fits_metadata)
    if found is None:
        hint = ""
        if category == "rendered":
            hint = "; metadata has no rendered representation (PS3.18 §8.7.4)"
        raise NotAcceptable(
            "metadata is available as application/dicom+json, application/json and "
            f'multipart/related; type="application/dicom+xml"; the Accept header allows none{hint}'
        )
    return found[0]


def _fits_metadata(entry: AcceptEntry, offer: str) -> bool:
    """DICOM XML only inside `multipart/related` (PS3.18 §10.4.3.3.3), JSON only bare. A
    `multipart/related` (or `multipart/*`) without `type` is the XML: it is the one multipart
    representation of metadata, `multipart/related; type="application/dicom+xml"` (Retrieve
    Transaction Metadata Resources and their media types, PS3.18 §10.4.1.1.2 and Table
    10.4.4-1, 2025b); it was 406."""
    media = entry.media
    if media.type == "multipart/related":
        return offer == DICOM_XML and type_matches(part_type(media, DICOM_XML), DICOM_XML)
    return offer != DICOM_XML and type_matches(media.type, offer)


def accepts_gzip(request: WebRequest) -> bool:
    """Accept-Encoding names gzip (or `*`) with a q-value above 0 (RFC 9110 §12.5.3)."""
    for member in request.header("accept-encoding").split(","):
        name, _, params = member.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower().removeprefix("q=").strip() if params else "1"
        try:
            return float(q or "1") > 0
        except ValueError:
            return False
    return False


def _sort_key(record: ports.InstanceRecord) -> tuple[str, int, str]:
    values = record.instance_tags.get(_INSTANCE_NUMBER, {}).get("Value") or [None]
    number = values[0] if isinstance(values[0], int) else 0
    return (record.series_uid, number, record.sop_uid)


def _json_array(documents: list[bytes]) -> bytes:
    return b"[" + b",".join(documents) + b"]"


def _read_documents(request: WebRequest, records: list[ports.InstanceRecord]) -> list[bytes]:
    """The documents of `records` in series order, BulkDataURIs made absolute; those a
    concurrent DELETE has removed since the listing are left out (issue 11: 500s in a delete
    race). The delete bumped the series version first, so a cache entry built from this
    listing is stale."""
    ordered = sorted(records, key=_sort_key)
    documents = metadata_documents(request, ordered, _READ_THREADS)
    return [resolve_base(d, request.dicomweb_root) for d in documents if d is not None]


def _cache_key(study: str, name: str) -> str:
    """One key per resource, whatever the Host of the request: the number of cached documents
    is bounded by the resources stored, not by the Host values callers send."""
    return f"{METADATA_PREFIX}{study}/{name}.json.gz"


def _cached(request: WebRequest, key: str, tag: str, build: Any) -> bytes:
    """The gzip document at `key` built for `tag` and this DICOMweb root (its BulkDataURIs are
    absolute), built and stored on a miss: a request with another root rebuilds it in place."""
    root = hashlib.sha1(request.dicomweb_root.encode("utf-8")).hexdigest()[:16]
    return versioned(
        request.context.blobs,
        key,
        f"{tag} {root}",
        lambda: gzip.compress(build(), compresslevel=5, mtime=0),
    )


def series_document(request: WebRequest, series: ports.SeriesRecord) -> bytes:
    """The gzip JSON array of a series' instance documents (Full mode), cached by version."""
    key = _cache_key(series.study_uid, series.series_uid)

    def build() -> bytes:
        # The version was read before the listing: a concurrent store makes this document
        # newer than its key says, never older.
        records = request.context.index.list_instances(series.study_uid, series.series_uid)
        return _json_array(_read_documents(request, records))

    return _cached(request, key, str(series.version), build)


def _main_tags(record: ports.InstanceRecord) -> dict[str, Any]:
    return {**record.study_tags, **record.series_tags, **record.instance_tags}


def _extrapolated(
    request: WebRequest, records: list[ports.InstanceRecord], keywords: tuple[str, ...]
) -> dict[str, Any]:
    """The attributes (by keyword) on which most of up to 3 sampled instances agree."""
    if not keywords or not records:
        return {}
    from pydicom.datadict import tag_for_keyword

    ordered = sorted(records, key=_sort_key)
    picks = sorted({0, len(ordered) // 2, len(ordered) - 1})[:_EXTRAPOLATION_SAMPLES]
    samples = [json.loads(d) for d in _read_documents(request, [ordered[i] for i in picks])]
    found: dict[str, Any] = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        key = f"{tag:08X}"
        votes: dict[str, int] = {}
        for sample in samples:
            if key in sample:
                text = json.dumps(sample[key], sort_keys=True)
                votes[text] = votes.get(text, 0) + 1
        if votes:
            text, count = max(votes.items(), key=lambda item: item[1])
            if count * 2 > len(samples):
                found[key] = json.loads(text)
    return found


def _reduced(
    request: WebRequest, records: list[ports.InstanceRecord], mode: str, keywords: tuple[str, ...]
) -> bytes:
    """MainDicomTags / Extrapolate: the documents built from the index (and 3 samples)."""
    extra = _extrapolated(request, records, keywords) if mode == "Extrapolate" else {}
    datasets = [
        dict(sorted({**_main_tags(r), **extra}.items())) for r in sorted(records, key=_sort_key)
    ]
    return json.dumps(datasets, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _answer(
    request: WebRequest, body: bytes, compressed: bool, etag: str | None, media: str
) -> WebResponse:
    """Shape the answer: JSON (gzip when accepted and small enough inline) or XML parts."""
    headers = {"Vary": "Accept, Accept-Encoding"}
    if etag:
        headers["ETag"] = etag
    if media == DICOM_XML:
        plain = gzip.decompress(body) if compressed else body
        documents = json_to_xml(json.loads(plain))
        boundary = new_boundary()
        parts = [({"Content-Type": DICOM_XML}, d) for d in documents]
        content_type = multipart_content_type(DICOM_XML, boundary)
        return deliver(
            request, WebResponse(200, encode_multipart(parts, boundary), headers, content_type)
        )
    limit = request.context.settings.inline_limit
    if accepts_gzip(request) and (not limit or len(body) <= limit):
        if not compressed:
            body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["Content-Encoding"] = "gzip"
        return WebResponse(200, body, headers, media)
    plain = gzip.decompress(body) if compressed else body
    return deliver(request, WebResponse(200, plain, headers, media))


def _not_modified_response(etag: str) -> WebResponse:
    return WebResponse(304, b"", {"ETag": etag, "Vary": "Accept, Accept-Encoding"})


def _series_record(request: WebRequest, study: str, series: str) -> ports.SeriesRecord:
    check_path_uids(study, series)
    try:
        return request.context.index.get_series(study, series)
    except ports.NotFound:
        raise not_found(study, series) from None


@service.route(
    "/studies/{study}/series/{series}/instances/{instance}/metadata", "GET", scope="read"
)
def retrieve_instance_metadata(
    request: WebRequest, study: str, series: str, instance: str
) -> WebResponse:
    media = negotiate_metadata(request)
    record = find_instances(request, study, series, instance)[0]
    etag = f'"{record.sha256[:16]}"'
    if not_modified(request, etag):
        return _not_modified_response(etag)
    documents = _read_documents(request, [record])
    if not documents:
        raise NotFound(f"instance {record.sop_uid} has no precomputed metadata")
    body = _json_array(documents)
    return _answer(request, body, False, etag, media)


@service.route("/studies/{study}/series/{series}/metadata", "GET", scope="read")
def retrieve_series_metadata(request: WebRequest, study: str, series: str) -> WebResponse:
    media = negotiate_metadata(request)
    record = _series_record(request, study, series)
    mode = request.context.settings.series_metadata
    etag = f'"{record.version}"' if mode == "Full" else f'"{record.version}-{mode}"'
    if not_modified(request, etag):
        return _not_modified_response(etag)
    if mode == "Full":
        return _answer(request, series_document(request, record), True, etag, media)
    records = find_instances(request, study, series)
    keywords = request.context.settings.series_metadata_extrapolated_tags
    return _answer(request, _reduced(request, records, mode, keywords), False, etag, media)


@service.route("/studies/{study}/metadata", "GET", scope="read")
def retrieve_study_metadata(request: WebRequest, study: str) -> WebResponse:
    media = negotiate_metadata(request)
    index = request.context.index
    series_list = index.list_series(study) if is_valid_uid(study) else []
    if not series_list:
        raise NotFound(f"no study {study[:80]} is stored here")
    series_list.sort(key=lambda s: s.series_uid)
    versions = ",".join(f"{s.series_uid}:{s.version}" for s in series_list)
    mode = request.context.settings.studies_metadata
    digest = hashlib.sha1(f"{mode}|{versions}".encode()).hexdigest()[:20]
    etag = f'"{digest}"'
    if not_modified(request, etag):
        return _not_modified_response(etag)
    if mode != "Full":
        records = find_instances(request, study)
        keywords = request.context.settings.studies_metadata_extrapolated_tags
        return _answer(request, _reduced(request, records, mode, keywords), False, etag, media)

    def build() -> bytes:
        documents = parallel_map(lambda s: series_document(request, s), series_list, _READ_THREADS)
        inner = [gzip.decompress(d)[1:-1] for d in documents]
        return _json_array([d for d in inner if d])

    compressed = _cached(request, _cache_key(study, "study"), digest, build)
    return _answer(request, compressed, True, etag, media)
