"""The rendering attributes of a stored instance, from its bytes up to Pixel Data.

`render_frame` (dicom/rendering.py) reads the header of an instance by range read and needs a
dozen attributes of it: the Image Pixel Module, Rescale Slope and Intercept, the window. A
walk over the elements that decodes those costs a fraction of pydicom's reading of the whole
header (a large share of a rendered frame); anything unusual is left to pydicom. pydicom is
imported inside the functions (STYLE.md rule 4)."""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

from chalicelib.dicom.encoding import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from chalicelib.dicom.parse import UNDEFINED_LENGTH, ElementWalker

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_RENDERING_TAGS = {
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280006: ("PlanarConfiguration", "US"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280102: ("HighBit", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00281050: ("WindowCenter", "DS"),
    0x00281051: ("WindowWidth", "DS"),
    0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"),
    0x00281056: ("VOILUTFunction", "CS"),
}
"""What `render_frame` reads of a header (Image Pixel, Modality LUT and VOI LUT attributes):
keyword and VR (PS3.6, 2025b)."""

_WHOLE_HEADER_TAGS = frozenset(
    (
        0x00283000,  # ModalityLUTSequence
        0x00283010,  # VOILUTSequence
        0x52009229,  # SharedFunctionalGroupsSequence
        0x52009230,  # PerFrameFunctionalGroupsSequence
    )
)
"""Attributes whose presence sends the header to pydicom's reader whole."""


class _UnusualHeader(Exception):
    """The header needs pydicom's reader (a structure the walk does not take)."""


class HeaderAttributes:
    """The rendering attributes of a walked header, read as the rendering functions read a
    pydicom Dataset: `get`, `in` and attribute access by keyword."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._values.get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self._values

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self.__dict__["_values"][keyword]
        except KeyError:
            raise AttributeError(keyword) from None


def read_header(header: bytes, transfer_syntax_uid: str) -> Dataset | HeaderAttributes:
    """The attributes rendering needs, from the stored bytes up to the Pixel Data value.

    One walk over the elements (PS3.5 §7, 2025b) decodes the `_RENDERING_TAGS` (US, IS, DS and
    CS values as pydicom gives them) and steps over sequences. A header with a LUT sequence,
    functional groups, a palette or a structure the walk does not take (a VR that is not two
    capitals or not the attribute's, a value that is not a number, no Pixel Data, a truncated
    element) is read by pydicom whole instead, whose errors pass through. The walk over element
    lengths is ingest's (`parse.ElementWalker`).
    """
    import pydicom

    try:
        values = _walk_header(header, transfer_syntax_uid)
        if values.get("PhotometricInterpretation") != "PALETTE COLOR":
            return HeaderAttributes(values)
    except (_UnusualHeader, struct.error, ValueError):
        pass
    return pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True, force=True)


def _walk_header(buffer: bytes, transfer_syntax_uid: str) -> dict[str, Any]:
    """The `_RENDERING_TAGS` values of the top-level dataset, up to Pixel Data, by keyword."""
    position = 132 if buffer[128:132] == b"DICM" else 0
    meta = ElementWalker(buffer, implicit=False, little=True)  # File Meta: explicit VR LE
    while buffer[position : position + 2] == b"\x02\x00":
        position = meta.skip_element(position, implicit=False)
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    walker = ElementWalker(buffer, implicit=implicit, little=little)
    found: dict[str, Any] = {}
    while position + 8 <= len(buffer):
        tag, vr, length, value = walker.header(position, implicit=implicit)
        if tag == 0x7FE00010:
            return found
        if vr and not (vr.isalpha() and vr.isupper()):
            raise _UnusualHeader(f"VR {vr!r}")
        if tag in _WHOLE_HEADER_TAGS:
            raise _UnusualHeader(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if length == UNDEFINED_LENGTH:
            position = walker.skip_element(position, implicit=implicit)
            continue
        if tag in _RENDERING_TAGS and length:
            keyword, expected = _RENDERING_TAGS[tag]
            if vr and vr.decode() != expected:
                raise _UnusualHeader(f"{keyword} with VR {vr.decode()}")
            found[keyword] = _value(buffer[value : value + length], expected, little)
        position = value + length
    raise _UnusualHeader("no Pixel Data (7FE0,0010) at the end of the header")


def _value(raw: bytes, vr: str, little: bool) -> Any:
    """A US, IS, DS or CS value as pydicom gives it: a number or text, a list when several
    (PS3.5 §6.2, 2025b)."""
    if vr == "US":
        if len(raw) % 2:
            raise _UnusualHeader("an odd US length")
        numbers = list(struct.unpack(("<" if little else ">") + "H" * (len(raw) // 2), raw))
        return numbers[0] if len(numbers) == 1 else numbers
    parts = raw.decode("ascii").strip(" \x00").split("\\")
    if vr == "CS":
        if len(parts) > 1:
            raise _UnusualHeader("a multi-valued CS")
        return parts[0].strip()
    convert = int if vr == "IS" else float
    values = [convert(part.strip()) for part in parts]  # ValueError: pydicom reads it
    return values[0] if len(values) == 1 else values
