"""Header parsing at ingest: UIDs, transfer syntax, pixel data location, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from chalice.test import Client
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from chalicelib.dicom.parse import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    MissingAttribute,
    UnreadableInstance,
    parse_instance,
)
from tests.conftest import testdata
from tests.corpus import orthanc_files
from tests.server.helpers import json_of, stow, values


def test_parse_instance_native_frame_location() -> None:
    data = testdata("2020-08-12-Christopher.dcm").read_bytes()
    parsed = parse_instance(data)
    assert parsed.study_uid == "1.2.840.113704.9.1000.16.0.20190613103939444"
    pixel = parsed.pixel
    assert pixel["encapsulated"] is False
    assert pixel["frame_length"] == 512 * 512 * 2
    expected = dcmread(io.BytesIO(data)).PixelData
    assert data[pixel["offset"] : pixel["offset"] + pixel["length"]] == expected


@pytest.mark.parametrize(
    "name",
    ["LenaTwiceWithFragments.dcm", "Issue164.dcm", "TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm"],
)
def test_parse_instance_encapsulated_frames_equal_pydicom(name: str) -> None:
    data = testdata(name).read_bytes()
    parsed = parse_instance(data)
    ds = dcmread(io.BytesIO(data))
    expected = list(
        generate_frames(ds.PixelData, number_of_frames=parsed.pixel["number_of_frames"])
    )
    frames = [b"".join(data[o : o + n] for o, n in frame) for frame in parsed.pixel["frames"]]
    assert len(frames) == len(expected)
    assert [f.rstrip(b"\0") for f in frames] == [f.rstrip(b"\0") for f in expected]


def test_parse_instance_headerless_implicit() -> None:
    parsed = parse_instance(testdata("TransferSyntaxes/1.2.840.10008.1.2.dcm").read_bytes())
    assert parsed.has_file_meta is False
    assert parsed.transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN


def test_parse_instance_missing_sop_class() -> None:
    with pytest.raises(MissingAttribute, match="SOPClassUID"):
        parse_instance(testdata("Issue111.dcm").read_bytes())


@pytest.mark.parametrize("data", [b"", b"hello", b"\0" * 132, b"\0" * 128 + b"DICM"])
def test_parse_instance_not_dicom(data: bytes) -> None:
    with pytest.raises((UnreadableInstance, MissingAttribute)):
        parse_instance(data)


def test_parse_instance_truncated() -> None:
    data = testdata("LenaTwiceWithFragments.dcm").read_bytes()
    with pytest.raises(UnreadableInstance):
        parse_instance(data[:-5000])


def _element_offset(data: bytes, keyword: str) -> int:
    """Where the value of `keyword` starts in `data` (explicit VR little endian files)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    header = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
    position = data.index(header)
    return position + (12 if data[position + 4 : position + 6] in (b"OB", b"OW") else 8)


# Issue 11: the UIDs were read before the truncation check, so a cut 6 bytes into
# SeriesInstanceUID stored the instance under series "1.2.82"; a cut inside the Pixel Data
# element header stored it without pixels.
@pytest.mark.parametrize(
    ("keyword", "into"), [("SeriesInstanceUID", 6), ("PixelData", -6), ("PixelData", -2)]
)
def test_parse_instance_truncated_inside_element(keyword: str, into: int) -> None:
    data = testdata("2020-08-12-Christopher.dcm").read_bytes()
    with pytest.raises(UnreadableInstance, match="truncated"):
        parse_instance(data[: _element_offset(data, keyword) + into])


def test_parse_instance_truncated_only_at_element_boundaries() -> None:
    """A cut of the header (or of the first pixel bytes) is refused unless it falls between two
    elements, where the rest is a valid dataset (issue 11: 327 of 572 cuts were stored)."""
    data = testdata("2020-08-12-Christopher.dcm").read_bytes()
    end = _element_offset(data, "PixelData") + 64
    full = dcmread(io.BytesIO(data), defer_size=0)
    boundaries = {r.value_tell + r.length for r in full._dict.values() if hasattr(r, "value_tell")}
    accepted = []
    for size in range(132, end):
        try:
            parse_instance(data[:size])
        except (UnreadableInstance, MissingAttribute):
            continue
        accepted.append(size)
        assert size in boundaries, f"a cut at {size} inside an element was accepted"
    assert 0 < len(accepted) < 200


def test_parse_instance_trailing_bytes_refused() -> None:
    data = testdata("2020-08-12-Christopher.dcm").read_bytes()
    with pytest.raises(UnreadableInstance, match="truncated"):
        parse_instance(data + b"\x08\x00")


def _rewritten(name: str, **attributes: object) -> bytes:
    ds = dcmread(io.BytesIO(testdata(name).read_bytes()))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_parse_instance_refuses_a_pixel_attribute_of_unknown_vr() -> None:
    """Rows with a VR pydicom does not know made pydicom's conversion raise
    NotImplementedError out of ingest: the whole STOW request failed."""
    data = bytearray(testdata("MultiframeWindowing.dcm").read_bytes())
    rows = data.find(b"\x28\x00\x10\x00US")
    data[rows + 4 : rows + 6] = b"XX"
    with pytest.raises(UnreadableInstance, match=r"\(0028,0010\) cannot be read"):
        parse_instance(bytes(data))


# Issue 11: inconsistent Pixel Data was stored, and later reads answered 500.
def test_parse_instance_native_pixel_data_too_short() -> None:
    data = _rewritten("2020-08-12-Christopher.dcm", PixelData=b"\0" * 100)
    with pytest.raises(UnreadableInstance, match=r"has 100 bytes.* needs 524288"):
        parse_instance(data)


def test_parse_instance_more_frames_than_pixel_data() -> None:
    data = _rewritten("2020-08-12-Christopher.dcm", NumberOfFrames=1000)
    with pytest.raises(UnreadableInstance, match="NumberOfFrames 1000 needs"):
        parse_instance(data)


def test_parse_instance_more_frames_than_fragments() -> None:
    data = _rewritten("LenaTwiceWithFragments.dcm", NumberOfFrames=1000)
    with pytest.raises(UnreadableInstance, match="NumberOfFrames is 1000"):
        parse_instance(data)


def test_parse_instance_ybr_full_422_frame_length() -> None:
    data = open(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"), "rb").read()  # noqa: SIM115
    assert parse_instance(data).pixel["frame_length"] == 100 * 100 * 2


def _pydicom_int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword, default)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


# pydicom's truncated files, which it reads leniently and parsing refuses.
_TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm"}


def test_parse_instance_reads_uids_and_pixel_attributes_as_pydicom_does() -> None:
    """The UIDs and pixel attributes that parsing reads from the raw bytes (explicit and
    implicit VR, little and big endian, deflated) are pydicom's values, over the corpus.
    Only files pydicom gives no SOP UIDs for, and the named truncated ones, are refused."""
    compared = set()
    for path in [*orthanc_files(), *map(Path, get_testdata_files("*.dcm"))]:
        data = path.read_bytes()
        ds = dcmread(io.BytesIO(data), force=True)
        if path.name in _TRUNCATED:
            with pytest.raises(UnreadableInstance, match="truncated"):
                parse_instance(data)
            continue
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            with pytest.raises((UnreadableInstance, MissingAttribute)):
                parse_instance(data)
            continue
        parsed = parse_instance(data)
        uids = [
            str(ds.get(k, "")).strip("\0 ")
            for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        ]
        assert [
            parsed.sop_class_uid,
            parsed.sop_instance_uid,
            parsed.study_uid,
            parsed.series_uid,
        ] == uids, path
        if parsed.pixel:
            pixel = parsed.pixel
            expected = [
                _pydicom_int(ds, "Rows", 0),
                _pydicom_int(ds, "Columns", 0),
                _pydicom_int(ds, "SamplesPerPixel", 1),
                _pydicom_int(ds, "BitsAllocated", 8),
                max(_pydicom_int(ds, "NumberOfFrames", 1), 1),
            ]
            assert [
                pixel["rows"],
                pixel["columns"],
                pixel["samples_per_pixel"],
                pixel["bits_allocated"],
                pixel["number_of_frames"],
            ] == expected, path
        compared.add(parsed.transfer_syntax_uid)
    assert {IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"} <= compared


def test_parse_instance_reads_number_of_frames_of_implicit_vr_as_text() -> None:
    """NumberOfFrames (0028,0008) is IS, text even in implicit VR: pydicom's rtdose.dcm
    (implicit VR little endian) has "15" frames of 10 × 10 × 32 bits."""
    data = Path(get_testdata_file("rtdose.dcm")).read_bytes()
    pixel = parse_instance(data).pixel
    assert pixel["number_of_frames"] == 15
    assert pixel["frame_length"] * 15 == pixel["length"] == 6000


def test_parse_instance_reads_one_frame_of_implicit_vr() -> None:
    ds = dcmread(get_testdata_file("MR_small_implicit.dcm"))
    ds.NumberOfFrames = 1
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert dcmread(io.BytesIO(out.getvalue())).file_meta.TransferSyntaxUID == (
        IMPLICIT_VR_LITTLE_ENDIAN
    )
    assert parse_instance(out.getvalue()).pixel["number_of_frames"] == 1


def test_store_instances_of_implicit_vr_multi_frame(client: Client) -> None:
    data = Path(get_testdata_file("rtdose.dcm")).read_bytes()
    response = stow(client, data)
    assert response.status_code == 200, response.body
    body = json_of(response)
    (item,) = values(body, "00081199")
    assert values(item, "00081155") == [dcmread(io.BytesIO(data)).SOPInstanceUID]
    assert "00081198" not in body
