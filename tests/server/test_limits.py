"""Limits per request: each a named option with a default, answered with a 4xx naming it."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chalicelib.config import Settings
from chalicelib.context import Context
from chalicelib.dicom.parse import UnreadableInstance, check_sequence_depth, parse_instance
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.api import create_app
from chalicelib.server.metadata import METADATA_PREFIX
from tests.conftest import make_context, testdata
from tests.server.helpers import json_of, stow

CT = "2020-08-12-Christopher.dcm"


def _client(tmp_path: Path, **options: Any) -> tuple[Client, Context]:
    context = make_context("local", tmp_path, **options)
    return Client(create_app(lambda: context)), context


def _store(context: Context) -> IngestResult:
    result = store_instance(context, testdata(CT).read_bytes())
    assert result.status == "stored", result.message
    return result


def _instance(r: IngestResult) -> str:
    return f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_instance_uid}"


def _get(client: Client, path: str, **headers: str) -> Any:
    return client.http.get(path, headers={"Accept": "*/*", **headers})


def _message(response: Any) -> str:
    return json_of(response)["Message"]


def test_limit_defaults() -> None:
    settings = Settings()
    assert settings.max_request_body == 1_073_741_824
    assert settings.max_query_string == 8192
    assert settings.max_stow_parts == 10_000
    assert settings.max_frames == 1000
    assert settings.max_image_size == 8192
    assert settings.max_crop_pixels == 16_777_216
    assert settings.max_sequence_depth == 16
    assert settings.max_ranges == 16


def test_frames_repeated_is_400(tmp_path: Path) -> None:
    client, context = _client(tmp_path)
    path = _instance(_store(context)) + "/frames/"
    assert _get(client, path + "1").status_code == 200
    response = _get(client, path + ",".join(["1"] * 400))
    assert response.status_code == 400
    assert "names frame 1 more than once" in _message(response)


def test_frames_over_max_frames_is_400(tmp_path: Path) -> None:
    client, context = _client(tmp_path, max_frames=2)
    response = _get(client, _instance(_store(context)) + "/frames/1,2,3")
    assert response.status_code == 400
    assert "DicomWeb.MaxFrames" in _message(response)


@pytest.mark.parametrize("query", ["rows=8193", "columns=66000", "rows=20000&columns=20000"])
def test_wado_uri_size_over_max_image_size_is_400(tmp_path: Path, query: str) -> None:
    client, context = _client(tmp_path)
    r = _store(context)
    base = (
        f"/wado?requestType=WADO&studyUID={r.study_uid}&seriesUID={r.series_uid}"
        f"&objectUID={r.sop_instance_uid}&contentType=image/jpeg"
    )
    assert _get(client, base + "&rows=64").status_code == 200
    response = _get(client, f"{base}&{query}")
    assert response.status_code == 400
    assert "DicomWeb.MaxImageSize" in _message(response)


def test_rendered_viewport_over_max_image_size_is_400(tmp_path: Path) -> None:
    client, context = _client(tmp_path)
    response = _get(client, _instance(_store(context)) + "/rendered?viewport=8193,64")
    assert response.status_code == 400
    assert "DicomWeb.MaxImageSize" in _message(response)


def test_rendered_viewport_crop_over_max_crop_pixels_is_400(tmp_path: Path) -> None:
    client, context = _client(tmp_path)
    path = _instance(_store(context)) + "/rendered?viewport=64,64,0,0,"
    assert _get(client, path + "256,256").status_code == 200
    response = _get(client, path + "20000,20000")
    assert response.status_code == 400
    assert "DicomWeb.MaxCropPixels" in _message(response)


def test_rendered_decompression_bomb_is_400_not_500(tmp_path: Path) -> None:
    """With the crop limit lifted, Pillow's own guard still ends in a 400."""
    client, context = _client(tmp_path, max_crop_pixels=10**12)
    response = _get(client, _instance(_store(context)) + "/rendered?viewport=64,64,0,0,20000,20000")
    assert response.status_code == 400
    assert "too large to render" in _message(response)


def test_stow_parts_over_max_stow_parts_is_413(tmp_path: Path) -> None:
    client, _ = _client(tmp_path, max_stow_parts=2)
    data = testdata(CT).read_bytes()
    response = stow(client, data, data, data, Host="h")
    assert response.status_code == 413
    assert "DicomWeb.MaxStowParts" in _message(response)


def test_request_body_over_max_request_body_is_413(tmp_path: Path) -> None:
    client, _ = _client(tmp_path, max_request_body=1000)
    response = stow(client, testdata(CT).read_bytes(), Host="h")
    assert response.status_code == 413
    assert "DicomWeb.MaxRequestBody" in _message(response)


def test_query_string_over_max_query_string_is_414(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    assert _get(client, "/dicom-web/studies?PatientID=" + "x" * 100).status_code == 204
    response = _get(client, "/dicom-web/studies?PatientID=" + "x" * 9000)
    assert response.status_code == 414
    assert "DicomWeb.MaxQueryString" in _message(response)


def test_range_set_over_max_ranges_is_416(tmp_path: Path) -> None:
    client, context = _client(tmp_path)
    path = _instance(_store(context)) + "/bulk/7FE00010"
    accept = "application/octet-stream"
    assert _get(client, path, Accept=accept, Range="bytes=0-9,20-29").status_code == 206
    many = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
    response = _get(client, path, Accept=accept, Range=many)
    assert response.status_code == 416
    assert "DicomWeb.MaxRanges" in _message(response)


def nested_instance(depth: int) -> bytes:
    """A Part-10 file whose Content Sequence nests `depth` levels (undefined lengths)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "NESTED"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    sequence = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return out.getvalue() + (sequence + item) * depth + ends * depth


@pytest.mark.parametrize("depth", [17, 100])
def test_check_sequence_depth_refuses_deep_sequences(depth: int) -> None:
    check_sequence_depth(parse_instance(nested_instance(16)).dataset, 16)
    with pytest.raises(UnreadableInstance, match="nested 17 deep"):
        check_sequence_depth(parse_instance(nested_instance(depth)).dataset, 16)


def test_parse_instance_sequences_too_deep_for_pydicom() -> None:
    with pytest.raises(UnreadableInstance, match="nested too deeply"):
        parse_instance(nested_instance(5000))


def test_stow_sequence_deeper_than_max_sequence_depth_is_refused(tmp_path: Path) -> None:
    client, _ = _client(tmp_path, max_sequence_depth=4)
    assert stow(client, nested_instance(4), Host="h").status_code == 200
    response = stow(client, nested_instance(5), Host="h")
    assert response.status_code == 400
    assert "DicomWeb.MaxSequenceDepth" in response.headers["Warning"]


def test_series_metadata_cache_independent_of_host(tmp_path: Path) -> None:
    """50 Host values: one cached document per series, not one per Host."""
    client, context = _client(tmp_path)
    r = _store(context)
    path = f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/metadata"
    for number in range(50):
        host = f"h{number}.example"
        response = _get(client, path, Host=host)
        assert response.status_code == 200
        assert f"http://{host}/dicom-web/" in response.body.decode()
    cached = list((tmp_path / "data" / "blobs" / METADATA_PREFIX).rglob("*"))
    assert [p.name for p in cached if p.is_file()] == [f"{r.series_uid}.json.gz"]
