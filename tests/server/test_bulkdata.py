"""HTTP tests of WADO-RS Retrieve Bulkdata (chalicelib/server/bulkdata.py), on every backend."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chalice.test import Client
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, generate_uid

from chalicelib.context import Context
from chalicelib.dicom.transcode import to_explicit_little_endian
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from tests.conftest import TESTDATA, make_context
from tests.corpus import orthanc_files
from tests.server.helpers import assert_no_route, parts_of
from tests.server.test_frames import CountingBlobs, get, instance_path, store_all

HOST = "dicomweb.test"
OCTETS = 'multipart/related; type="application/octet-stream"'


def bulk_uris(dataset: dict[str, Any]) -> list[str]:
    found = []
    for attr in dataset.values():
        if "BulkDataURI" in attr:
            found.append(attr["BulkDataURI"])
        if attr.get("vr") == "SQ":
            for item in attr.get("Value") or []:
                found += bulk_uris(item)
    return found


def little_endian_value(data: bytes, syntax: str, path: str) -> bytes:
    """The element's Value Field as an Explicit VR Little Endian file holds it (pydicom)."""
    ds = dcmread(io.BytesIO(to_explicit_little_endian(data, syntax)), force=True)
    segments = path.split("/")
    for position in range(0, len(segments) - 1, 2):
        ds = ds[int(segments[position], 16)].value[int(segments[position + 1]) - 1]
    raw = ds.get_item(int(segments[-1], 16))
    return raw.value if isinstance(raw.value, bytes) else ds[int(segments[-1], 16)].value


def test_every_bulkdata_uri_resolves_to_the_value(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, inline_limit=0)
    stored = store_all(context, orthanc_files())
    checked = 0
    with Client(create_app(lambda: context)) as client:
        for path, result in stored:
            meta = get(client, f"{instance_path(result)}/metadata", "application/dicom+json")
            record = context.index.get_instance(
                result.study_uid, result.series_uid, result.sop_instance_uid
            )
            for uri in bulk_uris(json.loads(meta.body)[0]):
                assert uri.startswith(f"http://{HOST}{instance_path(result)}/bulk/")
                bulk_path = uri.split("/bulk/")[1]
                pixel = bulk_path == "7FE00010"
                accept = f"{OCTETS}; transfer-syntax=*" if pixel else OCTETS
                answer = get(client, uri.removeprefix(f"http://{HOST}"), accept)
                assert answer.status_code == 200, (path, bulk_path, answer.body[:200])
                parts = parts_of(answer)
                if pixel:
                    frames = get(client, f"{instance_path(result)}/frames/1", accept)
                    assert parts[0][1] == parts_of(frames)[0][1]
                    if len(parts) == 1:
                        assert parts[0][0]["content-location"] == uri
                    continue
                [(headers, body)] = parts
                assert headers["content-type"] == "application/octet-stream"
                assert headers["content-location"] == uri
                expected = little_endian_value(
                    path.read_bytes(), record.transfer_syntax_uid, bulk_path
                )
                assert body == expected, (path, bulk_path)
                checked += 1
    assert checked >= 10  # Issue168, Issue56, PrivateTags


def test_bulkdata_nested_element_is_one_range_read(backend: str, tmp_path: Path) -> None:
    base = make_context(backend, tmp_path)
    [(_, result)] = store_all(base, [TESTDATA / "PrivateTags.dcm"])
    counting = CountingBlobs(base.blobs)
    context = dataclasses.replace(base, blobs=counting)
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/bulk/60031010/1/60031011", OCTETS)
    [(_, body)] = parts_of(answer)
    assert len(body) == 12288
    assert counting.gets == [] and [n for _, _, n in counting.ranges] == [12288]


def test_bulkdata_single_part_and_ranges(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "PrivateTags.dcm"])
    uri = f"{instance_path(result)}/bulk/60031010/1/60031011"
    with Client(create_app(lambda: context)) as client:
        whole = get(client, uri, "application/octet-stream")
        assert whole.status_code == 200
        assert whole.headers["Content-Type"] == "application/octet-stream"
        assert whole.headers["Content-Location"] == f"http://{HOST}{uri}"
        part = get(client, uri, "*/*", Range="bytes=10-19")
        assert part.status_code == 206
        assert part.headers["Content-Range"] == "bytes 10-19/12288"
        assert part.body == whole.body[10:20]
        tail = get(client, uri, "*/*", Range="bytes=-5")
        assert tail.status_code == 206 and tail.body == whole.body[-5:]
        beyond = get(client, uri, "*/*", Range="bytes=20000-")
        assert beyond.status_code == 416
        assert beyond.headers["Content-Range"] == "bytes */12288"


@pytest.mark.parametrize("path", ["zz", "60031010/0/60031011", "00100010/1/0010"])
def test_bulkdata_bad_paths_are_404(context: Context, path: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "PrivateTags.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/bulk/{path}", OCTETS)
    assert answer.status_code == 404
    assert f"bulk path '{path}' names no element" in answer.json_body["Message"]


def test_bulkdata_path_ending_in_an_item_has_no_route(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "PrivateTags.dcm"])
    with Client(create_app(lambda: context)) as client:
        assert_no_route(get(client, f"{instance_path(result)}/bulk/60031010/1", OCTETS))


J50 = "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm"


@pytest.mark.parametrize("accept", ["image/jpeg", "application/octet-stream"])
def test_bulkdata_compressed_pixel_data_single_part_range(context: Context, accept: str) -> None:
    """Range applies to the single-part representation: the stored bitstream (image/jpeg) or
    the decoded pixels (application/octet-stream)."""
    [(_, result)] = store_all(context, [TESTDATA / J50])
    uri = f"{instance_path(result)}/bulk/7FE00010"
    with Client(create_app(lambda: context)) as client:
        whole = get(client, uri, accept)
        assert whole.status_code == 200
        total = len(whole.body)
        part = get(client, uri, accept, Range="bytes=10-19")
        assert part.status_code == 206
        assert part.body == whole.body[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{total}"
        assert part.headers["Content-Type"] == whole.headers["Content-Type"]
        assert part.headers["Content-Location"] == f"http://{HOST}{uri}"
        tail = get(client, uri, accept, Range="bytes=-7")
        assert tail.status_code == 206 and tail.body == whole.body[-7:]
        beyond = get(client, uri, accept, Range=f"bytes={total}-")
        assert beyond.status_code == 416
        assert beyond.headers["Content-Range"] == f"bytes */{total}"
        invalid = get(client, uri, accept, Range="bytes=x-y")
        assert invalid.status_code == 200 and invalid.body == whole.body
    assert whole.headers["Content-Type"].startswith(accept)


@pytest.mark.parametrize(
    ("name", "accept"),
    [
        (J50, f"{OCTETS}; transfer-syntax=*"),
        ("LenaTwiceWithFragments.dcm", f"{OCTETS}; transfer-syntax=*"),
        ("LenaTwiceWithFragments.dcm", "*/*"),
        ("LenaTwiceWithFragments.dcm", "multipart/*"),  # RFC 9110 §12.5.1: it was 406
    ],
)
def test_bulkdata_compressed_pixel_data_multipart_ignores_range(
    context: Context, name: str, accept: str
) -> None:
    """RFC 9110 §14.2: a multipart answer (new boundary each time) ignores Range, 200 in full."""
    [(_, result)] = store_all(context, [TESTDATA / name])
    uri = f"{instance_path(result)}/bulk/7FE00010"
    with Client(create_app(lambda: context)) as client:
        whole = parts_of(get(client, uri, accept))
        ranged = get(client, uri, accept, Range="bytes=0-9")
    assert ranged.status_code == 200
    assert "Content-Range" not in ranged.headers
    assert parts_of(ranged) == whole


@pytest.mark.parametrize(
    ("name", "path"), [("PrivateTags.dcm", "60031010/1/60031011"), (J50, "7FE00010")]
)
def test_bulkdata_octet_stream_and_rendered_types_mixed_400(
    context: Context, name: str, path: str
) -> None:
    """PS3.18 §8.7.5; here image/jpeg is a Bulkdata Media Type, image/gif a rendered one."""
    [(_, result)] = store_all(context, [TESTDATA / name])
    uri = f"{instance_path(result)}/bulk/{path}"
    with Client(create_app(lambda: context)) as client:
        answer = get(client, uri, f"{OCTETS}, text/html")
        ranged = get(client, uri, "image/jpeg, image/gif", Range="bytes=0-1")
    assert answer.status_code == 400
    assert "§8.7.5" in answer.json_body["Message"]
    assert ranged.status_code == 400


def test_bulkdata_not_acceptable(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "PrivateTags.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/bulk/60031010/1/60031011", "image/png")
    assert answer.status_code == 406
    assert "application/octet-stream" in answer.json_body["Message"]


def big_endian_instance() -> tuple[bytes, bytes]:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    words = np.arange(1000, dtype="<u2")
    ds.add_new(0x00091010, "LO", "TEST")
    ds.add_new(0x00091011, "OW", words.astype(">u2").tobytes())  # pydicom writes OW as given
    ds.add_new(0x00091012, "FL", [float(v) for v in range(400)])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), words.tobytes()


def test_bulkdata_big_endian_values_come_out_little_endian(context: Context) -> None:
    data, words = big_endian_instance()
    result = store_instance(context, data)
    assert result.status == "stored", result.message
    with Client(create_app(lambda: context)) as client:
        ow = get(client, f"{instance_path(result)}/bulk/00091011", "application/octet-stream")
        fl = get(client, f"{instance_path(result)}/bulk/00091012", "application/octet-stream")
    assert ow.body == words
    assert fl.body == np.arange(400, dtype="<f4").tobytes()


# Issue 11: item "00" passed the check and int("00") - 1 answered the last item; "²" gave 500.
@pytest.mark.parametrize("item", ["00", "01", "%C2%B2"])
def test_bulkdata_item_numbers_are_canonical(context: Context, item: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "PrivateTags.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/bulk/60031010/{item}/60031011", OCTETS)
    assert answer.status_code == 404
    assert "items numbered from 1" in json.loads(answer.body)["Message"]
