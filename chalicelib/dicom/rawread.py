"""Read an ordinary uploaded instance from its bytes alone, without building a pydicom Dataset.

Ingest needs, of every part: the UIDs, the transfer syntax, where Pixel Data and its frames
lie, where the bulk values lie, the main attributes of each level and the WADO-RS metadata
document. `read_instance` gets them in one walk over the elements (PS3.5 §7, 2025b) for the
instances most uploads are: a Part-10 file in Implicit or Explicit VR Little Endian (native or
encapsulated), elements in ascending order, VRs known from the bytes or the public dictionary.
In implicit VR, top-level Pixel Data is OW (OB encapsulated) and "US or SS" follows Pixel
Representation, as pydicom decides them; private elements, and other ambiguous VRs or any in
an item, are not read here. It hands anything else to pydicom (`parse.parse_instance`), which
stays the parser of record: what this walk gives is what the pydicom path gives, value for
value and byte for byte (tests/dicom/test_rawread.py compares both on the whole corpus), and
every refusal is the pydicom path's, since any doubt (a truncated or unusual element, a value
that does not convert, sequences nested too deep) sends the part to that path.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any, NamedTuple

from chalicelib.dicom import metadata
from chalicelib.dicom.bulk import MAX_RECORDED
from chalicelib.dicom.encoding import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from chalicelib.dicom.jsonmodel import elements_to_json
from chalicelib.dicom.parse import (
    DEFER_SIZE,
    LONG_VRS,
    UNDEFINED_LENGTH,
    Buffer,
    ElementWalker,
    ParsedInstance,
    UnreadableInstance,
    as_int,
    check_sop_uids,
    parse_instance,
    pixel_facts,
)

_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_SPECIFIC_CHARACTER_SET = 0x00080005
_US_OR_SS = "US or SS"
_VRS = frozenset((
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
))  # fmt: skip
"""The VRs of PS3.5 Table 6.2-1 (2025b)."""
_LONG_VRS = frozenset(vr.decode() for vr in LONG_VRS)
_VR_CODES = {vr.encode(): vr for vr in _VRS}
_HEADER = struct.Struct("<HHL")  # tag and 4-byte length: implicit VR, items, delimiters
_EXPLICIT = struct.Struct("<HH2sH")  # tag, VR and 2-byte length


class NeedsPydicom(Exception):
    """The part holds a structure this reader leaves to pydicom."""


class Element(NamedTuple):
    """One element as it lies in the bytes: the offset of its value (absolute) and its
    length (UNDEFINED_LENGTH for a sequence or encapsulated Pixel Data read to its
    delimiter); a sequence's items as lists of elements."""

    tag: int
    vr: str
    offset: int
    length: int
    items: tuple[list[Element], ...] = ()


def read_instance(
    data: Buffer, bulk_threshold: int, max_sequence_depth: int
) -> tuple[ParsedInstance, metadata.Description | None]:
    """The instance's facts, and its description when this walk could read it all (else
    None: `metadata.describe_dataset` describes the pydicom Dataset of the first).

    `data` may be a view (a part of a STOW-RS body): this walk reads it in place, and only
    the pydicom path, for the unusual instances, reads a copy. Raises what
    `parse.parse_instance` raises, from that function."""
    try:
        return read_raw(data, bulk_threshold, max_sequence_depth)
    except Exception:  # NeedsPydicom, or a value this walk cannot read: pydicom's path says
        return parse_instance(bytes(data)), None


def read_raw(
    data: Buffer, bulk_threshold: int, max_sequence_depth: int
) -> tuple[ParsedInstance, metadata.Description]:
    """The facts and description of an ordinary instance read by this walk alone; raises
    NeedsPydicom (or what a value this walk cannot read raises) for any other. Values are
    read from `data` in place; only short ones become bytes or text."""
    if data[128:132] != b"DICM":
        raise NeedsPydicom("no Part-10 header")
    meta, position, _ = _elements(data, 132, len(data), implicit=False, depth=0, file_meta=True)
    syntax = _top(meta).get(0x00020010)
    if syntax is None or syntax.vr != "UI":
        raise NeedsPydicom("no Transfer Syntax UID")
    transfer_syntax_uid = _transfer_syntax(data, syntax)
    if transfer_syntax_uid in (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN):
        raise NeedsPydicom(transfer_syntax_uid)
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    if position + 6 <= len(data) and _looks_explicit(data, position) == implicit:
        raise NeedsPydicom("the dataset's first element is not in its transfer syntax")
    elements, _, _ = _elements(data, position, len(data), implicit=implicit, depth=0)
    elements = _us_or_ss(data, elements)
    if not elements:
        raise NeedsPydicom("no element")
    if _depth(elements) > max_sequence_depth:
        raise NeedsPydicom("sequences nested too deep")  # pydicom's path says where
    top = _top(elements)
    sop_class, sop_instance, study, series = (
        _uid(data, top.get(tag)) for tag in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)
    )
    check_sop_uids(sop_class, sop_instance)
    parsed = ParsedInstance(
        dataset=None,
        data=data,
        transfer_syntax_uid=transfer_syntax_uid,
        has_file_meta=True,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=study,
        series_uid=series,
        pixel=_pixel(data, top, implicit),
    )
    encodings = _encodings(data, top.get(_SPECIFIC_CHARACTER_SET), ["iso8859"])
    prefix = metadata.bulk_prefix(study, series, sop_instance)
    document = elements_to_json(
        elements,
        data,
        lambda path: prefix + path,
        bulk_threshold,
        DEFER_SIZE,
        lambda charset, inherited: _encodings(data, charset, inherited),
    )
    bulk: dict[str, list[Any]] = {}
    _locate_bulk(elements, bulk_threshold, "", bulk)
    levels, gzipped = metadata.finish(document)
    patient_id = top.get(0x00100020)
    return parsed, metadata.Description(
        levels,
        gzipped,
        bulk,
        "" if patient_id is None else _patient_id(data, patient_id, encodings),
    )


def _elements(
    data: Buffer, position: int, end: int, *, implicit: bool, depth: int, file_meta: bool = False
) -> tuple[list[Element], int, bool]:
    """The elements from `position` up to `end`, or up to an item delimiter inside an item
    (`depth` > 0), or while the group is 2 (`file_meta`): the elements, the position after
    them (after the delimiter), and whether a delimiter ended them."""
    found: list[Element] = []
    previous = -1
    dictionary = _dictionary()
    while position < end:
        if position + 8 > end:
            raise NeedsPydicom("an element header runs past its end")
        group, element, length = _HEADER.unpack_from(data, position)
        tag = group << 16 | element
        if file_meta and group != 2:
            break
        if tag == _ITEM_DELIMITER and depth:
            if length:
                raise NeedsPydicom("an item delimiter with a length")
            return found, position + 8, True
        if tag <= previous or group == 0xFFFE or (not file_meta and group < 8):
            raise NeedsPydicom(f"element ({group:04X},{element:04X}) out of place")
        previous = tag
        if implicit:
            entry = dictionary.get(tag)
            if entry is None:
                raise NeedsPydicom("an implicit VR element not in the public dictionary")
            vr, value = entry[0], position + 8
        else:
            _, _, code, length = _EXPLICIT.unpack_from(data, position)
            vr = _VR_CODES.get(code)
            if vr is None:
                raise NeedsPydicom("an unknown VR")
            if vr in _LONG_VRS:
                if position + 12 > end:
                    raise NeedsPydicom("an element header runs past its end")
                (length,) = struct.unpack_from("<L", data, position + 8)
                value = position + 12
            else:
                value = position + 8
        if implicit and " " in vr:
            vr = _implicit_ambiguous(tag, vr, length, depth)
        elif vr == "UN" or vr not in _VRS:
            raise NeedsPydicom(f"VR {vr}: pydicom resolves it")
        items: tuple[list[Element], ...] = ()
        if vr == "SQ":
            items, position = _items(data, value, length, end, implicit=implicit, depth=depth)
        elif length == UNDEFINED_LENGTH:
            if tag != _PIXEL_DATA or depth or vr not in ("OB", "OW"):
                raise NeedsPydicom("an undefined length that is not a sequence")
            try:
                position = ElementWalker(data, implicit=False, little=True).skip_items(value)
            except UnreadableInstance as exc:
                raise NeedsPydicom(str(exc)) from exc
        else:
            position = value + length
            if position > end:
                raise NeedsPydicom("a value runs past its end")
        found.append(Element(tag, vr, value, length, items))
    return found, position, False


def _implicit_ambiguous(tag: int, vr: str, length: int, depth: int) -> str:
    """The VR of a top-level element of Implicit VR Little Endian whose dictionary VR is
    ambiguous, as pydicom decides it (`filewriter.correct_ambiguous_vr_element`): Pixel Data
    is OW, OB when encapsulated (PS3.5 §A.1 and §A.4, 2025b); "US or SS" is kept for
    `_us_or_ss`; any other (and any in an item) goes to pydicom."""
    if depth == 0 and tag == _PIXEL_DATA:
        return "OB" if length == UNDEFINED_LENGTH else "OW"
    if depth == 0 and vr == _US_OR_SS and tag in _us_or_ss_tags():
        return vr
    raise NeedsPydicom(f"VR {vr}: pydicom resolves it")


def _us_or_ss(data: Buffer, elements: list[Element]) -> list[Element]:
    """The top-level `elements` with "US or SS" decided as pydicom decides it: by Pixel
    Representation (0028,0103), US when 0000H (unsigned) else SS (Image Pixel Module, PS3.3
    §C.7.6.3, 2025b), and US when neither it nor Pixel Data is there. Anything less plain
    goes to pydicom."""
    if not any(element.vr == _US_OR_SS for element in elements):
        return elements
    top = _top(elements)
    representation = top.get(0x00280103)
    if representation is None and _PIXEL_DATA not in top:
        vr = "US"
    elif representation is not None and representation.vr == "US" and representation.length == 2:
        value = data[representation.offset : representation.offset + 2]
        vr = "US" if value == b"\0\0" else "SS"
    else:
        raise NeedsPydicom("a US or SS value without a plain Pixel Representation")
    return [e._replace(vr=vr) if e.vr == _US_OR_SS else e for e in elements]


def _items(
    data: Buffer, value: int, length: int, end: int, *, implicit: bool, depth: int
) -> tuple[tuple[list[Element], ...], int]:
    """The items of a sequence whose value starts at `value`, and the position after it."""
    stop = end if length == UNDEFINED_LENGTH else value + length
    if stop > end:
        raise NeedsPydicom("a sequence runs past its end")
    items: list[list[Element]] = []
    position = value
    while position < stop:
        if position + 8 > stop:
            raise NeedsPydicom("an item header runs past its end")
        group, element, item_length = _HEADER.unpack_from(data, position)
        tag = group << 16 | element
        position += 8
        if tag == _SEQUENCE_DELIMITER and length == UNDEFINED_LENGTH:
            if item_length:
                raise NeedsPydicom("a sequence delimiter with a length")
            return tuple(items), position
        if tag != _ITEM:
            raise NeedsPydicom("an element where an item was expected")
        if not implicit and position + 6 <= stop and not _looks_explicit(data, position):
            raise NeedsPydicom("an implicit VR item in an explicit VR dataset")
        if item_length == UNDEFINED_LENGTH:
            elements, position, delimited = _elements(
                data, position, stop, implicit=implicit, depth=depth + 1
            )
            if not delimited:
                raise NeedsPydicom("an undefined-length item without its delimiter")
        else:
            item_end = position + item_length
            if item_end > stop:
                raise NeedsPydicom("an item runs past its sequence")
            elements, position, delimited = _elements(
                data, position, item_end, implicit=implicit, depth=depth + 1
            )
            if delimited or position != item_end:
                raise NeedsPydicom("a defined-length item that its elements do not fill")
        items.append(elements)
    if length == UNDEFINED_LENGTH or position != stop:
        raise NeedsPydicom("a sequence without its delimiter, or not filled by its items")
    return tuple(items), position


def _looks_explicit(data: Buffer, position: int) -> bool:
    """Whether the element at `position` has a VR's place filled by two capitals: pydicom's
    test of a dataset's encoding (`filereader._is_implicit_vr`)."""
    return 0x40 < data[position + 4] < 0x5B and 0x40 < data[position + 5] < 0x5B


def _depth(elements: list[Element]) -> int:
    """How deep sequences nest (a sequence at the top level is depth 1)."""
    return max(
        (1 + max((_depth(item) for item in e.items), default=0) for e in elements if e.vr == "SQ"),
        default=0,
    )


def _top(elements: list[Element]) -> dict[int, Element]:
    return {element.tag: element for element in elements}


def _text(data: Buffer, element: Element) -> str:
    return str(data[element.offset : element.offset + element.length], "latin-1")


def _uid(data: Buffer, element: Element | None) -> str:
    """A UID as `parse._text` reads it ('' when absent)."""
    if element is None:
        return ""
    if element.vr != "UI" or element.length > DEFER_SIZE:
        raise NeedsPydicom("a UID that pydicom's path converts")
    return _text(data, element).strip("\0 ")


def _transfer_syntax(data: Buffer, element: Element) -> str:
    """The Transfer Syntax UID as pydicom converts it (`values.convert_UI`: trailing NULs and
    spaces off, then `UID` strips any whitespace around it); several values go to pydicom."""
    text = _text(data, element).rstrip("\0 ")
    if "\\" in text or element.length > DEFER_SIZE:
        raise NeedsPydicom("a Transfer Syntax UID of several values")
    return text.strip()


def _encodings(data: Buffer, charset: Element | None, inherited: list[str]) -> list[str]:
    """The Python encodings of a dataset, as `jsonmodel._Walker.dataset` finds them:
    its Specific Character Set (0008,0005) converted as pydicom converts a CS value
    (`values.multi_string`), else the `inherited` ones."""
    if charset is None:
        return inherited
    if charset.vr != "CS":
        raise NeedsPydicom("a Specific Character Set that is not CS")
    names = _text(data, charset).rstrip(" \x00").split("\\")
    if names == [""]:
        return inherited
    from pydicom.charset import convert_encodings

    return convert_encodings(names[0] if len(names) == 1 else names)


def _converted(data: Buffer, element: Element, encodings: list[str]) -> Any:
    """An element's value as pydicom converts it (for the few that the pydicom path reads
    through pydicom)."""
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.tag import Tag

    if element.length > DEFER_SIZE:
        raise NeedsPydicom("a deferred value")
    raw = RawDataElement(
        Tag(element.tag),
        element.vr,
        element.length,
        bytes(data[element.offset : element.offset + element.length]),
        element.offset,
        False,
        True,
    )
    return convert_raw_data_element(raw, encoding=encodings).value


def _patient_id(data: Buffer, element: Element, encodings: list[str]) -> str:
    """PatientID as ingest reads it from a Dataset: `str(ds.get("PatientID", "") or "")`.

    A value of VR LO (its VR, PS3.6 §6, 2025b) of printable ASCII without a backslash is one
    value that every DICOM character set decodes as ASCII, which pydicom strips of its trailing
    spaces (`values.convert_text`); any other (another VR: OB gives "b'...'") goes through
    pydicom's conversion."""
    text = _text(data, element)
    if (
        element.vr == "LO"
        and text.isascii()
        and text.isprintable()
        and "\\" not in text
        and len(text) <= DEFER_SIZE
    ):
        return text.rstrip(" ")
    return str(_converted(data, element, encodings) or "")


def _int(data: Buffer, element: Element | None, default: int) -> int:
    """As `parse._int`."""
    if element is None:
        return default
    try:
        return as_int(_converted(data, element, []), default)
    except (TypeError, ValueError):
        return default


def _unsigned_short(data: Buffer, element: Element | None, default: int) -> int:
    """As `parse._unsigned_short`."""
    if element is not None and element.vr == "US" and element.length == 2:
        return int.from_bytes(data[element.offset : element.offset + 2], "little")
    return _int(data, element, default)


def _pixel(data: Buffer, top: dict[int, Element], implicit: bool) -> dict[str, Any]:
    """As `parse.locate_pixel_data`, which records the VR in the file (none in implicit VR)."""
    pixel = top.get(_PIXEL_DATA)
    if pixel is None:
        return {}
    photometric = top.get(0x00280004)
    if photometric is not None and photometric.vr != "CS":
        raise NeedsPydicom("a Photometric Interpretation that is not CS")
    table = top.get(0x7FE00001)
    encapsulated = pixel.length == UNDEFINED_LENGTH
    return pixel_facts(
        data,
        pixel.offset,
        pixel.length,
        None if implicit else pixel.vr,
        rows=_unsigned_short(data, top.get(0x00280010), 0),
        columns=_unsigned_short(data, top.get(0x00280011), 0),
        samples_per_pixel=_unsigned_short(data, top.get(0x00280002), 1),
        bits_allocated=_unsigned_short(data, top.get(0x00280100), 8),
        number_of_frames=max(_int(data, top.get(0x00280008), 1), 1),
        photometric="" if photometric is None else _text(data, photometric).strip("\0 "),
        little=True,
        extended_offset_table=(
            data[table.offset : table.offset + table.length]
            if encapsulated and table is not None
            else None
        ),
    )


def _locate_bulk(
    elements: list[Element], threshold: int, prefix: str, found: dict[str, list[Any]]
) -> None:
    """As `bulk.locate_bulk_elements`: {tag path: [offset, length, vr]} of every value longer
    than `threshold` bytes but Pixel Data, in file order, at most MAX_RECORDED."""
    for element in elements:
        if element.tag == _PIXEL_DATA or not element.tag & 0xFFFF:
            continue
        path = f"{prefix}{element.tag:08X}"
        if element.vr == "SQ":
            for number, item in enumerate(element.items, 1):
                _locate_bulk(item, threshold, f"{path}/{number}/", found)
        elif threshold < element.length != UNDEFINED_LENGTH and len(found) < MAX_RECORDED:
            found[path] = [element.offset, element.length, element.vr]


@cache
def _us_or_ss_tags() -> frozenset[int]:
    """The tags whose "US or SS" pydicom decides by Pixel Representation."""
    from pydicom.filewriter import _AMBIGUOUS_US_SS_TAGS

    return frozenset(_AMBIGUOUS_US_SS_TAGS)


@cache
def _dictionary() -> dict[int, tuple[str, ...]]:
    from pydicom.datadict import DicomDictionary

    return DicomDictionary
