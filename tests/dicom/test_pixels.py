"""Unit tests of chalicelib/dicom/pixels.py: frames cut from bytes, decoded, re-encoded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from chalicelib.dicom import pixels
from chalicelib.dicom.encoding import swap_words
from chalicelib.dicom.parse import parse_instance
from tests.conftest import testdata


def _native(frame_bits: int, frames: int, offset: int = 100, vr: str = "OB", bits: int = 8):
    length = -(-frame_bits * frames // 8)
    return {
        "offset": offset,
        "length": length + length % 2,
        "vr": vr,
        "bits_allocated": bits,
        "frame_bits": frame_bits,
        "frame_length": frame_bits // 8 if frame_bits % 8 == 0 else 0,
        "number_of_frames": frames,
    }


def _cut(data: bytes, pixel: dict, number: int, big: bool = False) -> bytes:
    start, length = pixels.native_frame_span(pixel, number, big)
    return pixels.native_frame(data[start : start + length], pixel, number, big)


def test_native_frame_odd_length_frames() -> None:
    values = bytes(range(27)) + b"\0"  # 3 frames of 3x3 8-bit, padded to even
    data = b"\xee" * 100 + values
    pixel = _native(72, 3)
    assert [_cut(data, pixel, n) for n in (1, 2, 3)] == [values[0:9], values[9:18], values[18:27]]


def test_native_frame_bit_packed_frames_start_inside_a_byte() -> None:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, size=3 * 5 * 5, dtype=np.uint8)  # 3 frames of 5x5 1-bit
    packed = np.packbits(bits, bitorder="little").tobytes()
    data = b"\xee" * 100 + packed
    pixel = _native(25, 3, bits=1)
    for number in (1, 2, 3):
        frame = _cut(data, pixel, number)
        expected = bits[(number - 1) * 25 : number * 25]
        assert np.array_equal(
            np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")[:25], expected
        )
        assert len(frame) == 4


def test_native_frame_big_endian_words_are_swapped() -> None:
    values = np.arange(12, dtype=">u2")  # 3 frames of 2x2 16-bit, big endian
    data = b"\xee" * 100 + values.tobytes()
    pixel = _native(64, 3, vr="OW", bits=16)
    assert _cut(data, pixel, 2, big=True) == np.arange(4, 8, dtype="<u2").tobytes()


def test_native_frame_big_endian_ow_8_bit_odd_frame_start() -> None:
    # PS3.5 §8.1.1: 8-bit OW in big endian is stored as swapped 16-bit words.
    values = bytes(range(27)) + b"\0"
    swapped = swap_words(values, 2)
    data = b"\xee" * 100 + swapped
    pixel = _native(72, 3, vr="OW", bits=8)
    assert _cut(data, pixel, 2, big=True) == values[9:18]


def test_join_fragments_strips_item_tags() -> None:
    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")  # a single-frame JPEG
    data = Path(path).read_bytes()
    parsed = parse_instance(data)
    fragments = parsed.pixel["frames"][0]
    start, length = pixels.fragments_span(fragments)
    stored = pixels.join_fragments(data[start : start + length], fragments)
    ds = dcmread(io.BytesIO(data))
    assert stored == next(generate_frames(ds.PixelData, number_of_frames=1))


@pytest.mark.parametrize("syntax", pixels.ENCODABLE_SYNTAXES)
def test_encode_frame_round_trip_is_pixel_exact(syntax: str) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    module = pixels.PixelModule(
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=ds.BitsStored,
        pixel_representation=ds.PixelRepresentation,
        photometric_interpretation="MONOCHROME2",
        planar_configuration=0,
        number_of_frames=1,
    )
    array = pixels.native_array(ds.PixelData, module)
    encoded = pixels.encode_frame(array, module, "MONOCHROME2", syntax)
    decoded, photometric = pixels.decode_frame(encoded, syntax, module)
    assert photometric == "MONOCHROME2"
    assert pixels.array_bytes(decoded) == ds.PixelData


def test_decode_frame_ybr_jpeg_gives_rgb_interleaved() -> None:
    path = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")
    data = Path(path).read_bytes()
    ds = dcmread(io.BytesIO(data))
    pixel = parse_instance(data).pixel
    document = {"00280004": {"vr": "CS", "Value": [ds.PhotometricInterpretation]}}
    module = pixels.PixelModule.from_json(pixel, document)
    bitstream = next(generate_frames(ds.PixelData, number_of_frames=1))
    array, photometric = pixels.decode_frame(bitstream, ds.file_meta.TransferSyntaxUID, module)
    assert photometric == "RGB"
    assert array.shape == (ds.Rows, ds.Columns, 3)
    assert np.array_equal(array, ds.pixel_array)


def test_decode_frame_garbage_raises_pixel_error() -> None:
    module = pixels.PixelModule(8, 8, 1, 8, 8, 0, "MONOCHROME2", 0, 1)
    with pytest.raises(pixels.PixelError, match="cannot decode"):
        pixels.decode_frame(b"\xff\xd8garbage", "1.2.840.10008.1.2.4.50", module)


@pytest.mark.parametrize(
    ("bits_allocated", "size", "message"),
    [
        (1, 8, r"^bit-packed \(BitsAllocated 1\) frames cannot be read as an array$"),
        (12, 96, r"^BitsAllocated 12 is not a whole number .* cannot be read as an array$"),
        (8, 63, r"^the frame has 63 bytes, not Rows 8 × Columns 8 .* cannot be read as an array$"),
    ],
    ids=["bit-packed", "bits-allocated-12", "short"],
)
def test_native_array_refusals_name_the_attribute(
    bits_allocated: int, size: int, message: str
) -> None:
    """The messages say what fails (reading the bytes), true for a render and a transcode."""
    module = pixels.PixelModule(8, 8, 1, bits_allocated, bits_allocated, 0, "MONOCHROME2", 0, 1)
    with pytest.raises(pixels.PixelError, match=message):
        pixels.native_array(b"\0" * size, module)


def test_decode_frame_12_bit_jpeg_extended_through_gdcm() -> None:
    """pylibjpeg and pydicom's own GDCM plugin refuse this frame; `gdcm_plugin` decodes it."""
    data = testdata("TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm").read_bytes()
    parsed = parse_instance(data)
    (fragments,) = parsed.pixel["frames"]
    start, length = pixels.fragments_span(fragments)
    bitstream = pixels.join_fragments(data[start : start + length], fragments)
    module = pixels.PixelModule.from_json(parsed.pixel, {"00280101": {"Value": [12]}})
    array, photometric = pixels.decode_frame(bitstream, parsed.transfer_syntax_uid, module)
    assert array.shape == (512, 512) and photometric == "MONOCHROME2"
    assert 3000 < int(array.max()) < 4096
