"""HTTP tests of WADO-RS Retrieve Frames (chalicelib/server/frames.py), on every backend."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from chalice.test import Client
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chalicelib.context import Context
from chalicelib.dicom import pixels
from chalicelib.dicom.transcode import to_explicit_little_endian
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.api import create_app
from tests.conftest import TESTDATA, make_context
from tests.corpus import CorpusFile, orthanc_files, storable
from tests.server.helpers import CountingBlobs, assert_no_route, parts_of, tiny_image

HOST = "dicomweb.test"
RAW = 'multipart/related; type="application/octet-stream"'
STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def store_all(ctx: Context, paths: list[Path]) -> list[tuple[Path, IngestResult]]:
    results = [(p, store_instance(ctx, p.read_bytes())) for p in paths]
    return [(p, r) for p, r in results if r.status == "stored"]


def instance_path(result: IngestResult) -> str:
    return (
        f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}"
    )


def get(client: Client, path: str, accept: str, **headers: str) -> Any:
    return client.http.get(path, headers={"Accept": accept, "Host": HOST, **headers})


def reference_frames(data: bytes, syntax: str) -> tuple[Dataset, list[bytes] | None]:
    """pydicom's own view: the dataset in little endian, and the stored bitstreams."""
    ds = dcmread(
        io.BytesIO(to_explicit_little_endian(data, syntax))
        if syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
        else io.BytesIO(data),
        force=True,
    )
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        return ds, None
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return ds, list(generate_frames(ds.PixelData, number_of_frames=count))


def test_retrieve_frames_match_pydicom_for_every_test_file(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, inline_limit=0)  # no 303: bodies inline
    stored = store_all(context, orthanc_files())
    checked = 0
    with Client(create_app(lambda: context)) as client:
        for path, result in stored:
            data = path.read_bytes()
            record = context.index.get_instance(
                result.study_uid, result.series_uid, result.sop_instance_uid
            )
            if not record.pixel:
                continue
            ds, bitstreams = reference_frames(data, record.transfer_syntax_uid)
            count = pixels.frame_count(record.pixel)
            chosen = list(range(1, count + 1)) if count <= 4 else [1, 2, count]
            numbers = ",".join(str(n) for n in chosen)
            if bitstreams is not None:
                answer = get(client, f"{instance_path(result)}/frames/{numbers}", STORED)
                assert answer.status_code == 200, path
                assert [body for _, body in parts_of(answer)] == [
                    bitstreams[n - 1] for n in chosen
                ], path
            answer = get(client, f"{instance_path(result)}/frames/{numbers}", RAW)
            if bitstreams is not None and not pixels.can_decode(record.transfer_syntax_uid):
                continue
            expected_array = None
            if bitstreams is not None:
                try:
                    expected_array = ds.pixel_array
                except Exception:  # pydicom cannot decode it either (the 12-bit JPEG file)
                    assert answer.status_code == 406, path
                    continue
            assert answer.status_code == 200, (path, answer.body[:300])
            parts = parts_of(answer)
            assert len(parts) == len(chosen)
            for number, (headers, body) in zip(chosen, parts, strict=True):
                assert headers["content-type"] == (
                    "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
                )
                assert headers["content-location"] == (
                    f"http://{HOST}{instance_path(result)}/frames/{number}"
                )
                if bitstreams is None:  # native: the stored frame, in little endian
                    length = record.pixel["frame_length"]
                    assert body == ds.PixelData[(number - 1) * length : number * length], path
                else:
                    assert expected_array is not None
                    frame = expected_array[number - 1] if count > 1 else expected_array
                    assert body == frame.astype(frame.dtype.newbyteorder("<")).tobytes(), path
            checked += 1
    assert checked >= 15


def test_retrieve_frames_in_request_order(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "LenaTwiceWithFragments.dcm"])
    with Client(create_app(lambda: context)) as client:
        one = parts_of(get(client, f"{instance_path(result)}/frames/1", STORED))[0][1]
        two = parts_of(get(client, f"{instance_path(result)}/frames/2", STORED))[0][1]
        answer = get(client, f"{instance_path(result)}/frames/2,1", STORED)
        assert [body for _, body in parts_of(answer)] == [two, one]
        assert one[:2] == b"\xff\xd8"  # Lena twice: the two frames are the same image
    result = store_instance(context, multiframe_instance(frames=4, rows=2, columns=2))
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/3,1,4", RAW)
    frames = [np.frombuffer(body, "<u2") for _, body in parts_of(answer)]
    assert [f.tolist() for f in frames] == [[8, 9, 10, 11], [0, 1, 2, 3], [12, 13, 14, 15]]


@pytest.mark.parametrize("frames", ["0", "3", "1,3", "x", "1,,2", "-1"])
def test_retrieve_frames_bad_numbers_are_400(context: Context, frames: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "LenaTwiceWithFragments.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/{frames}", "*/*")
    assert answer.status_code == 400
    assert "frame" in answer.json_body["Message"]


def test_retrieve_frames_bare_frames_resource_does_not_exist(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "LenaTwiceWithFragments.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames", "*/*")
    assert_no_route(answer)


def test_retrieve_frames_without_pixel_data_is_404(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / "Issue168.dcm"])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", "*/*")
    assert answer.status_code == 404
    assert "no Pixel Data" in answer.json_body["Message"]


J50 = "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("*/*", "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        (
            'multipart/related; type="image/jpeg"',
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        ),
        ('multipart/related; type="*/*"', "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        # Without type, any part type: the default of PS3.18 §8.7.3.3 (2025b) as for */*,
        # the stored form of a lossy frame (they gave it decoded to raw pixels).
        ("multipart/related", "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        ("multipart/*", "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        ('multipart/*; type="image/jpeg"', "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"),
        (RAW, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
        (STORED, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"),
        (
            f'{RAW}; q=0.5, multipart/related; type="image/jpeg"',
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        ),
        (
            f'multipart/related; type="image/jpeg"; q=0, {RAW}; q=0.1',
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        ),
        (
            "multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.80",
            "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80",
        ),
        (
            'multipart/related; type="image/dicom-rle", application/json',
            "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5",
        ),
    ],
)
def test_retrieve_frames_negotiation(context: Context, accept: str, content_type: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / J50])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
    assert answer.status_code == 200, answer.body[:300]
    [(headers, _)] = parts_of(answer)
    assert headers["content-type"] == content_type


def test_retrieve_frames_single_part(context: Context) -> None:
    [(_, result)] = store_all(context, [TESTDATA / J50])
    with Client(create_app(lambda: context)) as client:
        one = get(client, f"{instance_path(result)}/frames/1", "image/jpeg")
        assert one.status_code == 200
        assert one.headers["Content-Type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
        assert one.headers["Content-Location"].endswith("/frames/1")
        assert one.body[:2] == b"\xff\xd8"
        raw = get(client, f"{instance_path(result)}/frames/1", "application/octet-stream")
        assert len(raw.body) == 480 * 640 * 3


@pytest.mark.parametrize(
    ("media_type", "syntax"),
    [
        ("image/jls", "1.2.840.10008.1.2.4.80"),
        ("image/dicom-rle", "1.2.840.10008.1.2.5"),
        ("image/jp2", "1.2.840.10008.1.2.4.90"),
        ("application/octet-stream", "1.2.840.10008.1.2.4.80"),
    ],
)
def test_retrieve_frames_single_part_reencoded(
    context: Context, media_type: str, syntax: str
) -> None:
    """A frame re-encoded for a single part answer is the same bitstream as the multipart
    part. JPEG-LS was a 500: its encoder returns a bytearray, which Chalice took for a JSON
    body ("Object of type bytearray is not JSON serializable")."""
    [(_, result)] = store_all(context, [TESTDATA / J50])
    accept = f"{media_type}; transfer-syntax={syntax}"
    with Client(create_app(lambda: context)) as client:
        one = get(client, f"{instance_path(result)}/frames/1", accept)
        multi = get(
            client, f"{instance_path(result)}/frames/1", f"multipart/related; type={accept}"
        )
    assert one.status_code == 200, one.body[:300]
    assert one.headers["Content-Type"] == accept
    [(_, body)] = parts_of(multi)
    assert one.body == body


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="image/gif"',
        'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.51',
        "image/jpeg; q=0",
    ],
)
def test_retrieve_frames_not_acceptable_lists_what_is(context: Context, accept: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / J50])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
    assert answer.status_code == 406
    assert "image/jpeg" in answer.json_body["Message"]


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="image/dicom-rle", text/html',
        "image/jpeg, image/png",
        f"{RAW}, application/pdf; q=0.2",
    ],
)
def test_retrieve_frames_bulkdata_and_rendered_types_mixed_400(
    context: Context, accept: str
) -> None:
    """PS3.18 §8.7.5: one Accept names DICOM or rendered media types, not both; the first case
    was a 200 (text/html ignored) before, which the standard does not allow."""
    [(_, result)] = store_all(context, [TESTDATA / J50])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
    assert answer.status_code == 400
    assert "§8.7.5" in answer.json_body["Message"]


@pytest.mark.parametrize("accept", ["image/png", 'multipart/related; type="image/gif"'])
def test_retrieve_frames_rendered_types_only_406(context: Context, accept: str) -> None:
    [(_, result)] = store_all(context, [TESTDATA / J50])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
    assert answer.status_code == 406
    assert "/rendered" in answer.json_body["Message"]


# Each was a 500: numpy's TypeError ('<u0') or ValueError (reshape) unhandled.
@pytest.mark.parametrize(
    "attributes",
    [
        {"BitsAllocated": 12, "BitsStored": 12, "HighBit": 11, "PixelData": bytes(6)},
        {"BitsAllocated": 0, "BitsStored": 0, "HighBit": 0, "PixelData": b""},
    ],
    ids=["bits-allocated-12", "bits-allocated-0"],
)
def test_retrieve_frames_unusable_native_pixel_module_406(
    tmp_path: Path, attributes: dict[str, Any]
) -> None:
    """Transcoding them is refused; as stored (`RAW`) they are still answered."""
    context = make_context("local", tmp_path)
    result = store_instance(context, tiny_image(**attributes))
    assert result.status == "stored", result.message
    with Client(create_app(lambda: context)) as client:
        for path in ("/frames/1", "/bulk/7FE00010"):
            answer = get(
                client, instance_path(result) + path, 'multipart/related; type="image/jp2"'
            )
            assert answer.status_code == 406, (path, answer.body)
            assert "transfer-syntax=*" in answer.json_body["Message"]
            assert get(client, instance_path(result) + path, RAW).status_code == 200


def test_retrieve_frames_bare_bitstream_type_is_one_frame_only(context: Context) -> None:
    """A bare image/jpeg is the stored bitstream (Bulkdata Media Type), single part: one frame
    (PS3.18 §10.4.4: single part types are ignored for several items, then 406)."""
    [(_, result)] = store_all(context, [TESTDATA / "LenaTwiceWithFragments.dcm"])
    with Client(create_app(lambda: context)) as client:
        one = get(client, f"{instance_path(result)}/frames/2", "image/jpeg")
        both = get(client, f"{instance_path(result)}/frames/1,2", "image/jpeg")
        parts = parts_of(get(client, f"{instance_path(result)}/frames/2", STORED))
    assert one.status_code == 200
    assert one.headers["Content-Type"].startswith("image/jpeg; transfer-syntax=")
    assert one.body == parts[0][1]
    assert both.status_code == 406


@pytest.mark.parametrize("syntax", pixels.ENCODABLE_SYNTAXES)
@pytest.mark.parametrize(
    "name",
    [
        J50,
        "KarstenHilbertRF.dcm",
        "LenaTwiceWithFragments.dcm",
        "TransferSyntaxes/1.2.840.10008.1.2.2.dcm",
    ],
)
def test_retrieve_frames_transcoded_are_pixel_exact(
    context: Context, name: str, syntax: str
) -> None:
    [(path, result)] = store_all(context, [TESTDATA / name])
    record = context.index.get_instance(
        result.study_uid, result.series_uid, result.sop_instance_uid
    )
    ds, _ = reference_frames(path.read_bytes(), record.transfer_syntax_uid)
    expected = ds.pixel_array
    media = pixels.SYNTAX_MEDIA_TYPES[syntax]
    accept = f'multipart/related; type="{media}"; transfer-syntax={syntax}'
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
    assert answer.status_code == 200, answer.body[:300]
    [(headers, body)] = parts_of(answer)
    assert headers["content-type"] == f"{media}; transfer-syntax={syntax}"
    frame = expected[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else expected
    samples = 3 if frame.ndim == 3 else 1
    photometric = "RGB" if samples == 3 else ds.PhotometricInterpretation
    decoded, _ = get_decoder(syntax).as_array(
        pixels_encapsulated(body),
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=samples,
        bits_allocated=ds.BitsAllocated,
        bits_stored=ds.BitsStored,
        pixel_representation=ds.PixelRepresentation,
        photometric_interpretation=photometric,
        planar_configuration=0,
        number_of_frames=1,
        pixel_keyword="PixelData",
    )
    assert np.array_equal(decoded, frame)


def pixels_encapsulated(bitstream: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    return encapsulate([bitstream])


def multiframe_instance(frames: int = 40, rows: int = 256, columns: int = 256) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(frames * rows * columns) % 65536).astype("<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_retrieve_frames_single_frame_reads_only_its_bytes(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes-read evidence: one frame of a 5.2 MB instance is one range read of 131,072 B."""
    base = make_context(backend, tmp_path)
    data = multiframe_instance()
    result = store_instance(base, data)
    counting = CountingBlobs(base.blobs)
    context = dataclasses.replace(base, blobs=counting)
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/7", RAW)
    [(_, body)] = parts_of(answer)
    frame_length = 256 * 256 * 2
    assert body == (np.arange(6 * 65536, 7 * 65536) % 65536).astype("<u2").tobytes()
    assert counting.gets == []
    assert len(counting.ranges) == 1
    assert counting.ranges[0][2] == frame_length
    with capsys.disabled():
        print(
            f"\n[{backend}] frames/7 of a {len(data):,} B instance: range reads "
            f"{[(s, n) for _, s, n in counting.ranges]}, whole reads {counting.gets}"
        )


# Issue 11: str.isdigit() accepts "²", which int() refuses (500), and int() reads "٣" as 3.
@pytest.mark.parametrize("text", ["²", "1,٣"], ids=["superscript", "arabic-indic"])
def test_parse_frame_list_ascii_digits_only(text: str) -> None:
    from chalicelib.errors import BadRequest
    from chalicelib.server.frames import parse_frame_list

    with pytest.raises(BadRequest, match="is not a frame number"):
        parse_frame_list(text, 1000)


def test_retrieve_frames_of_deflated_instance(context: Context) -> None:
    """Deflated Explicit VR Little Endian: frames are cut from the inflated dataset and sent
    like any native frame; rendered and bulk Pixel Data work too (they answered 404 and 406)."""
    path = Path(get_testdata_file("image_dfl.dcm"))
    [(_, result)] = store_all(context, [path])
    expected = dcmread(path).pixel_array.tobytes()
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", RAW)
        stored = get(client, f"{instance_path(result)}/frames/1", STORED)
        rendered = get(client, f"{instance_path(result)}/frames/1/rendered", "image/png")
        bulk = get(client, f"{instance_path(result)}/bulk/7FE00010", "application/octet-stream")
    ((headers, body),) = parts_of(answer)
    assert headers["content-type"] == (
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    )
    assert body == expected
    assert parts_of(stored)[0][1] == expected
    assert rendered.status_code == 200 and rendered.headers["Content-Type"] == "image/png"
    assert bulk.status_code == 200 and bulk.body == expected


def encapsulated_multiframe(frames: int) -> tuple[bytes, list[bytes]]:
    """A JPEG Baseline instance of `frames` tiny frames (distinct bitstreams) and its frames."""
    from pydicom.encaps import encapsulate

    bitstreams = [b"\xff\xd8" + n.to_bytes(4, "big") + b"\xff\xd9" for n in range(frames)]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1, 1, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(bitstreams, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), bitstreams


def test_retrieve_frames_of_3000_frame_instance(backend: str, tmp_path: Path) -> None:
    """Issue 11: the fragment table of thousands of frames lived in the index record, near
    DynamoDB's 400 KB item limit; a large table is a blob beside the instance."""
    context = make_context(backend, tmp_path)
    data, bitstreams = encapsulated_multiframe(3000)
    result = store_instance(context, data)
    assert result.status == "stored", result.message
    record = context.index.find_instance(result.sop_instance_uid)
    assert "frames" not in record.pixel and record.pixel["frame_total"] == 3000
    assert len(json.dumps(record.pixel)) < 1000
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1,1500,3000", STORED)
        assert answer.status_code == 200
        assert [body for _, body in parts_of(answer)] == [
            bitstreams[0],
            bitstreams[1499],
            bitstreams[2999],
        ]
        beyond = get(client, f"{instance_path(result)}/frames/3001", STORED)
        assert beyond.status_code == 400
        assert client.http.delete(f"/dicom-web/studies/{result.study_uid}").status_code == 204
    assert not context.blobs.exists(record.pixel["frames_key"])


J70 = "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("*/*", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
        ("", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
        ("multipart/related", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
        ("multipart/*", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
        (
            'multipart/related; type="*/*"',
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        ),
        ("image/*", "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"),
        (
            'multipart/related; type="image/jpeg"',
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70",
        ),
        (STORED, "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.70"),
        (
            "multipart/related; transfer-syntax=*",
            "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70",
        ),
    ],
)
def test_retrieve_frames_default_of_a_lossless_frame_is_explicit_vr_little_endian(
    context: Context, accept: str, content_type: str
) -> None:
    """PS3.18 §8.7.3.3 (Bulkdata Media Types, 2025b): "If no media type Transfer Syntax
    parameter is specified, then the Explicit VR Little Endian Transfer Syntax shall be used,
    unless the origin server has only access to the pixel data in lossy compressed form". A
    JPEG Lossless frame asked for with no type and no transfer syntax is raw pixels (`*/*`
    gave it as stored); one that names its media type or `transfer-syntax=*` gets it as
    stored. The raw pixels are the decoded stored frame."""
    [(_, result)] = store_all(context, [TESTDATA / J70])
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{instance_path(result)}/frames/1", accept)
        stored = get(client, f"{instance_path(result)}/frames/1", STORED)
    assert answer.status_code == 200, answer.body[:300]
    [(headers, body)] = parts_of(answer)
    assert headers["content-type"] == content_type
    if "1.2.840.10008.1.2.1" in content_type:
        ds = dcmread(TESTDATA / J70)
        assert body == ds.pixel_array.tobytes()
    else:
        assert body == parts_of(stored)[0][1]


def issue164_with_frame_2_unreadable() -> tuple[CorpusFile, bytes, list[bytes]]:
    """Issue164.dcm (JPEG Baseline, 87 frames) with 0xFF written over frame 2's bitstream
    (a copy), and its frames as stored."""
    item = next(f for f in storable() if f.name == "Issue164.dcm")
    ds = dcmread(io.BytesIO(item.data))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    start = item.data.index(frames[1])
    data = item.data[:start] + b"\xff" * len(frames[1]) + item.data[start + len(frames[1]) :]
    return item, data, [frames[0], b"\xff" * len(frames[1])]


ELE_FRAMES = f"{RAW}; transfer-syntax={ExplicitVRLittleEndian}"


def _corpus_path(item: CorpusFile) -> str:
    return f"/dicom-web/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"


def _assert_unreadable_frame_as_stored(status: int, content_type: str, body: bytes) -> None:
    """Frames 1 and 2: frame 1 decoded, frame 2 (which cannot be) as stored, its part's
    Content-Type naming JPEG Baseline."""
    assert status == 200, body[:300]
    assert content_type.startswith(RAW)
    # the parts' transfer syntaxes differ: the outer header names none (PS3.18 §8.7.3.4)
    assert "transfer-syntax" not in content_type
    answer = SimpleNamespace(headers={"Content-Type": content_type}, body=body)
    (first, decoded), (second, stored) = parts_of(answer)
    assert (
        first["content-type"]
        == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert len(decoded) == 743 * 975 * 3
    assert (
        second["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    )
    assert second["content-location"].endswith("/frames/2")
    assert stored == b"\xff" * len(stored) and stored


def test_retrieve_frames_one_unreadable_on_the_local_server(tmp_path: Path) -> None:
    """`make run`'s server: frames 1,2 where frame 2 cannot be decoded broke off the streamed
    answer after frame 1 (frames 2,1 was a 406). Now frame 2 goes as stored when the Accept
    names no transfer syntax; naming Explicit VR Little Endian, it is left out as a later part
    (`StreamedMultipart`) and a 406 as the first."""
    import requests

    from tests.server.test_localserver import in_process_server

    item, data, _ = issue164_with_frame_2_unreadable()
    assert store_instance(make_context("local", tmp_path), data).status == "stored"
    with in_process_server(tmp_path / "data", 30.0) as url:
        path = f"{url}{_corpus_path(item)}/frames/"
        for frames in ("1,2", "2,1"):
            answer = requests.get(path + frames, headers={"Accept": RAW}, timeout=60)
            if frames == "1,2":
                _assert_unreadable_frame_as_stored(
                    answer.status_code, answer.headers["Content-Type"], answer.content
                )
            else:
                assert answer.status_code == 200
            strict = requests.get(path + frames, headers={"Accept": ELE_FRAMES}, timeout=60)
            if frames == "1,2":
                assert strict.status_code == 200, strict.text[:300]
                joined = SimpleNamespace(headers=strict.headers, body=strict.content)
                ((headers, _),) = parts_of(joined)
                assert headers["content-location"].endswith("/frames/1")
            else:
                assert strict.status_code == 406, strict.text[:300]
                assert "frame 2 of instance" in strict.json()["Message"]


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
def test_retrieve_frames_one_unreadable_on_lambda(backend: str, tmp_path: Path) -> None:
    """The same through API Gateway events (the answer joined in `deliver`): it was a 406
    for the whole answer. (Pixel Data as bulkdata sends its frames the same way.)"""
    import base64

    from tests.apigateway import api_gateway_event

    item, data, _ = issue164_with_frame_2_unreadable()
    base = make_context(backend, tmp_path)
    assert store_instance(base, data).status == "stored"
    app = create_app(lambda: base)
    resource = "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
    params = {"study": item.study_uid, "series": item.series_uid, "instance": item.sop_uid}

    def frames(numbers: str, accept: str) -> dict[str, Any]:
        path = f"{_corpus_path(item)}/frames/{numbers}"
        headers = {"Host": HOST, "Accept": accept}
        event = api_gateway_event(
            "GET", path, resource, {**params, "frames": numbers}, headers, None
        )
        return app(event, None)

    answer = frames("1,2", RAW)
    _assert_unreadable_frame_as_stored(
        answer["statusCode"], answer["headers"]["Content-Type"], base64.b64decode(answer["body"])
    )
    strict = frames("1,2", ELE_FRAMES)
    assert strict["statusCode"] == 200
    assert "frame 2 of instance" in strict["headers"]["Warning"]
    joined = SimpleNamespace(headers=strict["headers"], body=base64.b64decode(strict["body"]))
    ((headers, _),) = parts_of(joined)
    assert headers["content-location"].endswith("/frames/1")
    assert frames("2,1", ELE_FRAMES)["statusCode"] == 406


def test_retrieve_frames_one_unreadable_lossless_frame_is_not_sent_as_stored(
    context: Context,
) -> None:
    """SC_rgb_rle_2frame.dcm (RLE Lossless) with 0xFF over frame 2 (a copy), asked for with
    no transfer syntax: PS3.18 §8.7.3.3 (Bulkdata Media Types, 2025b) allows a stored form
    instead of Explicit VR Little Endian only when "the origin server has only access to the
    pixel data in lossy compressed form", which a lossless source is not. So frame 2 is left
    out as a later part (named in the Warning) and a 406 as the first, never sent as RLE;
    the outer Content-Type keeps transfer-syntax, as every part has it."""
    item = next(f for f in storable() if f.name == "SC_rgb_rle_2frame.dcm")
    ds = dcmread(io.BytesIO(item.data))
    _, second = generate_frames(ds.PixelData, number_of_frames=2)
    start = item.data.index(second)
    data = item.data[:start] + b"\xff" * len(second) + item.data[start + len(second) :]
    assert store_instance(context, data).status == "stored"
    with Client(create_app(lambda: context)) as client:
        answer = get(client, f"{_corpus_path(item)}/frames/1,2", RAW)
        first_unreadable = get(client, f"{_corpus_path(item)}/frames/2,1", RAW)
    assert answer.status_code == 200, answer.body[:300]
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in answer.headers["Content-Type"]
    assert "frame 2 of instance" in answer.headers["Warning"]
    ((headers, body),) = parts_of(answer)
    assert headers["content-location"].endswith("/frames/1")
    assert (
        headers["content-type"]
        == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert body == ds.pixel_array[0].tobytes()
    assert first_unreadable.status_code == 406, first_unreadable.body[:300]
