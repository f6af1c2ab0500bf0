"""The rendering attributes of a stored instance, from its bytes up to Pixel Data.

`render_frame` (dicom/rendering.py) reads the header of an instance by range read and needs a
dozen attributes of it: the Image Pixel Module, Rescale Slope and Intercept, the window. A
walk over the elements that keeps those (and lets pydicom convert them, as it does when it reads
a file) costs about half of pydicom's reading of the whole header (0.27 against 0.49 ms for a
2.2 KB CT header), a large share of a rendered frame. pydicom is imported inside the functions
(STYLE.md rule 4).
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

from chalicelib.dicom.encoding import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_RENDERING_TAGS = frozenset(
    (
        0x00280002,  # SamplesPerPixel
        0x00280004,  # PhotometricInterpretation
        0x00280006,  # PlanarConfiguration
        0x00280008,  # NumberOfFrames
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
        0x00280101,  # BitsStored
        0x00280102,  # HighBit
        0x00280103,  # PixelRepresentation
        0x00281050,  # WindowCenter
        0x00281051,  # WindowWidth
        0x00281052,  # RescaleIntercept
        0x00281053,  # RescaleSlope
        0x00281056,  # VOILUTFunction
    )
)
"""What `render_frame` reads of a header: Image Pixel, Modality LUT and VOI LUT attributes."""

_WHOLE_HEADER_TAGS = frozenset(
    (
        0x00283000,  # ModalityLUTSequence
        0x00283010,  # VOILUTSequence
        0x52009229,  # SharedFunctionalGroupsSequence
        0x52009230,  # PerFrameFunctionalGroupsSequence
    )
)
"""Attributes whose presence sends the header to pydicom's reader whole."""

_LONG_LENGTH_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_UNDEFINED_LENGTH = 0xFFFFFFFF


class _UnusualHeader(Exception):
    """The header needs pydicom's reader (a structure the walk does not take)."""


def read_header(header: bytes, transfer_syntax_uid: str) -> Dataset:
    """The attributes rendering needs, from the stored bytes up to the Pixel Data value.

    One walk over the elements (PS3.5 §7, 2025b) keeps the `_RENDERING_TAGS` undecoded, and
    pydicom converts them on access, as it does when it reads a file; sequences are stepped
    over. A header with a LUT sequence, functional groups, a palette or a structure the walk
    does not take (a VR that is not two capitals, an undefined-length UN, no Pixel Data) is
    read by pydicom whole instead, whose errors pass through.
    """

    import pydicom
    from pydicom.dataset import Dataset

    try:
        ds = Dataset(_walk_header(header, transfer_syntax_uid))
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if photometric != "PALETTE COLOR":
            return ds
    except (_UnusualHeader, struct.error, ValueError):
        pass
    return pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True, force=True)


def _walk_header(buffer: bytes, transfer_syntax_uid: str) -> dict[Any, Any]:
    """The raw `_RENDERING_TAGS` elements of the top-level dataset, up to Pixel Data."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    position = 132 if buffer[128:132] == b"DICM" else 0
    while buffer[position : position + 2] == b"\x02\x00":  # File Meta: explicit VR LE
        _, _, length, value = _element_header(buffer, position, False, True)
        position = value + length
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    found = {}
    while position + 8 <= len(buffer):
        tag, vr, length, value = _element_header(buffer, position, implicit, little)
        if tag == 0x7FE00010:
            return found
        if tag in _WHOLE_HEADER_TAGS or (length == _UNDEFINED_LENGTH and vr == "UN"):
            raise _UnusualHeader(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if length == _UNDEFINED_LENGTH:
            position = _skip_items(buffer, value, implicit, little)
            continue
        if tag in _RENDERING_TAGS:
            found[Tag(tag)] = RawDataElement(
                Tag(tag), vr, length, buffer[value : value + length], value, implicit, little
            )
        position = value + length
    raise _UnusualHeader("no Pixel Data (7FE0,0010) at the end of the header")


def _element_header(
    buffer: bytes, position: int, implicit: bool, little: bool
) -> tuple[int, str | None, int, int]:
    """(tag, VR or None, value length, value position) of the element at `position`."""
    order = "<" if little else ">"
    group, element = struct.unpack_from(order + "HH", buffer, position)
    if implicit or group == 0xFFFE:  # items and delimiters have no VR
        (length,) = struct.unpack_from(order + "L", buffer, position + 4)
        return group << 16 | element, None, length, position + 8
    vr = buffer[position + 4 : position + 6]
    if not (vr.isalpha() and vr.isupper()):
        raise _UnusualHeader(f"VR {vr!r}")
    if vr in _LONG_LENGTH_VRS:
        (length,) = struct.unpack_from(order + "L", buffer, position + 8)
        return group << 16 | element, vr.decode(), length, position + 12
    (length,) = struct.unpack_from(order + "H", buffer, position + 6)
    return group << 16 | element, vr.decode(), length, position + 8


def _skip_items(buffer: bytes, position: int, implicit: bool, little: bool) -> int:
    """The position after the items of an undefined-length sequence (PS3.5 §7.5, 2025b)."""
    while True:
        tag, _, length, value = _element_header(buffer, position, implicit, little)
        if tag == 0xFFFEE0DD:  # Sequence Delimitation Item
            return value
        if tag != 0xFFFEE000:
            raise _UnusualHeader(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) in a sequence")
        if length != _UNDEFINED_LENGTH:
            position = value + length
            continue
        position = value
        while True:  # the elements of an undefined-length item, up to its delimiter
            tag, vr, length, value = _element_header(buffer, position, implicit, little)
            if tag == 0xFFFEE00D:  # Item Delimitation Item
                position = value
                break
            if length == _UNDEFINED_LENGTH:
                if vr == "UN":
                    raise _UnusualHeader("an undefined-length UN")
                position = _skip_items(buffer, value, implicit, little)
            else:
                position = value + length
