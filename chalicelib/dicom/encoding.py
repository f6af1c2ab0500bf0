"""Transfer syntaxes and byte order: the UIDs the server treats specially, the word size of
each binary VR, and the one byte swap from big endian.

Transfer Syntax UIDs: PS3.6 Annex A (2025b); word sizes and byte ordering: PS3.5 §7.3 and
§8.1.1 (2025b). Pure and free of pydicom and numpy (STYLE.md rule 4).
"""

from __future__ import annotations

import struct
import zlib
from array import array

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"

NOT_FOR_WEB = (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)
"""PS3.18 §8.7.3 (2025b): these shall not be used with web services."""

WORD_SIZE = {
    "OB": 1, "UN": 1,
    "OW": 2, "US": 2, "SS": 2, "AT": 2,
    "OF": 4, "OL": 4, "FL": 4, "UL": 4, "SL": 4,
    "OD": 8, "OV": 8, "FD": 8, "SV": 8, "UV": 8,
}  # fmt: skip
"""Bytes per value of each binary VR: the unit a big-endian value is swapped in (PS3.5 §7.3)."""

OTHER_BINARY_VRS = frozenset(vr for vr in WORD_SIZE if vr.startswith("O") or vr == "UN")
"""The binary VRs whose value is a byte string (InlineBinary in the DICOM JSON Model)."""


def pixel_word_size(vr: str, bits_allocated: int) -> int:
    """The swap unit of Pixel Data: OW Pixel Data holds samples of Bits Allocated each, so
    32-bit samples swap 4 bytes at a time, not as 16-bit words (PS3.5 §8.1.1, 2025b)."""
    if vr == "OW" or bits_allocated > 8:
        return max(2, bits_allocated // 8)
    return 1


def swap_words(data: bytes, word: int) -> bytes:
    """Little endian from big endian words of `word` bytes (a trailing partial word dropped)."""
    if word == 1:
        return data
    code = next(c for c in "HILQ" if array(c).itemsize == word)
    values = array(code, data[: len(data) - len(data) % word])
    values.byteswap()
    return values.tobytes()


def inflate(data: bytes) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian Part-10 file, inflated: the bytes
    after the File Meta group, whose length its (0002,0000) element gives (PS3.10 §7.1, PS3.5
    §A.5, 2025b). Raise ValueError when the file has no such group or does not inflate."""
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError("no File Meta Information Group Length (0002,0000) at offset 132")
    (group_length,) = struct.unpack_from("<L", data, 140)
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[144 + group_length :])
    except zlib.error as exc:
        raise ValueError(f"the deflated dataset does not inflate: {exc}") from exc
