"""The one formatter of the DICOM wire models (STYLE.md rule 7).

- DICOM JSON Model, PS3.18 Annex F, DICOM JSON Model (2025b): `dataset_to_json`,
  `element_json`, `keyword_json`, `json_value`, `json_values`.
- Native DICOM Model, PS3.19 Native DICOM Model (2025b), built from the JSON model:
  `json_to_xml`.

Pure functions: no HTTP, no AWS, no environment. pydicom is imported lazily: QIDO-RS builds
JSON and XML without it (STYLE.md rule 4), and the data dictionary needed for keywords is
loaded without pydicom's package initialisation (see `_dictionary`).
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import math
import re
import struct
import sys
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chalicelib.dicom.encoding import OTHER_BINARY_VRS, WORD_SIZE, swap_words

if TYPE_CHECKING:
    from pydicom import Dataset
    from pydicom.dataelem import DataElement, RawDataElement

    from chalicelib.dicom.rawread import Element

log = logging.getLogger(__name__)

BulkDataUriBuilder = Callable[[str], str]
"""Maps a tag path ("7FE00010", "60031010/1/60031011") to an absolute BulkDataURI."""

# VRs whose value may be replaced by a BulkDataURI, PS3.18 §10.4.3.3.2 (2025b).
BULK_VRS = frozenset(
    {"DS", "FL", "FD", "IS", "LT", "OB", "OD", "OF", "OL", "OV", "OW"}
    | {"SL", "SS", "ST", "SV", "UC", "UL", "UN", "US", "UT", "UV"}
)
# Pixel Data, Float Pixel Data, Double Float Pixel Data: always bulk when URIs are wanted.
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

# Binary numeric VRs: struct code and size (AT is read as pairs of US).
_NUMERIC = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
    "SV": ("q", 8),
    "UV": ("Q", 8),
    "AT": ("H", 2),
}
# VRs affected by Specific Character Set (0008,0005), PS3.5 §6.1.2.3.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
# Text that is one value whatever it contains: never split at backslashes.
_SINGLE_VALUE_VRS = frozenset({"ST", "LT", "UT", "UR"})
# Leading spaces are not significant either (PS3.5 Table 6.2-1).
_STRIP_BOTH_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})
_TEXT_DELIMITERS = {0x09, 0x0A, 0x0C, 0x0D}  # reset ISO 2022 state, as pydicom's TEXT_VR_DELIMS
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")

_IS_TEXT = re.compile(r"[+-]?\d+")
_DS_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def dataset_to_json(
    ds: Dataset,
    bulkdata_uri: BulkDataUriBuilder | None,
    bulk_threshold: int = 1024,
) -> dict[str, Any]:
    """The DICOM JSON Model object of `ds`, PS3.18 Annex F, DICOM JSON Model (2025b).

    Every attribute is kept (retired, private, private creators) except Group Length
    (gggg,0000), which F.2.2 excludes; the file meta group is not part of the dataset. Text
    is decoded with the Specific Character Set of the dataset (or of the sequence item that
    carries its own), and 0008,0005 is kept as stored (F.2.2 Note 3).

    With `bulkdata_uri`, the value of an attribute whose VR allows it (PS3.18 §10.4.3.3.2)
    and whose value is longer than `bulk_threshold` bytes becomes a BulkDataURI, and so does
    any Pixel Data; other binary values are InlineBinary (F.2.7), in little endian. The
    builder receives the tag path: "7FE00010" at the top level, "60031010/1/60031011" in the
    first item of a sequence. DS and IS are numbers when the text converts without loss,
    otherwise strings (F.2.3 allows both). A value that cannot be read is logged and left
    out (the attribute keeps its VR) rather than failing the instance.
    """
    from pydicom.charset import convert_encodings

    def encodings_of(charset: DataElement | None, inherited: list[str]) -> list[str]:
        return (
            convert_encodings(charset.value) if charset is not None and charset.value else inherited
        )

    walker = _Walker(bulkdata_uri, bulk_threshold, encodings_of)
    return walker.dataset(ds, ["iso8859"], "")


def elements_to_json(
    elements: list[Element],
    data: bytes | memoryview,
    bulkdata_uri: BulkDataUriBuilder,
    bulk_threshold: int,
    inline_limit: int,
    encodings_of: Callable[[Element | None, list[str]], list[str]],
) -> dict[str, Any]:
    """`dataset_to_json` of the elements `rawread` walked in little endian `data`: the same
    document, read from the bytes without pydicom's Dataset.

    `encodings_of(charset, inherited)` gives the encodings of a dataset from its Specific
    Character Set element (or None). A value that is not a BulkDataURI and is longer than
    `inline_limit` bytes raises ValueError, and a value that cannot be read raises: the
    pydicom path reads those (and logs what it could not read)."""
    walker = _Walker(bulkdata_uri, bulk_threshold, encodings_of)
    return walker.elements(elements, data, inline_limit, ["iso8859"], "")


class _Walker:
    """One walk over a dataset and its items, reading raw values where pydicom left them raw."""

    def __init__(
        self,
        bulkdata_uri: BulkDataUriBuilder | None,
        bulk_threshold: int,
        encodings_of: Callable[[Any, list[str]], list[str]],
    ) -> None:
        """`encodings_of(charset, inherited)`: the encodings of a dataset whose Specific
        Character Set element is `charset` (None when absent) within one using `inherited`."""
        from pydicom.datadict import DicomDictionary

        self.bulkdata_uri = bulkdata_uri
        self.bulk_threshold = bulk_threshold
        self.encodings_of = encodings_of
        self.dictionary = DicomDictionary

    def dataset(self, ds: Dataset, inherited: list[str], prefix: str) -> dict[str, Any]:
        encodings = self.encodings_of(ds.get(0x00080005), inherited)
        little_endian = ds.original_encoding[1] is not False
        out: dict[str, Any] = {}
        for tag in sorted(ds.keys(), key=int):
            if not tag & 0xFFFF:
                continue  # Group Length, excluded by F.2.2
            elem = ds.get_item(tag, keep_deferred=True)
            key = f"{tag:08X}"
            try:
                if elem.is_raw:
                    out[key] = self.raw_element(ds, elem, encodings, prefix + key)
                else:
                    out[key] = self.element(elem, encodings, little_endian, prefix + key)
            except Exception as exc:  # one bad value must not fail the instance
                vr = elem.VR or "UN"
                log.warning(
                    "(%04X,%04X) %s: value left out of the JSON model: %s",
                    tag >> 16,
                    tag & 0xFFFF,
                    vr,
                    exc,
                )
                out[key] = {"vr": vr}
        return out

    def elements(
        self,
        elements: list[Element],
        data: bytes | memoryview,
        inline_limit: int,
        inherited: list[str],
        prefix: str,
    ) -> dict[str, Any]:
        """As `dataset` for the elements of `rawread` (see `elements_to_json`)."""
        charset = next((e for e in elements if e.tag == 0x00080005), None)
        encodings = self.encodings_of(charset, inherited)
        out: dict[str, Any] = {}
        for elem in elements:
            tag, vr, size = elem.tag, elem.vr, elem.length
            if not tag & 0xFFFF:
                continue  # Group Length, excluded by F.2.2
            key = f"{tag:08X}"
            if vr == "SQ":
                items = [
                    self.elements(item, data, inline_limit, encodings, f"{prefix}{key}/{number}/")
                    for number, item in enumerate(elem.items, 1)
                ]
                out[key] = {"vr": vr, "Value": items} if items else {"vr": vr}
            elif size == 0:
                out[key] = {"vr": vr}
            elif self.wants_uri(tag, vr, size):
                out[key] = {"vr": vr, "BulkDataURI": self.bulkdata_uri(prefix + key)}
            elif size > inline_limit:
                raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is long and not bulk")
            else:
                value = bytes(data[elem.offset : elem.offset + size])  # `data` may be a view
                out[key] = _bytes_json(vr, value, True, encodings)
        return out

    def wants_uri(self, tag: int, vr: str, size: int) -> bool:
        return self.bulkdata_uri is not None and (
            tag in PIXEL_DATA_TAGS or (vr in BULK_VRS and size > self.bulk_threshold)
        )

    def raw_element(
        self, ds: Dataset, raw: RawDataElement, encodings: list[str], path: str
    ) -> dict[str, Any]:
        vr = raw.VR
        if vr is None:  # implicit VR: the public dictionary, else pydicom's full lookup
            entry = self.dictionary.get(raw.tag)
            vr = entry[0] if entry is not None else None
        if vr is None or vr in ("SQ", "UN") or " " in vr:
            # Sequences, ambiguous VRs ("US or SS"), private and UN elements whose VR
            # pydicom resolves from its dictionaries and the dataset's other attributes.
            return self.element(ds[raw.tag], encodings, raw.is_little_endian, path)
        value = raw.value
        size = raw.length if value is None else len(value)
        if size == 0:
            return {"vr": vr}
        if self.wants_uri(raw.tag, vr, size):
            return {"vr": vr, "BulkDataURI": self.bulkdata_uri(path)}
        if value is None:  # deferred read, needed inline after all
            return self.element(ds[raw.tag], encodings, raw.is_little_endian, path)
        return _bytes_json(vr, value, raw.is_little_endian, encodings)

    def element(
        self, elem: DataElement, encodings: list[str], little_endian: bool, path: str
    ) -> dict[str, Any]:
        vr = elem.VR
        value = elem.value
        if vr == "SQ":
            items = [
                self.dataset(item, encodings, f"{path}/{number}/")
                for number, item in enumerate(value, 1)
            ]
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        if elem.is_empty:
            return {"vr": vr}
        if isinstance(value, bytes | bytearray):  # binary VRs, values never decoded
            if self.wants_uri(elem.tag, vr, len(value)):
                return {"vr": vr, "BulkDataURI": self.bulkdata_uri(path)}
            return _bytes_json(vr, bytes(value), little_endian, encodings)
        values = list(value) if elem.VM > 1 else [value]
        if vr in _NUMERIC:
            size = len(values) * _NUMERIC[vr][1]
        else:
            size = sum(len(str(v)) for v in values) + len(values) - 1
        if self.wants_uri(elem.tag, vr, size):
            return {"vr": vr, "BulkDataURI": self.bulkdata_uri(path)}
        if vr == "PN":
            return _with_values(vr, [_person_name(_str(v)) for v in values])
        if vr == "AT":
            return {"vr": vr, "Value": [f"{int(v):08X}" for v in values]}
        if vr in _NUMERIC:
            return _with_values(vr, [_float(v) if vr in ("FL", "FD") else v for v in values])
        if vr in ("DS", "IS"):
            return _with_values(vr, [_decimal_string(vr, _str(v).strip()) for v in values])
        return _with_values(vr, [_strip(vr, _str(v)) for v in values])


def _bytes_json(vr: str, value: bytes, little_endian: bool, encodings: list[str]) -> dict[str, Any]:
    """An attribute from its encoded value (PS3.5 §6.2 encodings, F.2.3 JSON types)."""
    if vr in OTHER_BINARY_VRS:
        return {"vr": vr, "InlineBinary": _inline(value, vr, little_endian)}
    if vr in _NUMERIC:
        return _with_values(vr, _unpack(vr, value, little_endian))
    text = _decode(value, encodings) if vr in _CHARSET_VRS else value.decode("latin-1")
    return _text_json(vr, text)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _with_values(vr: str, values: list[Any]) -> dict[str, Any]:
    """An attribute with Values; empty values are null, a lone empty value is no Value (F.2.5)."""
    if len(values) == 1 and values[0] is None:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _text_json(vr: str, text: str) -> dict[str, Any]:
    if vr in _SINGLE_VALUE_VRS:
        return _with_values(vr, [_strip(vr, text)])
    if vr == "PN":
        return _with_values(vr, [_person_name(v) for v in text.rstrip("\0 ").split("\\")])
    parts = text.split("\\")
    if vr in ("DS", "IS"):
        return _with_values(vr, [_decimal_string(vr, p.strip(" \0")) for p in parts])
    return _with_values(vr, [_strip(vr, p) for p in parts])


def _strip(vr: str, text: str) -> str | None:
    """Value without its padding, or None when empty."""
    text = text.strip(" \0") if vr in _STRIP_BOTH_VRS else text.rstrip(" \0")
    return text or None


def _decimal_string(vr: str, text: str) -> int | float | str | None:
    """DS or IS text as a JSON number when it converts without loss (F.2.3), else the text."""
    if not text:
        return None
    if vr == "IS":
        return int(text) if _IS_TEXT.fullmatch(text) else text
    if not _DS_TEXT.fullmatch(text):
        return text
    if _IS_TEXT.fullmatch(text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        return text
    if repr(number) == text or Decimal(repr(number)) == Decimal(text):
        return number
    return text


def _float(value: float) -> float | str:
    """FL/FD value; JSON has no NaN or Infinity, so those are sent as strings."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _person_name(text: str) -> dict[str, str] | None:
    """PN value as its non-empty component groups (F.2.2), or None when empty."""
    groups = text.rstrip(" \0").split("=")
    name = {key: group for key, group in zip(_PN_GROUPS, groups, strict=False) if group}
    return name or None


def _decode(value: bytes, encodings: list[str]) -> str:
    """Text in the dataset's character set as Unicode (ISO 2022 code extensions by pydicom)."""
    if 0x1B in value:
        from pydicom.charset import decode_bytes

        return decode_bytes(value, encodings, _TEXT_DELIMITERS)
    try:
        return value.decode(encodings[0])
    except UnicodeDecodeError as exc:
        log.warning("text not valid in %s, undecodable bytes replaced: %s", encodings[0], exc)
        return value.decode(encodings[0], errors="replace")


def _unpack(vr: str, value: bytes, little_endian: bool) -> list[Any]:
    code, size = _NUMERIC[vr]
    count, extra = divmod(len(value), size)
    if extra:
        raise ValueError(f"length {len(value)} is not a multiple of {size}")
    numbers = struct.unpack(f"{'<' if little_endian else '>'}{count}{code}", value)
    if vr == "AT":
        return [f"{g:04X}{e:04X}" for g, e in zip(numbers[::2], numbers[1::2], strict=False)]
    if vr in ("FL", "FD"):
        return [_float(n) for n in numbers]
    return list(numbers)


def _inline(value: bytes, vr: str, little_endian: bool) -> str:
    """InlineBinary (F.2.7): base64 of the value bytes in little endian."""
    word = WORD_SIZE[vr]
    if not little_endian and len(value) % word == 0:
        value = swap_words(value, word)
    return base64.b64encode(value).decode("ascii")


def json_values(attr: dict[str, Any]) -> list[Any]:
    """The Value array of a DICOM JSON attribute, empty when it has none."""
    return attr.get("Value") or []


def json_value(attr: dict[str, Any]) -> Any:
    """The first value of a DICOM JSON attribute, or None."""
    values = attr.get("Value")
    return values[0] if values else None


def element_json(tag: int | str, vr: str, values: list[Any]) -> dict[str, dict[str, Any]]:
    """One attribute as a DICOM JSON fragment ``{"ggggeeee": {"vr": ..., "Value": [...]}}``.

    Values are Python values: None or "" for an empty value (null, F.2.5), a PN as its DICOM
    string ("Yamada^Tarou=山田^太郎") or as a component group object, an AT as an int, SQ items
    as DICOM JSON objects, a binary VR's value as bytes (InlineBinary).
    """
    key = _tag_key(tag)
    if vr in OTHER_BINARY_VRS:
        data = b"".join(values)
        attr = {"vr": vr, "InlineBinary": base64.b64encode(data).decode()} if data else {"vr": vr}
        return {key: attr}
    converted: list[Any] = []
    for v in values:
        if v is None or v == "":
            converted.append(None)
        elif vr == "PN" and isinstance(v, str):
            converted.append(_person_name(v))
        elif vr == "AT" and isinstance(v, int):
            converted.append(f"{v:08X}")
        else:
            converted.append(v)
    return {key: {"vr": vr, "Value": converted} if values else {"vr": vr}}


def keyword_json(keyword: str, values: list[Any]) -> tuple[str, dict[str, Any]]:
    """(tag, attribute) for a PS3.6 keyword, VR from the data dictionary; see `element_json`.

    Raise KeyError for a keyword the dictionary does not know, and ValueError for one whose
    VR depends on the dataset ("US or SS").
    """
    dictionary = _dictionary()
    if keyword not in dictionary.keywords:
        raise KeyError(f"'{keyword}' is not a keyword of the DICOM data dictionary (PS3.6)")
    tag = dictionary.keywords[keyword]
    vr = dictionary.entries[tag][0]
    if " " in vr:
        raise ValueError(f"{keyword} has VR '{vr}': build it with element_json and one VR")
    key = f"{tag:08X}"
    return key, element_json(key, vr, values)[key]


def tag_keyword(tag: int) -> str:
    """The PS3.6 keyword of a public tag, or "" for private and unknown tags."""
    return _dictionary().keyword(tag)


def _tag_key(tag: int | str) -> str:
    key = f"{tag:08X}" if isinstance(tag, int) else tag.upper()
    if len(key) != 8 or any(c not in "0123456789ABCDEF" for c in key):
        raise ValueError(f"tag {tag!r} is not 8 hexadecimal digits")
    return key


class _Dictionary:
    """PS3.6 data dictionary: entries by tag, tags by keyword, repeater masks."""

    def __init__(self, module: ModuleType) -> None:
        self.entries: dict[int, tuple[str, ...]] = module.DicomDictionary
        self.keywords = {entry[4]: tag for tag, entry in self.entries.items() if entry[4]}
        self.repeaters = [
            (
                int(mask.replace("0", "F").replace("x", "0"), 16),
                int(mask.replace("x", "0"), 16),
                entry,
            )
            for mask, entry in module.RepeatersDictionary.items()
        ]

    def keyword(self, tag: int) -> str:
        """Keyword of a public tag, or "" for private and unknown tags."""
        if tag >> 16 & 1:
            return ""
        entry = self.entries.get(tag)
        if entry is None:
            entry = next((e for mask, v, e in self.repeaters if tag & mask == v), None)
        return entry[4] if entry is not None else ""


@cache
def _dictionary() -> _Dictionary:
    """pydicom's data dictionary. When pydicom is not imported yet, load only its data module:
    importing the package costs ~400 ms of Lambda cold start (numpy), the table ~7 ms."""
    if "pydicom" in sys.modules:
        from pydicom import _dicom_dict

        return _Dictionary(_dicom_dict)
    package = importlib.util.find_spec("pydicom")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("pydicom is needed for the DICOM data dictionary")
    location = f"{package.submodule_search_locations[0]}/_dicom_dict.py"
    spec = importlib.util.spec_from_file_location("pydicom._dicom_dict", location)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load the DICOM data dictionary from {location}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _Dictionary(module)


_NATIVE_DICOM_MODEL = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"'
    ' xml:space="preserve">'
)
# Characters XML 1.0 cannot carry at all, even as character references.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def json_to_xml(datasets: list[dict[str, Any]]) -> list[bytes]:
    """One Native DICOM Model document per DICOM JSON dataset, PS3.19 Native DICOM Model
    (2025b), UTF-8 with an XML declaration.

    Keywords come from the data dictionary (none for private or unknown tags); a private
    attribute names its creator in privateCreator when the dataset holds the creator element.
    Characters that XML 1.0 cannot represent become U+FFFD.
    """
    documents = []
    for ds in datasets:
        parts = [_NATIVE_DICOM_MODEL]
        _xml_dataset(ds, parts, _dictionary())
        parts.append("</NativeDicomModel>\n")
        documents.append("".join(parts).encode("utf-8"))
    return documents


def _xml_dataset(ds: dict[str, Any], parts: list[str], dictionary: _Dictionary) -> None:
    for key in sorted(ds):
        attr = ds[key]
        tag = int(key, 16)
        vr = attr.get("vr", "UN")
        head = f'<DicomAttribute tag="{key.upper()}" vr="{_xml_attr(vr)}"'
        keyword = dictionary.keyword(tag)
        if keyword:
            head += f' keyword="{keyword}"'
        elif tag >> 16 & 1 and tag & 0xFFFF >= 0x1000:
            creator = json_value(ds.get(f"{tag >> 16:04X}00{tag >> 8 & 0xFF:02X}", {}))
            if isinstance(creator, str):
                head += f' privateCreator="{_xml_attr(creator)}"'
        parts.append(head + ">")
        if "BulkDataURI" in attr:
            parts.append(f'<BulkData uri="{_xml_attr(attr["BulkDataURI"])}"/>')
        elif "InlineBinary" in attr:
            parts.append(f"<InlineBinary>{_xml_text(attr['InlineBinary'])}</InlineBinary>")
        for number, value in enumerate(json_values(attr), 1):
            if vr == "SQ":
                parts.append(f'<Item number="{number}">')
                _xml_dataset(value or {}, parts, dictionary)
                parts.append("</Item>")
            elif vr == "PN":
                _xml_person_name(number, value, parts)
            elif value is None:
                parts.append(f'<Value number="{number}"/>')
            else:
                parts.append(f'<Value number="{number}">{_xml_text(_xml_scalar(value))}</Value>')
        parts.append("</DicomAttribute>")


def _xml_person_name(number: int, value: dict[str, str] | None, parts: list[str]) -> None:
    """PersonName with its component groups split into name components (PS3.19 A.1.5)."""
    if not value:
        parts.append(f'<PersonName number="{number}"/>')
        return
    parts.append(f'<PersonName number="{number}">')
    for group in _PN_GROUPS:
        if value.get(group):
            parts.append(f"<{group}>")
            for name, component in zip(_PN_COMPONENTS, value[group].split("^"), strict=False):
                if component:
                    parts.append(f"<{name}>{_xml_text(component)}</{name}>")
            parts.append(f"</{group}>")
    parts.append("</PersonName>")


def _xml_scalar(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _xml_text(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A literal CR would be normalised to LF by any XML parser.
    text = text.replace("\r", "&#13;")
    return _XML_INVALID.sub("\ufffd", text)


def _xml_attr(text: str) -> str:
    text = _xml_text(text).replace('"', "&quot;")
    return text.replace("\n", "&#10;").replace("\t", "&#9;")
