"""DICOM JSON model (PS3.18 Annex F) and Native DICOM Model XML (PS3.19) formatting."""

from __future__ import annotations

import base64
import logging
import math
import struct
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from array import array
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from chalicelib.dicom.jsonmodel import (
    BULK_VRS,
    PIXEL_DATA_TAGS,
    dataset_to_json,
    element_json,
    json_to_xml,
    json_value,
    json_values,
    keyword_json,
)
from tests.conftest import TESTDATA
from tests.corpus import orthanc_files

ORTHANC = TESTDATA
ORTHANC_FILES = orthanc_files()
PYDICOM_FILES = [
    get_testdata_file(name)
    for name in (
        "CT_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "ExplVR_BigEnd.dcm",
        "image_dfl.dcm",
        "rtplan.dcm",
        "waveform_ecg.dcm",
        "nested_priv_SQ.dcm",
        "UN_sequence.dcm",
        "reportsi_with_empty_number_tags.dcm",
        "empty_charset_LEI.dcm",
        "examples_overlay.dcm",
    )
] + [
    get_charset_files(name)[0]
    for name in ("chrH31.dcm", "chrX1.dcm", "chrSQEncoding.dcm", "chrJapMulti.dcm", "chrI2.dcm")
]
ALL_FILES = [str(p) for p in ORTHANC_FILES] + [str(p) for p in PYDICOM_FILES]
NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def _id(path: str) -> str:
    return path.split("orthanc-tests/")[-1].split("/")[-1]


def _uri(path: str) -> str:
    return f"https://example.org/bulk/{path}"


def _read(path: str | Path, **kwargs: Any) -> Dataset:
    with warnings.catch_warnings():  # some samples are deliberately non-conformant
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True, **kwargs)


def _reference(ds: Dataset) -> dict[str, Any]:
    """pydicom's own DICOM JSON of `ds`, everything inline."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.to_json_dict(bulk_data_threshold=1 << 40)


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _normal_value(vr: str, value: Any) -> Any:
    if vr == "PN":
        groups = {k: v for k, v in (value or {}).items() if v}
        return groups or None
    if isinstance(value, str):
        return value.strip(" \0") or None
    return value


def _swap(data: bytes, vr: str) -> bytes:
    codes = {"OW": "H", "OF": "f", "OL": "f", "OD": "d", "OV": "d"}
    if vr not in codes:
        return data
    words = array(codes[vr], data)
    words.byteswap()
    return words.tobytes()


def _assert_same(ours: dict, ref: dict, little_endian: bool, where: str = "") -> None:
    """`ours` equals pydicom's JSON up to what PS3.18 Annex F leaves open or we do better:
    DS/IS numbers vs strings, padding, null vs "" for empty values, empty PN groups,
    Group Length (excluded by F.2.2), InlineBinary in little endian."""
    ref = {k: v for k, v in ref.items() if not k.endswith("0000")}
    assert sorted(ours) == sorted(ref), where
    for key, attr in ours.items():
        expected = ref[key]
        here = f"{where}/{key}"
        assert attr["vr"] == expected["vr"], here
        if "InlineBinary" in expected or "InlineBinary" in attr:
            data = base64.b64decode(expected["InlineBinary"])
            if not little_endian:
                data = _swap(data, attr["vr"])
            assert base64.b64decode(attr["InlineBinary"]) == data, here
            continue
        assert ("Value" in attr) == (expected.get("Value", []) not in ([], [""])), here
        if attr["vr"] == "SQ":
            for number, (item, ref_item) in enumerate(
                zip(attr.get("Value", []), expected.get("Value", []), strict=True), 1
            ):
                _assert_same(item, ref_item, little_endian, f"{here}/{number}")
            continue
        values = attr.get("Value", [])
        ref_values = expected.get("Value", [])
        assert len(values) == len(ref_values), here
        for value, ref_value in zip(values, ref_values, strict=True):
            if attr["vr"] in ("DS", "IS") and _as_number(value) is not None:
                assert math.isclose(_as_number(value), _as_number(ref_value)), here
            else:
                assert _normal_value(attr["vr"], value) == _normal_value(attr["vr"], ref_value), (
                    here
                )


def _element_at(ds: Dataset, path: str) -> pydicom.DataElement:
    """The element a BulkDataURI tag path names: "7FE00010", "60031010/1/60031011"."""
    parts = path.split("/")
    for tag, number in zip(parts[:-1:2], parts[1::2], strict=True):
        ds = ds[int(tag, 16)].value[int(number) - 1]
    return ds[int(parts[-1], 16)]


def _byte_length(elem: pydicom.DataElement) -> int:
    if isinstance(elem.value, bytes):
        return len(elem.value)
    sizes = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}
    if elem.VR in sizes:
        return elem.VM * sizes[elem.VR]
    values = elem.value if elem.VM > 1 else [elem.value]
    return len("\\".join(str(v) for v in values))


def _bulk_uris(model: dict, prefix: str = "") -> dict[str, str]:
    """Tag path -> BulkDataURI of every bulk attribute in a JSON model."""
    found = {}
    for key, attr in model.items():
        if "BulkDataURI" in attr:
            found[prefix + key] = attr["BulkDataURI"]
        for number, item in enumerate(attr.get("Value", []) if attr["vr"] == "SQ" else [], 1):
            found.update(_bulk_uris(item, f"{prefix}{key}/{number}/"))
    return found


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_dataset_to_json_matches_pydicom(path: str) -> None:
    ds = _read(path)
    little_endian = ds.original_encoding[1] is not False
    model = dataset_to_json(ds, None)
    _assert_same(model, _reference(ds), little_endian)
    # pydicom has now converted every element: the same model from the converted values
    assert dataset_to_json(ds, None) == model


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_dataset_to_json_bulk_uris_name_their_elements(path: str) -> None:
    ds = _read(path)
    model = dataset_to_json(ds, _uri, 256)
    inline = dataset_to_json(_read(path), None)
    for tag_path, uri in _bulk_uris(model).items():
        assert uri == _uri(tag_path)
        elem = _element_at(ds, tag_path)
        assert elem.VR in BULK_VRS
        if elem.tag not in PIXEL_DATA_TAGS:
            assert _byte_length(elem) > 256, tag_path
    # every inline binary value over the threshold became a BulkDataURI
    for key, attr in inline.items():
        if "InlineBinary" in attr and len(base64.b64decode(attr["InlineBinary"])) > 256:
            assert "BulkDataURI" in model[key]


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_dataset_to_json_deferred_read_same_model(path: str) -> None:
    ds = _read(path)
    deferred = _read(path, defer_size=64)
    assert dataset_to_json(deferred, _uri, 100) == dataset_to_json(ds, _uri, 100)
    assert dataset_to_json(_read(path, defer_size=64), None) == dataset_to_json(_read(path), None)


def test_dataset_to_json_empty_value_has_no_value() -> None:
    model = dataset_to_json(_read(ORTHANC / "Issue111.dcm"), _uri)
    assert model["00080050"] == {"vr": "SH"}
    assert dataset_to_json(_read(ORTHANC / "Issue195.dcm"), _uri)["00081030"] == {"vr": "LO"}


def test_dataset_to_json_un_inline_under_threshold_bulk_above() -> None:
    ds = _read(ORTHANC / "Issue195-bis.dcm")
    assert dataset_to_json(ds, _uri)["00084567"] == {"vr": "UN", "InlineBinary": "QgA="}
    assert dataset_to_json(ds, None, 0)["00084567"] == {"vr": "UN", "InlineBinary": "QgA="}
    model = dataset_to_json(ds, _uri, 0)
    assert model["00084567"] == {"vr": "UN", "BulkDataURI": _uri("00084567")}
    assert model["00084565"] == {"vr": "UN"}


def test_dataset_to_json_nested_bulk_data_uri() -> None:
    ds = _read(ORTHANC / "PrivateTags.dcm")
    model = dataset_to_json(ds, _uri, 12287)
    items = model["60031010"]["Value"]
    assert [item["60031011"] for item in items] == [
        {"vr": "OB", "BulkDataURI": _uri("60031010/1/60031011")},
        {"vr": "OB", "BulkDataURI": _uri("60031010/2/60031011")},
    ]
    assert len(_element_at(ds, "60031010/1/60031011").value) == 12288
    assert items[0]["60030010"] == {"vr": "LO", "Value": ["GEMS_Ultrasound_ImageGroup_001"]}
    assert model["7FE00010"] == {"vr": "OB", "BulkDataURI": _uri("7FE00010")}
    # at the threshold the first item's value is inline
    assert "InlineBinary" in dataset_to_json(ds, _uri, 12288)["60031010"]["Value"][0]["60031011"]


def test_dataset_to_json_pixel_data_always_bulk() -> None:
    ds = _read(ORTHANC / "MultiframeWindowing.dcm")
    model = dataset_to_json(ds, _uri, 1 << 20)
    assert model["7FE00010"] == {"vr": "OW", "BulkDataURI": _uri("7FE00010")}
    inline = dataset_to_json(ds, None, 0)["7FE00010"]["InlineBinary"]
    assert base64.b64decode(inline) == b"\x00\x00\x10\x00\x20\x00\x30\x00" * 4


def test_dataset_to_json_private_ds() -> None:
    model = dataset_to_json(_read(ORTHANC / "Issue168.dcm"), _uri)
    assert model["00090010"] == {"vr": "LO", "Value": ["Lunit"]}
    assert model["00091001"] == {"vr": "DS", "Value": [98.41]}
    assert model["00091003"]["vr"] == "SQ"


def test_dataset_to_json_od_of_ol_all_values() -> None:
    ds = _read(ORTHANC / "2026-03-16-OD-OF-OL.dcm")
    model = dataset_to_json(ds, _uri)
    for key, vr, fmt in (
        ("00660016", "OF", "<3f"),
        ("0070150D", "OD", "<3d"),
        ("00660041", "OL", "<3L"),
    ):
        assert model[key]["vr"] == vr
        values = struct.unpack(fmt, base64.b64decode(model[key]["InlineBinary"]))
        assert values == struct.unpack(fmt, ds[int(key, 16)].value)
        assert len(values) == 3
    assert struct.unpack("<3L", base64.b64decode(model["00660041"]["InlineBinary"])) == (42, 0, 15)


@pytest.mark.parametrize(
    ("name", "charset", "patient_name"),
    [
        ("SCSX1", ["ISO_IR 192"], {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        ("SCSX2", ["GB18030"], {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}),
        (
            "SCSH31",
            [None, "ISO 2022 IR 87"],
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        (
            "SCSH32",
            ["ISO 2022 IR 13", "ISO 2022 IR 87"],
            {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        (
            "SCSI2",
            [None, "ISO 2022 IR 149"],
            {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"},
        ),
        ("SCSGREEK", ["ISO_IR 126"], {"Alphabetic": "Διονυσιος"}),
        ("SCSRUSS", ["ISO_IR 144"], {"Alphabetic": "Люкceмбypг"}),
        ("SCSARAB", ["ISO_IR 127"], {"Alphabetic": "قباني^لنزار"}),
        ("SCSHBRW", ["ISO_IR 138"], {"Alphabetic": "שרון^דבורה"}),
        ("SCSFREN", ["ISO_IR 100"], {"Alphabetic": "Buc^Jérôme"}),
        ("SCSGERM", ["ISO_IR 100"], {"Alphabetic": "Äneas^Rüdiger"}),
    ],
)
def test_dataset_to_json_character_sets(name: str, charset: list, patient_name: dict) -> None:
    model = dataset_to_json(_read(ORTHANC / "Encodings/DavidClunie" / name), _uri)
    assert model["00080005"] == {"vr": "CS", "Value": charset}
    assert model["00100010"] == {"vr": "PN", "Value": [patient_name]}


def test_dataset_to_json_charset_of_sequence_item() -> None:
    model = dataset_to_json(_read(get_charset_files("chrSQEncoding.dcm")[0]), None)
    assert model["00321032"]["Value"] == [{"Alphabetic": "Doctor^Who^^MD"}]
    item = model["00321064"]["Value"][0]
    assert item["00080005"]["Value"] == ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


def test_dataset_to_json_big_endian_inline_binary_is_little_endian() -> None:
    little = dataset_to_json(_read(get_testdata_file("MR_small.dcm")), None)
    big = dataset_to_json(_read(get_testdata_file("MR_small_bigendian.dcm")), None)
    assert big["7FE00010"]["vr"] == "OW"
    assert big["7FE00010"]["InlineBinary"] == little["7FE00010"]["InlineBinary"]
    assert big["00280010"] == little["00280010"] == {"vr": "US", "Value": [64]}


def _single(vr: str, value: Any, tag: int = 0x00091010) -> dict[str, Any]:
    ds = Dataset()
    ds.add_new(0x00090010, "LO", "TEST")
    ds.add_new(tag, vr, value)
    return dataset_to_json(ds, None)[f"{tag:08X}"]


def _raw(vr: str, value: bytes, big_endian: bool = False) -> dict[str, Any]:
    """One element as read from an explicit VR file (raw bytes)."""
    ds = Dataset()
    ds.set_original_encoding(False, not big_endian, "ISO_IR 100")
    ds._dict[pydicom.tag.Tag(0x00091010)] = pydicom.dataelem.RawDataElement(
        pydicom.tag.Tag(0x00091010), vr, len(value), value, 0, False, not big_endian
    )
    return dataset_to_json(ds, None)["00091010"]


@pytest.mark.parametrize(
    ("vr", "text", "expected"),
    [
        ("DS", b"5 ", [5]),
        ("DS", b"-1024", [-1024]),
        ("DS", b"98.41", [98.41]),
        ("DS", b"0.50", [0.5]),
        ("DS", b"1e3 ", [1000.0]),
        ("DS", b" 1.5\\2", [1.5, 2]),
        ("DS", b"0.12345678901234567890", ["0.12345678901234567890"]),
        ("DS", b"1e999", ["1e999"]),
        ("DS", b"nan", ["nan"]),
        ("DS", b"1_0", ["1_0"]),
        ("DS", b"abc", ["abc"]),
        ("DS", b"1\\\\3", [1, None, 3]),
        ("IS", b"12 ", [12]),
        ("IS", b"+7", [7]),
        ("IS", b"1.5", ["1.5"]),
        ("ST", b"a\\b ", ["a\\b"]),
        ("LT", b"line 1\r\nline\\2", ["line 1\r\nline\\2"]),
        ("UT", b"x\\y", ["x\\y"]),
        ("CS", b" A \\B", ["A", "B"]),
        ("UI", b"1.2.3\0", ["1.2.3"]),
        ("LO", b"caf\xe9", ["café"]),
        ("PN", b"A^B\\=C^D", [{"Alphabetic": "A^B"}, {"Ideographic": "C^D"}]),
        ("PN", b"A^B\\", [{"Alphabetic": "A^B"}, None]),
        ("AT", b"\x10\x00\x10\x00\x08\x00\x05\x00", ["00100010", "00080005"]),
        ("US", b"\x01\x00\x02\x00", [1, 2]),
        ("SS", b"\xff\xff", [-1]),
        ("FL", struct.pack("<3f", 1.5, math.inf, math.nan), [1.5, "Infinity", "NaN"]),
        ("FD", struct.pack("<d", -0.25), [-0.25]),
        ("UV", struct.pack("<Q", 2**63), [2**63]),
    ],
)
def test_dataset_to_json_raw_values(vr: str, text: bytes, expected: list) -> None:
    assert _raw(vr, text) == {"vr": vr, "Value": expected}


def test_dataset_to_json_raw_values_big_endian() -> None:
    assert _raw("US", b"\x01\x00", big_endian=True) == {"vr": "US", "Value": [256]}
    assert _raw("OW", b"\x01\x02\x03\x04", big_endian=True) == {
        "vr": "OW",
        "InlineBinary": base64.b64encode(b"\x02\x01\x04\x03").decode(),
    }
    assert _raw("OB", b"\x01\x02", big_endian=True)["InlineBinary"] == "AQI="


def test_dataset_to_json_bad_value_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chalicelib.dicom.jsonmodel"):
        assert _raw("US", b"\x01\x00\x02") == {"vr": "US"}
    assert "(0009,1010) US" in caplog.text


def test_dataset_to_json_in_memory_values() -> None:
    assert _single("DS", ["1.5", "2"]) == {"vr": "DS", "Value": [1.5, 2]}
    assert _single("IS", 3) == {"vr": "IS", "Value": [3]}
    assert _single("PN", "Yamada^Tarou=山田^太郎") == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
    assert _single("AT", [0x00100010]) == {"vr": "AT", "Value": ["00100010"]}
    assert _single("FD", [math.inf]) == {"vr": "FD", "Value": ["Infinity"]}
    assert _single("ST", "a\\b") == {"vr": "ST", "Value": ["a\\b"]}
    assert _single("LO", "") == {"vr": "LO"}
    assert _single("OB", b"\x01\x02") == {"vr": "OB", "InlineBinary": "AQI="}
    item = Dataset()
    item.PatientID = "X"
    assert _single("SQ", Sequence([item, Dataset()])) == {
        "vr": "SQ",
        "Value": [{"00100020": {"vr": "LO", "Value": ["X"]}}, {}],
    }
    assert _single("SQ", Sequence()) == {"vr": "SQ"}


def test_dataset_to_json_group_length_excluded() -> None:
    model = dataset_to_json(_read(ORTHANC / "TransferSyntaxes/1.2.840.10008.1.2.2.dcm"), _uri)
    assert not [key for key in model if key.endswith("0000")]
    assert model["00280010"] == {"vr": "US", "Value": [480]}


def test_element_json_builds_one_attribute() -> None:
    assert element_json(0x00081190, "UR", ["http://x/studies/1"]) == {
        "00081190": {"vr": "UR", "Value": ["http://x/studies/1"]}
    }
    assert element_json("0020000d", "UI", []) == {"0020000D": {"vr": "UI"}}
    assert element_json(0x00100010, "PN", ["A^B=C", None]) == {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B", "Ideographic": "C"}, None]}
    }
    assert element_json(0x00209165, "AT", [0x00100010]) == {
        "00209165": {"vr": "AT", "Value": ["00100010"]}
    }
    assert element_json(0x00091001, "OB", [b"\x01"]) == {
        "00091001": {"vr": "OB", "InlineBinary": "AQ=="}
    }
    with pytest.raises(ValueError, match="8 hexadecimal"):
        element_json("PatientName", "PN", [])


def test_keyword_json_looks_up_tag_and_vr() -> None:
    assert keyword_json("FailureReason", [0xC000]) == ("00081197", {"vr": "US", "Value": [0xC000]})
    assert keyword_json("ReferencedSOPSequence", []) == ("00081199", {"vr": "SQ"})
    with pytest.raises(KeyError, match="NotAKeyword"):
        keyword_json("NotAKeyword", [])
    with pytest.raises(ValueError, match="US or SS"):
        keyword_json("SmallestImagePixelValue", [0])


def test_json_value_and_values() -> None:
    assert json_value({"vr": "SH"}) is None
    assert json_values({"vr": "SH"}) == []
    assert json_value({"vr": "CS", "Value": ["A", "B"]}) == "A"
    assert json_values({"vr": "CS", "Value": ["A", "B"]}) == ["A", "B"]


def _attrs(root: ET.Element) -> dict[str, ET.Element]:
    return {a.get("tag"): a for a in root.findall(f"{NS}DicomAttribute")}


def test_json_to_xml_native_model() -> None:
    [document] = json_to_xml(
        [dataset_to_json(_read(ORTHANC / "Encodings/DavidClunie/SCSH31"), _uri)]
    )
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(document)
    assert root.tag == f"{NS}NativeDicomModel"
    attrs = _attrs(root)
    charset = attrs["00080005"]
    assert (charset.get("vr"), charset.get("keyword")) == ("CS", "SpecificCharacterSet")
    assert [(v.get("number"), v.text) for v in charset] == [("1", None), ("2", "ISO 2022 IR 87")]
    name = attrs["00100010"].find(f"{NS}PersonName")
    assert name.get("number") == "1"
    assert name.findtext(f"{NS}Alphabetic/{NS}FamilyName") == "Yamada"
    assert name.findtext(f"{NS}Alphabetic/{NS}GivenName") == "Tarou"
    assert name.findtext(f"{NS}Ideographic/{NS}FamilyName") == "山田"
    assert name.findtext(f"{NS}Phonetic/{NS}GivenName") == "たろう"
    assert attrs["7FE00010"].find(f"{NS}BulkData").get("uri") == _uri("7FE00010")


def test_json_to_xml_sequences_private_and_numbers() -> None:
    [document] = json_to_xml([dataset_to_json(_read(ORTHANC / "PrivateTags.dcm"), _uri)])
    attrs = _attrs(ET.fromstring(document))
    sequence = attrs["60031010"]
    assert sequence.get("keyword") is None
    assert sequence.get("privateCreator") == "GEMS_Ultrasound_ImageGroup_001"
    items = sequence.findall(f"{NS}Item")
    assert [item.get("number") for item in items] == ["1", "2"]
    nested = _attrs(items[1])
    assert nested["60031011"].find(f"{NS}BulkData").get("uri") == _uri("60031010/2/60031011")
    assert nested["00280010"].findtext(f"{NS}Value") == "480"
    [document] = json_to_xml([dataset_to_json(_read(ORTHANC / "Issue168.dcm"), None)])
    assert _attrs(ET.fromstring(document))["00091001"].findtext(f"{NS}Value") == "98.41"


def test_json_to_xml_escapes_text() -> None:
    dataset = {
        **element_json(0x00081030, "LO", ['a & b <c> "d"']),
        **element_json(0x00204000, "LT", ["x\r\ny\x01z\x1b"]),
        **element_json(0x00100010, "PN", ["O'Brien&Co^<Ann>"]),
        **element_json(0x00091001, "OB", [b"\x00\xff"]),
        **element_json(0x00081190, "UR", ['http://x/?a=1&b="2"']),
    }
    dataset["00091002"] = {"vr": "OB", "BulkDataURI": 'http://x/?a=1&b="2"'}
    dataset["00090010"] = {"vr": "LO", "Value": ['A&"B"']}
    [document] = json_to_xml([dataset])
    attrs = _attrs(ET.fromstring(document))
    assert attrs["00081030"].findtext(f"{NS}Value") == 'a & b <c> "d"'
    assert attrs["00204000"].findtext(f"{NS}Value") == "x\r\ny\ufffdz\ufffd"
    assert attrs["00100010"].findtext(f"{NS}PersonName/{NS}Alphabetic/{NS}GivenName") == "<Ann>"
    assert attrs["00091001"].findtext(f"{NS}InlineBinary") == "AP8="
    assert attrs["00091001"].get("privateCreator") == 'A&"B"'
    assert attrs["00091002"].find(f"{NS}BulkData").get("uri") == 'http://x/?a=1&b="2"'


@pytest.mark.parametrize("path", ALL_FILES, ids=_id)
def test_json_to_xml_every_test_file(path: str) -> None:
    model = dataset_to_json(_read(path), _uri, 64)
    [document] = json_to_xml([model])
    attrs = _attrs(ET.fromstring(document))
    assert sorted(attrs) == sorted(model)
    for key, attr in model.items():
        element = attrs[key]
        assert element.get("vr") == attr["vr"]
        children = {"SQ": "Item", "PN": "PersonName"}.get(attr["vr"], "Value")
        assert len(element.findall(f"{NS}{children}")) == len(json_values(attr))


def test_json_to_xml_and_keyword_json_do_not_import_pydicom() -> None:
    """QIDO-RS builds JSON and XML without paying pydicom's import at cold start."""
    code = (
        "import sys\n"
        "from chalicelib.dicom.jsonmodel import json_to_xml, keyword_json\n"
        "tag, attr = keyword_json('PatientName', ['A^B'])\n"
        "[doc] = json_to_xml([{tag: attr, '60003000': {'vr': 'OW'}}])\n"
        "assert b'keyword=\"OverlayData\"' in doc and b'keyword=\"PatientName\"' in doc, doc\n"
        "assert 'pydicom' not in sys.modules and 'numpy' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
