"""Parsing of QIDO-RS query parameters, PS3.18 §8.3.4 (2025b)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from chalicelib.dicom.qido import parse_qido_query, parse_query_string
from chalicelib.dicom.query import AttributeMatch, InvalidQuery, QidoQuery
from chalicelib.dicom.tags import KEYWORDS, lookup_keyword, lookup_tag


def parse(raw: str, level: str = "study", **kwargs: Any) -> QidoQuery:
    options = {"max_limit": 1000, "default_limit": 100, **kwargs}
    return parse_qido_query(level, parse_query_string(raw), **options)  # type: ignore[arg-type]


def only_match(raw: str, level: str = "study") -> AttributeMatch:
    (match,) = parse(raw, level).matches
    return match


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("PatientName=Doe%5EJohn", [("PatientName", "Doe^John")]),
        ("PatientName=Doe+John", [("PatientName", "Doe John")]),
        ("TimezoneOffsetFromUTC=%2B0100", [("TimezoneOffsetFromUTC", "+0100")]),
        ("&includefield=00081030", [("includefield", "00081030")]),
        ("a=1&a=2", [("a", "1"), ("a", "2")]),
        ("PatientName", [("PatientName", "")]),
        ("PatientName=%D0%93*", [("PatientName", "Г*")]),
    ],
    ids=[
        "empty",
        "percent",
        "plus-is-space",
        "encoded-plus",
        "weasis-leading-amp",
        "repeated",
        "no-equals",
        "utf8",
    ],
)
def test_parse_query_string_pairs(raw: str, expected: list[tuple[str, str]]) -> None:
    assert parse_query_string(raw) == expected


def test_parse_qido_query_defaults() -> None:
    query = parse("")
    assert query == QidoQuery(level="study", matches=(), limit=100)


@pytest.mark.parametrize(
    ("raw", "tag", "kind", "values"),
    [
        ("PatientName=Doe*", "00100010", "wildcard", ("Doe*",)),
        ("00100010=Doe", "00100010", "single", ("Doe",)),
        ("0020000d=1.2.3", "0020000D", "uids", ("1.2.3",)),
        ("PatientID=", "00100020", "universal", ()),
        ("PatientID=*", "00100020", "universal", ()),
        ("StudyDate=20200101-20200131", "00080020", "range", ("20200101", "20200131")),
        ("StudyDate=-20200131", "00080020", "range", ("", "20200131")),
        ("StudyDate=20200101-", "00080020", "range", ("20200101", "")),
        ("StudyTime=10-1030.5", "00080030", "range", ("10", "1030.5")),
        (
            "AcquisitionDateTime=20200101-0500",
            "0008002A",
            "range",
            ("20200101-0500", "20200101-0500"),
        ),
        (
            "AcquisitionDateTime=20200101-0500-20200102%2B0100",
            "0008002A",
            "range",
            ("20200101-0500", "20200102+0100"),
        ),
        ("StudyInstanceUID=1.2,1.3", "0020000D", "uids", ("1.2", "1.3")),
        ("StudyInstanceUID=1.2\\1.3", "0020000D", "uids", ("1.2", "1.3")),
        ("ModalitiesInStudy=CT\\MR", "00080061", "single", ("CT", "MR")),
        ("StudyDescription=a\\b", "00081030", "single", ("a", "b")),
        ("PatientComments=a\\b", "00104000", "single", ("a\\b",)),
        ("Rows=512", "00280010", "single", ("512",)),
        ('PatientSex=""', "00100040", "single", ('""',)),
    ],
    ids=[
        "keyword",
        "tag",
        "tag-lowercase",
        "universal",
        "universal-star",
        "range",
        "range-to",
        "range-from",
        "tm-partial-range",
        "dt-offset-single",
        "dt-offset-range",
        "uid-list",
        "uid-list-backslash",
        "cs-list",
        "lo-list",
        "lt-no-list",
        "number",
        "quotes-without-evm",
    ],
)
def test_parse_qido_query_keys(raw: str, tag: str, kind: str, values: tuple[str, ...]) -> None:
    match = only_match(raw)
    assert (match.tag, match.kind, match.values) == (tag, kind, values)


def test_parse_qido_query_empty_value_key() -> None:
    match = only_match('PatientSex=""&emptyvaluematching=true')
    assert match.kind == "empty"


def test_parse_qido_query_multiple_value_matching() -> None:
    assert only_match("ModalitiesInStudy=CT\\PT&multiplevaluematching=true").all_values
    assert not only_match("ModalitiesInStudy=CT\\PT").all_values
    assert not only_match("ModalitiesInStudy=CT&multiplevaluematching=true").all_values


def test_parse_qido_query_sequence_keys_grouped() -> None:
    (match,) = parse(
        "RequestAttributesSequence.ScheduledProcedureStepID=S1&00400275.00401001=R1",
        "series",
    ).matches
    assert (match.tag, match.kind) == ("00400275", "sequence")
    assert [item.tag for item in match.items] == ["00400009", "00401001"]


def test_parse_qido_query_path_uids() -> None:
    query = parse("", "instance", study_uid="1.2", series_uid="1.2.3")
    assert [(m.tag, m.values) for m in query.matches] == [
        ("0020000D", ("1.2",)),
        ("0020000E", ("1.2.3",)),
    ]


def test_parse_qido_query_repeated_uid_key_is_a_list() -> None:
    assert only_match("SOPInstanceUID=1.2&SOPInstanceUID=1.3").values == ("1.2", "1.3")


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        ("fuzzymatching=true", "fuzzymatching", True),
        ("fuzzymatching=TRUE", "fuzzymatching", True),
        ("fuzzymatching=false", "fuzzymatching", False),
        ("emptyvaluematching=true", "emptyvaluematching", True),
        ("multiplevaluematching=true", "multiplevaluematching", True),
        ("limit=10", "limit", 10),
        ("limit=0", "limit", 100),
        ("offset=20", "offset", 20),
        ("includefield=all", "include_all", True),
        (
            "includefield=00081030,StudyDescription&includefield=Modality",
            "includefield",
            ("00081030", "00080060"),
        ),
        (
            "includefield=RequestAttributesSequence.RequestedProcedureID",
            "includefield",
            ("00400275",),
        ),
    ],
    ids=[
        "fuzzy",
        "fuzzy-upper",
        "fuzzy-false",
        "empty-value",
        "multiple-value",
        "limit",
        "limit-zero-default",
        "offset",
        "includefield-all",
        "includefield-list",
        "includefield-sequence-path",
    ],
)
def test_parse_qido_query_controls(raw: str, field: str, expected: Any) -> None:
    assert getattr(parse(raw), field) == expected


def test_parse_qido_query_limit_clamped_with_warning() -> None:
    query = parse("limit=5000")
    assert query.limit == 1000
    assert query.warnings == ("The limit 5000 exceeds the maximum of 1000, which was used",)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("foo=1", "'foo'"),
        ("patientname=x", "'patientname'"),
        ("7FE11010=x", "'7FE11010'"),
        ("orderby=PatientName", "'orderby'"),
        ("includefield=NoSuchKeyword", "'includefield=NoSuchKeyword'"),
        ("x%0D%0AEvil=1", "'x\\r\\nEvil'"),
    ],
    ids=[
        "unknown",
        "wrong-case-keyword",
        "private-tag",
        "orderby",
        "includefield-unknown",
        "control-characters-escaped",
    ],
)
def test_parse_qido_query_unknown_parameter_warns(raw: str, named: str) -> None:
    query = parse(raw)
    assert query.matches == ()
    (warning,) = query.warnings
    assert named in warning
    assert "ignored" in warning


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("limit=-1", "limit='-1' must be a non-negative integer"),
        ("limit=ten", "limit='ten'"),
        ("offset=1.5", "offset='1.5'"),
        ("fuzzymatching=yes", "'true' or 'false'"),
        ("StudyInstanceUID=1.2.*", "wild cards are not allowed on a UID"),
        ("StudyInstanceUID=1.2,1.2.a", "'1.2.a' is not a valid UID"),
        ("StudyInstanceUID=1.2,,1.3", "'' is not a valid UID"),
        ("StudyDate=2020-01-01", "is not a DA value or range"),
        ("StudyDate=20200131-20200101", "ends before it starts"),
        ("StudyDate=-", "is not a DA value or range"),
        ("StudyDate=2020*", "without wild cards or lists"),
        ("StudyDate=20200101\\20200102", "without wild cards or lists"),
        ("StudyTime=25", "is not a TM value or range"),
        ("NumberOfStudyRelatedInstances=1*", "is not a number"),
        ("PatientAge=05*", "wild cards are not allowed on VR AS"),
        ("ModalitiesInStudy=CT\\M*&multiplevaluematching=true", "may not contain wild cards"),
        ("RequestAttributesSequence=x", "is a sequence"),
        ("PatientName.FamilyName=x", "PatientName is not a sequence"),
        ("PatientID=1&PatientID=2", "(0010,0020) PatientID is given more than once"),
    ],
    ids=[
        "limit-negative",
        "limit-text",
        "offset-decimal",
        "boolean",
        "uid-wildcard",
        "uid-invalid",
        "uid-empty-in-list",
        "date-dashes",
        "range-reversed",
        "range-no-bound",
        "date-wildcard",
        "date-list",
        "time-invalid",
        "number-wildcard",
        "as-wildcard",
        "multiple-value-wildcard",
        "sequence-value",
        "not-a-sequence",
        "repeated-key",
    ],
)
def test_parse_qido_query_bad_request(raw: str, message: str) -> None:
    with pytest.raises(InvalidQuery, match=re.escape(message)):
        parse(raw)


def test_lookup_keyword_falls_back_to_dictionary() -> None:
    assert lookup_keyword("PatientName") == KEYWORDS["PatientName"]
    assert lookup_keyword("SeriesInstanceUID") == ("0020000E", "UI")
    assert lookup_keyword("ScanningSequence") == ("00180020", "CS")
    assert lookup_keyword("NoSuchKeyword") is None


def test_lookup_tag_falls_back_to_dictionary() -> None:
    assert lookup_tag("00100010") == ("PatientName", "PN")
    assert lookup_tag("00180020") == ("ScanningSequence", "CS")
    assert lookup_tag("00091001") is None


def test_import_qido_loads_no_pydicom() -> None:
    """QIDO Lambdas must cold-start without pydicom, numpy or Pillow (STYLE.md rule 4)."""
    code = (
        "import sys, chalicelib.dicom.qido, chalicelib.dicom.query, chalicelib.dicom.matching;"
        "print(sorted(m for m in ('pydicom', 'numpy', 'PIL') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_parse_qido_query_modality_at_study_level_is_modalities_in_study() -> None:
    query = parse_qido_query("study", [("Modality", "CT\\MR")], max_limit=100, default_limit=10)
    (key,) = query.matches
    assert (key.tag, key.keyword, key.values) == ("00080061", "ModalitiesInStudy", ("CT", "MR"))
    assert any("Modality" in w and "ModalitiesInStudy" in w for w in query.warnings)
    series = parse_qido_query("series", [("00080060", "CT")], max_limit=100, default_limit=10)
    assert [k.tag for k in series.matches] == ["00080060"] and not series.warnings


@pytest.mark.parametrize("field", ["00000000", "CommandGroupLength", "TransferSyntaxUID"])
def test_includefield_of_a_command_or_file_meta_element_is_ignored_with_its_reason(
    field: str,
) -> None:
    """CommandGroupLength was said to belong "to a level below the study"; it is no
    attribute of a stored dataset at all."""
    query = parse(f"includefield={field}&includefield=StudyDescription")
    assert query.includefield == ("00081030",)
    (warning,) = query.warnings
    assert f"'includefield={field}'" in warning and "file meta" in warning
