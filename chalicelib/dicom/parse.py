"""Read an uploaded instance without decoding its pixel data.

`parse_instance` reads the header with pydicom, deferring every value longer than
`DEFER_SIZE` (Pixel Data included), so that ingest costs a header parse whatever the image
size. It records what later reads need without parsing the file again: the UIDs, the transfer
syntax, and where Pixel Data and its frames (or fragments) lie in the stored bytes.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chalicelib.dicom.encoding import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    inflate,
)
from chalicelib.dicom.ids import is_valid_uid

if TYPE_CHECKING:
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset

Buffer = bytes | memoryview
"""An instance's bytes, or a view of them (a part of a STOW-RS body, not copied out)."""
DEFER_SIZE = 1024
"""Values longer than this many bytes pydicom reads only when asked (`dcmread` defer_size)."""
UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
LONG_VRS = frozenset(
    b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split()
)  # explicit VR with a 4-byte length, PS3.5 §7.1.2 (2025b)


class UnreadableInstance(ValueError):
    """The bytes are not a DICOM instance we can store; the message says why."""


class MissingAttribute(ValueError):
    """A required attribute is missing or invalid; the message names it."""


@dataclass
class ParsedInstance:
    dataset: Dataset | None
    """The header as pydicom read it; large values are deferred (read from `data` on access).
    None when `rawread.read_instance` read the instance without pydicom."""
    data: Buffer
    transfer_syntax_uid: str
    has_file_meta: bool
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    pixel: dict[str, Any] = field(default_factory=dict)


_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100


def _raw_element(ds: Dataset, tag: int, vr: str) -> RawDataElement | None:
    """`tag` (a standard attribute whose VR is `vr`) when pydicom left it raw with that VR
    or none (implicit VR), else None (not there, read already, deferred, another VR).
    Reading the few attributes ingest needs from their bytes skips pydicom's conversion (a
    UID object and its validation, ~40 µs an attribute: a third of a CT header's parse) and
    leaves them raw for the metadata walk's fast path (`jsonmodel._Walker.raw_element`).
    Only for VRs whose implicit VR encoding is the explicit one's: `vr` must be the
    attribute's VR in the data dictionary, PS3.6 §6 (2025b)."""
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None or not elem.is_raw or elem.VR not in (vr, None) or elem.value is None:
        return None
    return elem


def _text(ds: Dataset, tag: int, vr: str) -> str:
    """The value of a UI or CS attribute without its padding ('' when absent)."""
    raw = _raw_element(ds, tag, vr)
    if raw is not None:
        return raw.value.decode("latin-1").strip("\0 ")
    value = ds.get(tag)
    return str(value.value).strip("\0 ") if value is not None and value.value is not None else ""


def read_dataset(data: bytes) -> tuple[Dataset, bool]:
    """Read a Part-10 file, or a bare dataset without File Meta (returns has_file_meta)."""
    # Imported here: a Lambda cold start that serves no upload never loads pydicom (and numpy).
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(io.BytesIO(data), defer_size=DEFER_SIZE)
        if len(ds) == 0:
            # pydicom gives up silently on an element that runs past the end of the file.
            raise UnreadableInstance("no attribute could be read: the file is truncated")
        return ds, True
    except UnreadableInstance:
        raise
    except InvalidDicomError:
        pass
    except struct.error as exc:  # an element header cut short
        raise UnreadableInstance(f"truncated: an element header is incomplete ({exc})") from exc
    except RecursionError:  # pydicom reads nested sequences recursively
        raise UnreadableInstance("sequences are nested too deeply to be read") from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise UnreadableInstance(f"not a readable DICOM file: {exc}") from exc
    try:
        ds = dcmread(io.BytesIO(data), defer_size=DEFER_SIZE, force=True)
    except Exception as exc:
        raise UnreadableInstance(f"not a readable DICOM file: {exc}") from exc
    if len(ds) == 0:
        raise UnreadableInstance("not a DICOM file: no Part-10 header and no readable dataset")
    return ds, False


def _transfer_syntax(ds: Dataset, has_file_meta: bool) -> str:
    meta = getattr(ds, "file_meta", None)
    if has_file_meta and meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit:
        return IMPLICIT_VR_LITTLE_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if little else EXPLICIT_VR_BIG_ENDIAN


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse an instance's header and locate its pixel data.

    Raise UnreadableInstance when the bytes are not DICOM (or are truncated), and
    MissingAttribute when SOP Class or SOP Instance UID cannot be read. Study and Series
    Instance UIDs are returned as read (possibly empty): the caller decides what a missing
    one means, since by then the instance can be named in a failure item.
    """
    ds, has_file_meta = read_dataset(data)
    transfer_syntax_uid = _transfer_syntax(ds, has_file_meta)
    if transfer_syntax_uid != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        # Offsets in a deflated file point into the inflated stream, not into `data`. Checked
        # before any value is read: reading turns the raw elements (with their offsets) into
        # values, and a UID cut short would be taken as it is (issue 11: series "1.2.82").
        _check_complete(ds, data)
    try:
        # Type 1 in the dataset itself: File Meta's copies do not make a storable instance.
        sop_class = _text(ds, _SOP_CLASS_UID, "UI")
        sop_instance = _text(ds, _SOP_INSTANCE_UID, "UI")
        study = _text(ds, _STUDY_INSTANCE_UID, "UI")
        series = _text(ds, _SERIES_INSTANCE_UID, "UI")
    except Exception as exc:
        raise UnreadableInstance(f"cannot read the UIDs: {exc}") from exc
    check_sop_uids(sop_class, sop_instance)
    parsed = ParsedInstance(
        dataset=ds,
        data=data,
        transfer_syntax_uid=transfer_syntax_uid,
        has_file_meta=has_file_meta,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=study,
        series_uid=series,
    )
    if transfer_syntax_uid != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        parsed.pixel = locate_pixel_data(ds, data)
    else:  # pydicom read the inflated dataset: offsets count from its start (`inflate`)
        try:
            parsed.pixel = locate_pixel_data(ds, inflate(data))
        except ValueError as exc:
            raise UnreadableInstance(f"Deflated Explicit VR Little Endian: {exc}") from exc
        if parsed.pixel:
            parsed.pixel["deflated"] = True
    return parsed


def check_sop_uids(sop_class: str, sop_instance: str) -> None:
    """Raise MissingAttribute when SOP Class or SOP Instance UID is missing or invalid."""
    for keyword, value, tag in (
        ("SOPClassUID", sop_class, "(0008,0016)"),
        ("SOPInstanceUID", sop_instance, "(0008,0018)"),
    ):
        if not value:
            raise MissingAttribute(f"{tag} {keyword} is missing")
        if not is_valid_uid(value):
            raise MissingAttribute(f"{tag} {keyword} '{value}' is not a valid UID")


def _check_complete(ds: Dataset, data: bytes) -> None:
    """Refuse a dataset whose elements do not end exactly at the end of `data`.

    pydicom stops silently at an element header cut short and keeps a value cut short, so a
    truncated upload would be stored without its last elements (issue 11: 327 of 572
    truncation points of one file were accepted). Every value must fit, and the elements after
    the last one pydicom kept the offset of are walked to the last byte.
    """
    size = len(data)
    last_end = None
    for raw in ds._dict.values():
        tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", UNDEFINED_LENGTH)
        if tell is None:
            continue  # a sequence of undefined length, read as values: walked below
        if length == UNDEFINED_LENGTH:
            last_end = (tell, True)
            continue
        if tell + length > size:
            raise UnreadableInstance(
                f"truncated: element {_tag_text(raw.tag)} needs {length} bytes at offset "
                f"{tell}, the file has {size}"
            )
        last_end = (tell + length, False)
    if last_end is None:
        return
    implicit, little = ds.original_encoding
    walker = ElementWalker(data, implicit=bool(implicit), little=little is not False)
    position, in_undefined_value = last_end
    if in_undefined_value:
        position = walker.skip_items(position)
    walker.walk_to_end(position)


def check_sequence_depth(ds: Dataset, limit: int) -> None:
    """Raise UnreadableInstance when sequences nest deeper than `limit` (a sequence at the top
    level is depth 1): deep nesting costs stack and time in every later pass over the dataset.

    Reads the sequences into values: call it once the raw offsets (bulk data) are recorded."""
    from pydicom.datadict import dictionary_has_tag, dictionary_VR

    pending: list[tuple[Dataset, int]] = [(ds, 0)]
    while pending:
        dataset, depth = pending.pop()
        for tag, raw in list(dataset._dict.items()):
            vr = raw.VR or (dictionary_VR(tag) if dictionary_has_tag(tag) else "UN")
            if vr != "SQ":
                continue
            if depth + 1 > limit:
                raise UnreadableInstance(
                    f"sequence {_tag_text(tag)} is nested {depth + 1} deep; this server "
                    f"accepts at most {limit} (DicomWeb.MaxSequenceDepth)"
                )
            pending += [(item, depth + 1) for item in dataset[tag].value]


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass
class ElementWalker:
    """Walks raw elements by their lengths (PS3.5 §7.1 and §7.5, 2025b), without values: the
    truncation check of ingest and the header walk of rendering (dicom/header.py)."""

    data: Buffer
    implicit: bool
    little: bool

    def _truncated(self, what: str, position: int) -> UnreadableInstance:
        return UnreadableInstance(
            f"truncated: {what} at offset {position} runs past the end of the file "
            f"({len(self.data)} bytes)"
        )

    def header(self, position: int, *, implicit: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR or b"", value length, value offset) of the element at `position`."""
        order = "<" if self.little or implicit else ">"
        if position + 8 > len(self.data):
            raise self._truncated("an element header", position)
        group, element = struct.unpack_from(order + "HH", self.data, position)
        tag = (group << 16) | element
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(order + "L", self.data, position + 4)
            return tag, b"", length, position + 8
        vr = bytes(self.data[position + 4 : position + 6])
        if vr in LONG_VRS:
            if position + 12 > len(self.data):
                raise self._truncated(f"the header of element {_tag_text(tag)}", position)
            (length,) = struct.unpack_from(order + "L", self.data, position + 8)
            return tag, vr, length, position + 12
        (length,) = struct.unpack_from(order + "H", self.data, position + 6)
        return tag, vr, length, position + 8

    def walk_to_end(self, position: int) -> None:
        """Walk top-level elements from `position`; the last must end at the last byte."""
        while position < len(self.data):
            position = self.skip_element(position, implicit=self.implicit)

    def skip_element(self, position: int, *, implicit: bool) -> int:
        tag, vr, length, value = self.header(position, implicit=implicit)
        if length != UNDEFINED_LENGTH:
            if value + length > len(self.data):
                raise self._truncated(f"element {_tag_text(tag)}", position)
            return value + length
        # An undefined-length UN holds implicit VR little endian items, PS3.5 §6.2.2 (2025b).
        return self.skip_items(value, implicit=implicit or vr == b"UN")

    def skip_items(self, position: int, *, implicit: bool | None = None) -> int:
        """Skip the items of an undefined-length value up to its sequence delimiter."""
        implicit = self.implicit if implicit is None else implicit
        while True:
            tag, _, length, value = self.header(position, implicit=implicit)
            if tag == _SEQUENCE_DELIMITER:
                return value
            if tag != _ITEM:
                raise UnreadableInstance(
                    f"element {_tag_text(tag)} at offset {position} where an item was expected"
                )
            if length != UNDEFINED_LENGTH:
                position = value + length
                if position > len(self.data):
                    raise self._truncated("an item", value - 8)
                continue
            position = value
            while True:
                tag, _, _, after = self.header(position, implicit=implicit)
                if tag == _ITEM_DELIMITER:
                    position = after
                    break
                position = self.skip_element(position, implicit=implicit)


def _int(ds: Dataset, tag: int, default: int = 0) -> int:
    """An integer attribute's value; `default` when absent, empty or not one integer.

    Raises UnreadableInstance when pydicom cannot convert it at all (a VR it does not know)."""
    try:
        elem = ds.get(tag)
        return default if elem is None else as_int(elem.value, default)
    except (TypeError, ValueError):
        return default
    except NotImplementedError as exc:
        raise UnreadableInstance(f"{_tag_text(tag)} cannot be read: {exc}") from exc


def as_int(value: Any, default: int) -> int:
    """An integer attribute's value as pydicom converted it; `default` when empty or not one
    integer."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _unsigned_short(ds: Dataset, tag: int, default: int = 0) -> int:
    """A US attribute's value (Rows, BitsAllocated...), read from its bytes when raw."""
    raw = _raw_element(ds, tag, "US")
    if raw is not None and len(raw.value) == 2:
        return int.from_bytes(raw.value, "little" if raw.is_little_endian else "big")
    return _int(ds, tag, default)


def locate_pixel_data(ds: Dataset, data: bytes) -> dict[str, Any]:
    """Where Pixel Data (7FE0,0010) and its frames lie in `data` ({} when it has none), from
    the Dataset pydicom read of `data` (see `pixel_facts`)."""
    raw = ds._dict.get(_PIXEL_DATA)
    if raw is None or getattr(raw, "value_tell", None) is None:
        return {}
    encapsulated = raw.length == UNDEFINED_LENGTH
    return pixel_facts(
        data,
        raw.value_tell,
        raw.length,
        raw.VR,
        rows=_unsigned_short(ds, _ROWS),
        columns=_unsigned_short(ds, _COLUMNS),
        samples_per_pixel=_unsigned_short(ds, _SAMPLES_PER_PIXEL, 1),
        bits_allocated=_unsigned_short(ds, _BITS_ALLOCATED, 8),
        # IS: text, in implicit VR too, PS3.5 §6.2 (2025b).
        number_of_frames=max(_int(ds, _NUMBER_OF_FRAMES, 1), 1),
        photometric="" if encapsulated else _text(ds, _PHOTOMETRIC_INTERPRETATION, "CS"),
        little=ds.original_encoding[1] is not False,
        extended_offset_table=(
            ds.ExtendedOffsetTable if encapsulated and "ExtendedOffsetTable" in ds else None
        ),
    )


def pixel_facts(
    data: Buffer,
    offset: int,
    length: int,
    vr: str | None,
    *,
    rows: int,
    columns: int,
    samples_per_pixel: int,
    bits_allocated: int,
    number_of_frames: int,
    photometric: str,
    little: bool,
    extended_offset_table: Buffer | None,
) -> dict[str, Any]:
    """Where the Pixel Data value at `offset` in `data` and its frames lie.

    Native: `offset`, `length`, `frame_length` (frame n starts at offset + (n-1) ×
    frame_length; bit-packed 1-bit data is not byte-aligned per frame, see `frame_bits`).
    Encapsulated (PS3.5 §A.4, 2025b): `frames`, a list per frame of [offset, length] of its
    fragments' bytes, built from the Extended Offset Table, the Basic Offset Table, or the
    fragments themselves.
    """
    facts: dict[str, Any] = {
        "offset": offset,
        "length": length,
        "vr": vr,
        "rows": rows,
        "columns": columns,
        "samples_per_pixel": samples_per_pixel,
        "bits_allocated": bits_allocated,
        "number_of_frames": number_of_frames,
    }
    if length != UNDEFINED_LENGTH:
        # Native YBR_FULL_422 stores two samples per pixel, PS3.3 §C.7.6.3.1.2 (2025b).
        samples = 2 if photometric == "YBR_FULL_422" else samples_per_pixel
        frame_bits = rows * columns * samples * bits_allocated
        needed = (frame_bits * number_of_frames + 7) // 8
        if length < needed:
            raise UnreadableInstance(
                f"Pixel Data (7FE0,0010) has {length} bytes, but Rows {rows} × Columns "
                f"{columns} × {samples} samples × BitsAllocated {bits_allocated} × "
                f"NumberOfFrames {number_of_frames} needs {needed}"
            )
        facts["encapsulated"] = False
        facts["frame_bits"] = frame_bits
        facts["frame_length"] = frame_bits // 8 if frame_bits % 8 == 0 else 0
        return facts
    facts["encapsulated"] = True
    bot, fragments = _scan_fragments(data, offset, little)
    facts["frames"] = _group_frames(data, bot, fragments, number_of_frames, extended_offset_table)
    if len(facts["frames"]) < number_of_frames:
        raise UnreadableInstance(
            f"Pixel Data (7FE0,0010) holds {len(facts['frames'])} encapsulated frames, but "
            f"(0028,0008) NumberOfFrames is {number_of_frames}"
        )
    return facts


def _scan_fragments(
    data: Buffer, offset: int, little: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """Basic Offset Table values and (offset, length) of every fragment's value."""
    fmt = "<HHL" if little else ">HHL"
    position, items = offset, []
    while position + 8 <= len(data):
        group, element, length = struct.unpack_from(fmt, data, position)
        tag = (group << 16) | element
        position += 8
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or position + length > len(data):
            raise UnreadableInstance(
                f"Pixel Data (7FE0,0010): bad encapsulated item at offset {position - 8}"
            )
        items.append((position, length))
        position += length
    else:
        raise UnreadableInstance("Pixel Data (7FE0,0010): truncated, no sequence delimiter")
    if not items:
        raise UnreadableInstance("Pixel Data (7FE0,0010): no Basic Offset Table item")
    (bot_offset, bot_length), fragments = items[0], items[1:]
    count = bot_length // 4
    bot = list(struct.unpack_from(("<" if little else ">") + "L" * count, data, bot_offset))
    return bot, fragments


def _group_frames(
    data: Buffer,
    bot: list[int],
    fragments: list[tuple[int, int]],
    number_of_frames: int,
    extended_offset_table: Buffer | None,
) -> list[list[list[int]]]:
    if not fragments:
        return []
    first = fragments[0][0] - 8
    if extended_offset_table is not None:
        starts = struct.unpack(f"<{len(extended_offset_table) // 8}Q", extended_offset_table)
        return _split_at(fragments, [first + s for s in starts])
    if bot:
        return _split_at(fragments, [first + s for s in bot])
    if number_of_frames == 1:
        return [[[o, n] for o, n in fragments]]
    if len(fragments) == number_of_frames:
        return [[[o, n]] for o, n in fragments]
    # No offset table and more fragments than frames: a new frame starts at each fragment
    # that opens with a codestream start marker (JPEG SOI, JPEG 2000 SOC).
    frames: list[list[list[int]]] = []
    for o, n in fragments:
        if data[o : o + 2] in (b"\xff\xd8", b"\xff\x4f") or not frames:
            frames.append([])
        frames[-1].append([o, n])
    if len(frames) != number_of_frames:
        raise UnreadableInstance(
            f"Pixel Data (7FE0,0010): {len(fragments)} fragments cannot be split into "
            f"NumberOfFrames {number_of_frames} without an offset table"
        )
    return frames


def _split_at(fragments: list[tuple[int, int]], starts: list[int]) -> list[list[list[int]]]:
    """Group fragments into frames given each frame's first item-tag position."""
    frames: list[list[list[int]]] = []
    boundaries = set(starts)
    for o, n in fragments:
        if o - 8 in boundaries or not frames:
            frames.append([])
        frames[-1].append([o, n])
    return frames
