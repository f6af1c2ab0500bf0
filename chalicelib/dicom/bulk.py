"""Where the bulk values of an instance lie in its stored bytes, recorded at ingest.

The WADO-RS metadata of an instance names large values by BulkDataURI (PS3.18 §10.4.3.3.2,
Retrieve Metadata, 2025b); the bulkdata resource then answers them with one range read of
the stored file at the offset found here, never a whole-file read. Pixel Data is located by
`parse.locate_pixel_data` (frames, fragments) and is not repeated here.

Paths are the ones `jsonmodel.dataset_to_json` gives its BulkDataURI builder: "00091001" at
the top level, "60031010/1/60031011" in the first item of a sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.dicom.encoding import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from chalicelib.dicom.parse import UNDEFINED_LENGTH

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_PIXEL_DATA = 0x7FE00010
MAX_RECORDED = 256
"""Beyond this many bulk values the index item would grow too large (DynamoDB items are at
most 400 KB): the rest are served by reading the file."""


def locate_bulk_elements(ds: Dataset, data: bytes, threshold: int) -> dict[str, list[Any]]:
    """{tag path: [offset, length, vr]} of every value longer than `threshold` bytes.

    A superset of what the metadata document names by BulkDataURI (the bulkdata service
    falls back to reading the file for a path not recorded here). Offsets are absolute in
    `data`; an offset that cannot be checked against the bytes is left out rather than guessed.
    """
    found: dict[str, list[Any]] = {}
    meta = getattr(ds, "file_meta", None)
    if (
        meta is not None
        and str(meta.get("TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    ):
        return found  # offsets would point into the inflated stream, not into `data`
    _walk(ds, data, threshold, 0, "", found)
    return found


def _walk(
    ds: Dataset, data: bytes, threshold: int, base: int, prefix: str, found: dict[str, list[Any]]
) -> None:
    for tag, elem in ds._dict.items():
        if tag == _PIXEL_DATA or not tag & 0xFFFF:
            continue
        tell = getattr(elem, "value_tell", None)
        length = getattr(elem, "length", None)
        path = f"{prefix}{tag:08X}"
        vr = elem.VR or _dictionary_vr(tag)
        if vr == "SQ" or (vr in ("UN", None) and length == UNDEFINED_LENGTH):
            _walk_sequence(ds, tag, elem, data, threshold, base, path, found)
            continue
        if tell is None or length is None or length == UNDEFINED_LENGTH or length <= threshold:
            continue
        offset = base + tell
        value = elem.value if elem.is_raw else None
        if value is not None and data[offset : offset + length] != value:
            continue
        if offset + length > len(data) or len(found) >= MAX_RECORDED:
            continue
        found[path] = [offset, length, vr or "UN"]


def _walk_sequence(
    ds: Dataset,
    tag: int,
    raw: Any,
    data: bytes,
    threshold: int,
    base: int,
    path: str,
    found: dict[str, list[Any]],
) -> None:
    """Items of a defined-length sequence are parsed from its value bytes, so their offsets
    count from the value's start; undefined-length items are read from the file itself."""
    tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", UNDEFINED_LENGTH)
    try:
        items = ds[tag].value
    except Exception:  # an unreadable sequence has no bulk values we could serve
        return
    if not isinstance(items, list | tuple) and not hasattr(items, "__iter__"):
        return
    inner = base if length == UNDEFINED_LENGTH or tell is None else base + tell
    for number, item in enumerate(items, 1):
        if hasattr(item, "_dict"):
            _walk(item, data, threshold, inner, f"{path}/{number}/", found)


def _dictionary_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None
