"""HTTP tests of WADO-RS Retrieve Metadata (chalicelib/server/metadata.py), on every backend."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from chalice.test import Client
from pydicom import dcmread

from chalicelib.context import Context
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from chalicelib.storage import ports
from tests.conftest import TESTDATA, make_context
from tests.corpus import orthanc_files
from tests.server.helpers import parts_of
from tests.server.test_frames import (
    CountingBlobs,
    get,
    instance_path,
    multiframe_instance,
    store_all,
)

JSON = "application/dicom+json"
XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'
HOST = "dicomweb.test"


def _value(vr: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return {k: v.strip() for k, v in value.items() if v and v.strip()} or None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) or vr in ("DS", "IS", "FL", "FD"):
        try:
            number = float(value)
            return round(number, 6) if math.isfinite(number) else str(value)
        except (TypeError, ValueError):
            return str(value).strip()
    return str(value).strip(" \0")


def semantic(attr: dict[str, Any]) -> Any:
    """An attribute with its values normalised; bulk and inline binary values compare equal."""
    vr = attr.get("vr")
    if "BulkDataURI" in attr or "InlineBinary" in attr:
        return (vr, "binary")
    if vr == "SQ":
        return (vr, [semantic_dataset(item) for item in attr.get("Value") or []])
    values = [_value(vr, v) for v in attr.get("Value") or []]
    while values and values[-1] is None:
        values.pop()
    return (vr, values)


def semantic_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    return {k: semantic(v) for k, v in dataset.items() if not k.endswith("0000")}


def without_bulk_values(reference: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """`reference` with the values that `ours` sends by BulkDataURI taken out (pydicom keeps
    long text and numeric values inline; §10.4.3.3.2 allows a BulkDataURI for them)."""
    masked = dict(reference)
    for key, attr in ours.items():
        if key not in masked:
            continue
        if "BulkDataURI" in attr:
            masked[key] = attr
        elif attr.get("vr") == "SQ" and masked[key].get("vr") == "SQ":
            ours_items = attr.get("Value") or []
            items = masked[key].get("Value") or []
            masked[key] = {
                "vr": "SQ",
                "Value": [
                    without_bulk_values(r, o) for r, o in zip(items, ours_items, strict=False)
                ]
                + items[len(ours_items) :],
            }
    return masked


def pydicom_json(data: bytes) -> dict[str, Any] | None:
    ds = dcmread(io.BytesIO(data), force=True)
    try:
        return ds.to_json_dict(bulk_data_element_handler=lambda e: "bulk")
    except Exception:  # pydicom cannot write this file's JSON: nothing to compare against
        return None


def test_instance_metadata_equals_pydicom_json_for_every_test_file(context: Context) -> None:
    stored = store_all(context, orthanc_files())
    compared = 0
    with Client(create_app(lambda: context)) as client:
        for path, result in stored:
            answer = get(client, f"{instance_path(result)}/metadata", JSON)
            assert answer.status_code == 200, path
            assert answer.headers["Content-Type"] == JSON
            [ours] = json.loads(answer.body)
            expected = pydicom_json(path.read_bytes())
            if expected is None:
                continue
            expected = without_bulk_values(expected, ours)
            assert semantic_dataset(ours) == semantic_dataset(expected), path
            compared += 1
    assert compared >= 20


def test_instance_metadata_empty_values_and_retired_private_kept(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "Issue168.dcm"])
    with Client(create_app(lambda: context)) as client:
        [ours] = json.loads(get(client, f"{instance_path(result)}/metadata", JSON).body)
    assert ours["00090010"] == {"vr": "LO", "Value": ["Lunit"]}
    assert ours["00091001"]["Value"] == [98.41]
    assert ours["00091003"]["vr"] == "SQ"


def store_series(context: Context, count: int) -> list[Any]:
    """`count` instances of one series (copies of a file with new SOP Instance UIDs)."""
    template = dcmread(TESTDATA / "KarstenHilbertRF.dcm")
    results = []
    for number in range(1, count + 1):
        template.SOPInstanceUID = f"1.2.826.0.1.3680043.10.99.{number}"
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = number
        out = io.BytesIO()
        template.save_as(out)
        results.append(store_instance(context, out.getvalue()))
    return results


def test_series_metadata_is_built_once_then_one_read(backend: str, tmp_path: Path) -> None:
    base = make_context(backend, tmp_path)
    results = store_series(base, 5)
    study, series = results[0].study_uid, results[0].series_uid
    counting = CountingBlobs(base.blobs)
    context = dataclasses.replace(base, blobs=counting)
    url = f"/dicom-web/studies/{study}/series/{series}/metadata"
    with Client(create_app(lambda: context)) as client:
        first = get(client, url, JSON)
        assert first.status_code == 200
        documents = json.loads(first.body)
        assert [d["00200013"]["Value"][0] for d in documents] == [1, 2, 3, 4, 5]
        # cache miss + 5 instance documents, unless the index keeps them (one index read)
        assert len(counting.gets) == (1 if base.index.keeps_metadata else 6)
        counting.gets.clear()
        second = get(client, url, JSON, **{"Accept-Encoding": "gzip, deflate"})
        assert counting.gets and len(counting.gets) == 1
        assert second.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(second.body)) == documents
        etag = first.headers["ETag"]
        version = context.index.get_series(study, series).version
        assert etag == f'"{version}"'
        not_modified = get(client, url, JSON, **{"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.body == b""
        store_series(base, 6)  # one more instance: the version changes
        third = get(client, url, JSON, **{"If-None-Match": etag})
        assert third.status_code == 200 and third.headers["ETag"] != etag
        assert len(json.loads(third.body)) == 6


def test_series_metadata_etag_not_reused_after_delete(context: Context) -> None:
    """Issue 11: store 3 instances (ETag "3"), delete the study, store 3 others: the old ETag
    answered 304 for the new content."""
    results = store_series(context, 3)
    study, series = results[0].study_uid, results[0].series_uid
    url = f"/dicom-web/studies/{study}/series/{series}/metadata"
    with Client(create_app(lambda: context)) as client:
        etag = get(client, url, JSON).headers["ETag"]
        assert client.http.delete(f"/dicom-web/studies/{study}").status_code == 204
        store_series(context, 3)
        again = get(client, url, JSON, **{"If-None-Match": etag})
    assert again.status_code == 200
    assert again.headers["ETag"] != etag


class DeleteAfterListing:
    """A TagIndex on which a DELETE of `gone` (index, then blobs) commits right after the
    next listing of instances: the racing interleaving, forced (inject, don't patch)."""

    def __init__(self, context: Context, gone: ports.InstanceRecord) -> None:
        self._context = context
        self._gone = gone

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context.index, name)

    def list_instances(self, study_uid: str, series_uid: str | None = None) -> Any:
        records = self._context.index.list_instances(study_uid, series_uid)
        gone = self._gone
        self._context.index.delete_instance(gone.study_uid, gone.series_uid, gone.sop_uid)
        for key in gone.blob_keys():
            self._context.blobs.delete(key)
        return records


def test_series_metadata_leaves_out_instances_deleted_meanwhile(context: Context) -> None:
    """Issue 11: a DELETE removing an instance's metadata between the listing and the reads
    made the series metadata answer 500."""
    results = store_series(context, 3)
    study, series = results[0].study_uid, results[0].series_uid
    gone = context.index.find_instance(results[1].sop_instance_uid)
    racing = dataclasses.replace(context)
    racing.index = DeleteAfterListing(context, gone)
    url = f"/dicom-web/studies/{study}/series/{series}/metadata"
    with Client(create_app(lambda: racing)) as client:
        answer = get(client, url, JSON)
    assert answer.status_code == 200
    assert [d["00080018"]["Value"][0] for d in json.loads(answer.body)] == [
        results[0].sop_instance_uid,
        results[2].sop_instance_uid,
    ]


def test_study_metadata_is_its_series_concatenated(context: Context) -> None:
    results = store_series(context, 2)
    extra = multiframe_instance(frames=2, rows=4, columns=4)
    ds = dcmread(io.BytesIO(extra))
    ds.StudyInstanceUID = results[0].study_uid
    out = io.BytesIO()
    ds.save_as(out)
    other = store_instance(context, out.getvalue())
    study = results[0].study_uid
    with Client(create_app(lambda: context)) as client:
        whole = json.loads(get(client, f"/dicom-web/studies/{study}/metadata", JSON).body)
        parts = []
        for series in sorted({results[0].series_uid, other.series_uid}):
            url = f"/dicom-web/studies/{study}/series/{series}/metadata"
            parts += json.loads(get(client, url, JSON).body)
        etag = get(client, f"/dicom-web/studies/{study}/metadata", JSON).headers["ETag"]
        again = get(client, f"/dicom-web/studies/{study}/metadata", JSON, **{"If-None-Match": etag})
    assert whole == parts and len(whole) == 3
    assert again.status_code == 304


def test_metadata_xml_is_one_part_per_instance(context: Context) -> None:
    results = store_series(context, 3)
    url = f"/dicom-web/studies/{results[0].study_uid}/series/{results[0].series_uid}/metadata"
    with Client(create_app(lambda: context)) as client:
        answer = get(client, url, 'multipart/related; type="application/dicom+xml"')
    parts = parts_of(answer)
    assert len(parts) == 3
    assert all(h["content-type"] == "application/dicom+xml" for h, _ in parts)
    assert parts[0][1].startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("*/*", 200, JSON),
        ("application/json", 200, "application/json"),
        ("application/json, application/dicom+json", 200, JSON),
        ("application/dicom+json; q=0, application/json", 200, "application/json"),
        ("image/jpeg", 406, "application/json"),
        # The one multipart form of metadata, PS3.18 §10.4.1.1.2 (2025b): they were 406.
        ("multipart/related", 200, XML_MULTIPART),
        ("multipart/*", 200, XML_MULTIPART),
        ("application/dicom+json, image/jpeg; q=0.5", 400, "application/json"),
        ('multipart/related; type="application/dicom+xml", text/html', 400, "application/json"),
        ("application/dicom+json, image/jpeg; q=0", 200, JSON),
    ],
)
def test_metadata_negotiation(
    context: Context, accept: str, status: int, content_type: str
) -> None:
    [result] = store_series(context, 1)
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/metadata", accept)
    assert answer.status_code == status
    assert answer.headers["Content-Type"].split("; boundary=")[0] == content_type


def test_metadata_accept_query_parameter_replaces_header(context: Context) -> None:
    """PS3.18 §8.3.3.1: `accept=` wins over the Accept header."""
    [result] = store_series(context, 1)
    xml = quote('multipart/related; type="application/dicom+xml"')
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/metadata?accept={xml}", JSON)
        refused = get(client, f"{instance_path(result)}/metadata?accept=image/png", JSON)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("multipart/related")
    assert refused.status_code == 406
    assert "no rendered representation" in refused.json_body["Message"]


def test_study_and_series_metadata_mixed_types_400(context: Context) -> None:
    [result] = store_series(context, 1)
    study = f"/dicom-web/studies/{result.study_uid}"
    with Client(create_app(lambda: context)) as client:
        for path in (f"{study}/metadata", f"{study}/series/{result.series_uid}/metadata"):
            answer = get(client, path, "application/dicom+json, image/png")
            assert answer.status_code == 400, path
            assert "§8.7.5" in answer.json_body["Message"]


@pytest.mark.parametrize(("proxies", "root"), [(("127.0.0.1",), "https://proxy.example"), ((), "")])
def test_metadata_bulk_uris_follow_the_forwarded_host(
    backend: str, tmp_path: Path, proxies: tuple[str, ...], root: str
) -> None:
    """Only from a trusted proxy (the test client's peer is 127.0.0.1)."""
    context = make_context(backend, tmp_path, trusted_proxies=proxies)
    [(_, result)] = store_all(context, [TESTDATA / "ColorTestImageJ.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = client.http.get(
            f"{instance_path(result)}/metadata",
            headers={
                "Accept": JSON,
                "Host": HOST,
                "X-Forwarded-Host": "proxy.example",
                "X-Forwarded-Proto": "https",
            },
        )
    [ours] = json.loads(answer.body)
    assert ours["7FE00010"]["BulkDataURI"] == (
        f"{root or 'http://' + HOST}{instance_path(result)}/bulk/7FE00010"
    )


@pytest.mark.parametrize("mode", ["MainDicomTags", "Extrapolate"])
def test_series_metadata_modes(backend: str, tmp_path: Path, mode: str) -> None:
    context = make_context(
        backend,
        tmp_path,
        series_metadata=mode,
        studies_metadata=mode,
        series_metadata_extrapolated_tags=("KVP", "NoSuchKeyword"),
        studies_metadata_extrapolated_tags=("KVP",),
    )
    results = store_series(context, 4)
    study, series = results[0].study_uid, results[0].series_uid
    with Client(create_app(lambda: context)) as client:
        documents = json.loads(
            get(client, f"/dicom-web/studies/{study}/series/{series}/metadata", JSON).body
        )
        studies = json.loads(get(client, f"/dicom-web/studies/{study}/metadata", JSON).body)
    assert len(documents) == 4 and len(studies) == 4
    assert documents[0]["0020000E"]["Value"] == [series]
    assert "7FE00010" not in documents[0]
    # KVP is no main tag: only Extrapolate adds it (the 4 instances share its value).
    assert ("00180060" in documents[0]) == (mode == "Extrapolate")
    assert ("00180060" in studies[0]) == (mode == "Extrapolate")


def test_metadata_unknown_resources_are_404(context: Context) -> None:
    with Client(create_app(lambda: context)) as client:
        for url in (
            "/dicom-web/studies/1.2.3/metadata",
            "/dicom-web/studies/1.2.3/series/1.2.4/metadata",
            "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/metadata",
            "/dicom-web/studies/not-a-uid/metadata",
        ):
            assert get(client, url, JSON).status_code == 404, url
