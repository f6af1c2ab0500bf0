"""Frames from stored bytes: cut, decode to raw little-endian pixels, re-encode.

Pure functions over bytes and the Pixel Data facts that `parse.locate_pixel_data` recorded at
ingest, so that a frame is one range read of the stored file (PS3.18 §10.4.1.1.4, Retrieve
Frames, 2025b). numpy and pydicom's pixel plugins are imported inside the functions that
decode or encode (STYLE.md rule 4): cutting a frame costs no import.

Media types of the compressed transfer syntaxes are those of PS3.18 Table 8.7.3-5 (2025b).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.dicom import gdcm_plugin
from chalicelib.dicom.encoding import (
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    pixel_word_size,
    swap_words,
)

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset


SYNTAX_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
"""Media type of a frame's bitstream in each encapsulated transfer syntax."""

ENCODABLE_SYNTAXES = (RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS)
"""Lossless syntaxes pydicom's encoder plugins write (RLE natively, pyjpegls, openjpeg)."""


_OPENJPEG_ENCODER = threading.Lock()


def one_encoder_at_a_time(transfer_syntax: str) -> contextlib.AbstractContextManager[Any]:
    """Held around an encode to `transfer_syntax`: pylibjpeg-openjpeg's JPEG 2000 encoder
    (2.6.0) crashes the whole process, a segmentation fault, when two threads encode at once
    (two concurrent series retrieves as JPEG 2000 did), so those encodes run one at a time;
    RLE and JPEG-LS encoders, and every decoder, run concurrently."""
    return _OPENJPEG_ENCODER if transfer_syntax == JPEG_2000_LOSSLESS else contextlib.nullcontext()


_MODULE_TAGS = {
    "BitsStored": "00280101",
    "PixelRepresentation": "00280103",
    "PhotometricInterpretation": "00280004",
    "PlanarConfiguration": "00280006",
}
"""Tags of the Image Pixel Module attributes that ingest's Pixel Data facts leave out."""


class PixelError(ValueError):
    """A frame cannot be cut, decoded or encoded as asked; the message says why."""


@dataclass
class PixelModule:
    """The Image Pixel Module attributes a codec needs (PS3.3 §C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int

    @classmethod
    def from_json(cls, pixel: dict[str, Any], document: dict[str, Any]) -> PixelModule:
        """From ingest's Pixel Data facts and the instance's DICOM JSON metadata."""

        def value(keyword: str, default: Any) -> Any:
            values = document.get(_MODULE_TAGS[keyword], {}).get("Value") or [default]
            return values[0] if values[0] is not None else default

        return cls._with(
            value,
            rows=pixel["rows"],
            columns=pixel["columns"],
            samples_per_pixel=pixel["samples_per_pixel"],
            bits_allocated=pixel["bits_allocated"],
            number_of_frames=pixel["number_of_frames"],
        )

    @classmethod
    def from_dataset(cls, ds: Dataset) -> PixelModule:
        """From a dataset's Image Pixel Module (its header is enough); one frame."""

        def value(keyword: str, default: Any) -> Any:
            found = ds.get(keyword)
            return default if found is None or found == "" else found

        return cls._with(
            value,
            rows=int(value("Rows", 0)),
            columns=int(value("Columns", 0)),
            samples_per_pixel=int(value("SamplesPerPixel", 1)),
            bits_allocated=int(value("BitsAllocated", 8)),
            number_of_frames=1,
        )

    @classmethod
    def _with(cls, value: Callable[[str, Any], Any], **facts: int) -> PixelModule:
        """The module of `facts`, its other attributes read by `value(keyword, default)`."""
        return cls(
            **facts,
            bits_stored=int(value("BitsStored", facts["bits_allocated"])),
            pixel_representation=int(value("PixelRepresentation", 0)),
            photometric_interpretation=str(value("PhotometricInterpretation", "MONOCHROME2")),
            planar_configuration=int(value("PlanarConfiguration", 0)),
        )

    def options(self) -> dict[str, Any]:
        options = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric_interpretation,
            "number_of_frames": 1,
        }
        if self.samples_per_pixel > 1:
            options["planar_configuration"] = self.planar_configuration
        return options


def frame_count(pixel: dict[str, Any]) -> int:
    if pixel.get("encapsulated"):
        return pixel.get("frame_total") or len(pixel.get("frames") or [])
    return int(pixel.get("number_of_frames") or 1)


def _word_size(pixel: dict[str, Any], big_endian: bool) -> int:
    return pixel_word_size(pixel.get("vr", ""), pixel.get("bits_allocated", 8)) if big_endian else 1


def native_frame_span(pixel: dict[str, Any], number: int, big_endian: bool) -> tuple[int, int]:
    """(start, length) of the stored bytes that hold native frame `number` (1-based).

    Bit-packed frames (BitsAllocated 1) may start inside a byte; big-endian words are read
    whole so that they can be swapped.
    """
    bits = pixel["frame_bits"]
    first_bit = (number - 1) * bits
    start = first_bit // 8
    end = -(-(first_bit + bits) // 8)
    word = _word_size(pixel, big_endian)
    start -= start % word
    end += -end % word
    end = min(end, pixel["length"])
    return pixel["offset"] + start, end - start


def native_frame(chunk: bytes, pixel: dict[str, Any], number: int, big_endian: bool) -> bytes:
    """Frame `number` as Explicit VR Little Endian pixel bytes, from the span's bytes.

    A bit-packed frame is shifted to start at bit 0 (PS3.5 §8.1.1: the first pixel is the
    least significant bit) and padded to a whole byte.
    """
    bits = pixel["frame_bits"]
    first_bit = (number - 1) * bits
    span_start, _ = native_frame_span(pixel, number, big_endian)
    skip = first_bit // 8 - (span_start - pixel["offset"])
    word = _word_size(pixel, big_endian)
    if word > 1:
        chunk = swap_words(chunk[: len(chunk) - len(chunk) % word], word)
    if bits % 8 == 0:
        return chunk[skip : skip + bits // 8]
    import numpy as np

    unpacked = np.unpackbits(np.frombuffer(chunk, np.uint8), bitorder="little")
    offset = skip * 8 + first_bit % 8
    return np.packbits(unpacked[offset : offset + bits], bitorder="little").tobytes()


def stored_frame(
    pixel: dict[str, Any],
    number: int,
    big_endian: bool,
    fragments: list[list[int]] | None,
    read: Callable[[int, int], bytes],
) -> bytes:
    """Frame `number` as stored, from `read(start, length)` of the stored file: its native
    pixels in little endian, or the bitstream of its `fragments` (when encapsulated)."""
    if fragments is not None:
        start, length = fragments_span(fragments)
        return join_fragments(read(start, length), fragments)
    start, length = native_frame_span(pixel, number, big_endian)
    return native_frame(read(start, length), pixel, number, big_endian)


def fragments_span(fragments: list[list[int]]) -> tuple[int, int]:
    """(start, length) of one read covering a frame's fragments (and the item tags between)."""
    start = fragments[0][0]
    end = fragments[-1][0] + fragments[-1][1]
    return start, end - start


def join_fragments(chunk: bytes, fragments: list[list[int]]) -> bytes:
    """The frame's bitstream: its fragments' values without item tags (PS3.5 §A.4)."""
    base = fragments[0][0]
    return b"".join(chunk[o - base : o - base + n] for o, n in fragments)


def can_decode(transfer_syntax: str) -> bool:
    from pydicom.pixels import get_decoder

    gdcm_plugin.register()
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


def decode_frame(
    bitstream: bytes, transfer_syntax: str, module: PixelModule
) -> tuple[np.ndarray, str]:
    """One compressed frame decoded, and its Photometric Interpretation after decoding.

    YBR_FULL(_422) comes out as RGB, planar configuration 0; the array is (rows, columns)
    or (rows, columns, samples) in the native byte order.
    """
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    gdcm_plugin.register()
    try:
        decoder = get_decoder(transfer_syntax)
        array, facts = decoder.as_array(
            encapsulate([bitstream]),
            pixel_keyword="PixelData",
            as_rgb=True,
            **module.options(),
        )
    except Exception as exc:
        raise PixelError(f"cannot decode a frame stored as {transfer_syntax}: {exc}") from exc
    return array, str(facts.get("photometric_interpretation", module.photometric_interpretation))


def native_array(raw: bytes, module: PixelModule) -> np.ndarray:
    """A native frame's little-endian bytes as an array, planar configuration 0."""
    import numpy as np

    if module.bits_allocated == 1:
        raise PixelError("bit-packed (BitsAllocated 1) frames cannot be read as an array")
    if module.bits_allocated not in (8, 16, 32, 64):
        raise PixelError(
            f"BitsAllocated {module.bits_allocated} is not a whole number of bytes (8, 16, 32 "
            "or 64), so the frame cannot be read as an array"
        )
    kind = "i" if module.pixel_representation else "u"
    dtype = np.dtype(f"<{kind}{module.bits_allocated // 8}")
    spp, rows, columns = module.samples_per_pixel, module.rows, module.columns
    if len(raw) != rows * columns * spp * dtype.itemsize:
        raise PixelError(
            f"the frame has {len(raw)} bytes, not Rows {rows} × Columns {columns} × "
            f"SamplesPerPixel {spp} × {dtype.itemsize} bytes, so it cannot be read as an array"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if spp == 1:
        return array.reshape(rows, columns)
    if module.planar_configuration:
        return array.reshape(spp, rows, columns).transpose(1, 2, 0)
    return array.reshape(rows, columns, spp)


def array_bytes(array: np.ndarray) -> bytes:
    """Explicit VR Little Endian pixel bytes of an array (planar configuration 0)."""
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def encode_frame(
    array: np.ndarray, module: PixelModule, photometric: str, transfer_syntax: str
) -> bytes:
    """One frame encoded losslessly in `transfer_syntax` (one of ENCODABLE_SYNTAXES), as bytes
    (the JPEG-LS encoder returns a bytearray, which a single part answer cannot carry)."""
    from pydicom.pixels import get_encoder

    if transfer_syntax not in ENCODABLE_SYNTAXES:
        raise PixelError(f"frames cannot be encoded as {transfer_syntax}")
    options = module.options()
    options["photometric_interpretation"] = photometric
    options["planar_configuration"] = 0
    if transfer_syntax == JPEG_2000_LOSSLESS:
        options["use_mct"] = False
    try:
        with one_encoder_at_a_time(transfer_syntax):
            return bytes(get_encoder(transfer_syntax).encode(array, **options))
    except Exception as exc:
        raise PixelError(f"cannot encode the frame as {transfer_syntax}: {exc}") from exc
