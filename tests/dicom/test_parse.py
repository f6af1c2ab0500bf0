"""Header parsing at ingest: UIDs, transfer syntax, pixel data location, refusals."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames

from chalicelib.dicom.parse import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    MissingAttribute,
    UnreadableInstance,
    parse_instance,
)
from tests.conftest import testdata


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
