"""TagIndex.search contract: one query table, the same answers from SQLite and from DynamoDB.

Each case is a QIDO-RS query string at a level; the expected answer is the set of resources
that `dicom/matching.py` accepts among the candidates, and the candidates must be a superset of
what a full listing would match (the adapters only narrow).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chalicelib.dicom.matching import Narrowing, matches, narrowing
from chalicelib.dicom.qido import parse_qido_query, parse_query_string
from chalicelib.dicom.tags import Level
from chalicelib.storage.ports import (
    InstanceRecord,
    ScanBudgetExceeded,
    SearchCandidate,
    TagIndex,
)
from tests.storage.conftest import MR_IMAGE, build_record

# (study, patient id, patient name, date, accession, [(series, modality, instances)])
STUDIES = [
    ("1.9.1", "PAT-1", {"Alphabetic": "Doe^John"}, "20240102", "ACC-1", [("1.9.1.1", "CT", 3)]),
    (
        "1.9.2",
        "PAT-1",
        {"Alphabetic": "Doe^John"},
        "20231231",
        "ACC-2",
        [("1.9.2.1", "MR", 2), ("1.9.2.2", "CT", 1)],
    ),
    (
        "1.9.3",
        "PAT-2",
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        "20240315",
        "X-77",
        [("1.9.3.1", "MR", 2)],
    ),
    ("1.9.4", "pat-3", {"Alphabetic": "Müller^Jürgen"}, "", "", [("1.9.4.1", "US", 1)]),
    ("1.9.10", "PAT-4", {"Alphabetic": "Dobbs^Ann"}, "20240102", "ACC-10", [("1.9.10.1", "CT", 1)]),
]


def _record(study: tuple[Any, ...], series: str, modality: str, number: int) -> InstanceRecord:
    uid, patient_id, name, date, accession, _ = study
    record = build_record(
        uid,
        series,
        f"{series}.{number}",
        modality=modality,
        sop_class=MR_IMAGE if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2",
    )
    tags: dict[str, Any] = {
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00100010": {"vr": "PN", "Value": [name]},
        "00100020": {"vr": "LO", "Value": [patient_id]},
    }
    if date:
        tags["00080020"] = {"vr": "DA", "Value": [date]}
    if accession:
        tags["00080050"] = {"vr": "SH", "Value": [accession]}
    return dataclasses.replace(record, study_tags=tags)


@pytest.fixture
def corpus(tag_index: TagIndex) -> TagIndex:
    for study in STUDIES:
        for series, modality, count in study[5]:
            for number in range(1, count + 1):
                tag_index.store_instance(_record(study, series, modality, number), False)
    return tag_index


def _dataset(candidate: SearchCandidate, level: Level) -> dict[str, Any]:
    study = candidate.study
    dataset = {
        **study.study_tags,
        "00080061": {"vr": "CS", "Value": study.modalities},
    }
    if level != "study" and candidate.series is not None:
        dataset |= candidate.series.series_tags
    if level == "instance" and candidate.instance is not None:
        dataset |= candidate.instance.record.instance_tags
    return dataset


def _uid(candidate: SearchCandidate, level: Level) -> str:
    if level == "study":
        return candidate.study.study_uid
    if level == "series":
        assert candidate.series is not None
        return candidate.series.series_uid
    assert candidate.instance is not None
    return candidate.instance.sop_uid


def _search(
    index: TagIndex,
    level: Level,
    query: str,
    study: str | None = None,
    series: str | None = None,
    budget: int | None = None,
    narrow: bool = True,
) -> list[str]:
    parsed = parse_qido_query(
        level,
        parse_query_string(query),
        study_uid=study,
        series_uid=series,
        max_limit=1000,
        default_limit=1000,
    )
    hints = narrowing(parsed, case_sensitive_pn=False) if narrow else []
    found = [
        _uid(c, level)
        for c in index.search(level, hints, budget)
        if matches(parsed, _dataset(c, level), case_sensitive_pn=False)
    ]
    assert len(found) == len(set(found)), f"duplicates in {found}"
    return found


CASES = [
    # id, level, query, study, series, expected (in search order)
    ("all-studies-newest-first", "study", "", None, None,
     ["1.9.3", "1.9.10", "1.9.1", "1.9.2", "1.9.4"]),
    ("patient-id", "study", "PatientID=PAT-1", None, None, ["1.9.1", "1.9.2"]),
    ("patient-id-case-sensitive", "study", "PatientID=PAT-3", None, None, []),
    ("patient-id-prefix", "study", "PatientID=PAT*", None, None,
     ["1.9.3", "1.9.10", "1.9.1", "1.9.2"]),
    ("patient-name-exact-any-case", "study", "PatientName=doe^john", None, None,
     ["1.9.1", "1.9.2"]),
    ("patient-name-prefix", "study", "PatientName=DO*", None, None, ["1.9.10", "1.9.1", "1.9.2"]),
    ("patient-name-ideographic", "study", "PatientName=山田*", None, None, ["1.9.3"]),
    ("patient-name-accents", "study", "PatientName=müller*", None, None, ["1.9.4"]),
    ("patient-name-leading-wildcard", "study", "PatientName=*john", None, None,
     ["1.9.1", "1.9.2"]),
    ("fuzzy", "study", "PatientName=tar&fuzzymatching=true", None, None, ["1.9.3"]),
    ("accession", "study", "AccessionNumber=X-77", None, None, ["1.9.3"]),
    ("date-range", "study", "StudyDate=20240101-20240131", None, None, ["1.9.10", "1.9.1"]),
    ("date-open-low", "study", "StudyDate=-20231231", None, None, ["1.9.2"]),
    ("date-single", "study", "StudyDate=20240315", None, None, ["1.9.3"]),
    ("study-uid-list", "study", "StudyInstanceUID=1.9.4,1.9.1", None, None, ["1.9.1", "1.9.4"]),
    ("modalities-in-study", "study", "ModalitiesInStudy=MR", None, None, ["1.9.3", "1.9.2"]),
    ("combined", "study", "PatientID=PAT-1&StudyDate=20240101-", None, None, ["1.9.1"]),
    ("series-of-study", "series", "", "1.9.2", None, ["1.9.2.1", "1.9.2.2"]),
    ("series-modality", "series", "Modality=CT", None, None, ["1.9.1.1", "1.9.10.1", "1.9.2.2"]),
    ("series-by-patient", "series", "PatientID=PAT-2", None, None, ["1.9.3.1"]),
    ("series-uid", "series", "SeriesInstanceUID=1.9.2.2", None, None, ["1.9.2.2"]),
    ("all-series", "series", "", None, None,
     ["1.9.1.1", "1.9.10.1", "1.9.2.1", "1.9.2.2", "1.9.3.1", "1.9.4.1"]),
    ("instances-of-series", "instance", "", "1.9.1", "1.9.1.1", None,
     ["1.9.1.1.1", "1.9.1.1.2", "1.9.1.1.3"]),
    ("instances-of-study", "instance", "", "1.9.2", None, None,
     ["1.9.2.1.1", "1.9.2.1.2", "1.9.2.2.1"]),
    ("instance-uid", "instance", "SOPInstanceUID=1.9.3.1.2", None, None, None, ["1.9.3.1.2"]),
    ("instances-by-modality", "instance", "Modality=US", None, None, None, ["1.9.4.1.1"]),
    ("instances-by-date", "instance", "StudyDate=20240315", None, None, None,
     ["1.9.3.1.1", "1.9.3.1.2"]),
    ("unknown-study", "series", "", "9.9", None, []),
]  # fmt: skip


def _case(case: tuple[Any, ...]) -> Any:
    if len(case) == 7:  # instance cases name the series too
        name, level, query, study, series, _, expected = case
    else:
        name, level, query, study, series, expected = case
    return pytest.param(level, query, study, series, expected, id=name)


@pytest.mark.parametrize(("level", "query", "study", "series", "expected"), map(_case, CASES))
def test_search_query_table(
    corpus: TagIndex,
    level: Level,
    query: str,
    study: str | None,
    series: str | None,
    expected: list[str],
) -> None:
    assert _search(corpus, level, query, study, series) == expected


def test_search_narrowed_is_superset_of_listing(corpus: TagIndex) -> None:
    """Whatever index an adapter picks, it finds what a full listing with matching finds, in
    the same order."""
    for case in map(_case, CASES):
        level, query, study, series, expected = case.values
        listed = _search(corpus, level, query, study, series, narrow=False)
        assert listed == expected, case.id


def test_search_listing_over_budget_raises(corpus: TagIndex) -> None:
    with pytest.raises(ScanBudgetExceeded) as raised:
        _search(corpus, "study", "StudyDescription=*x*", budget=3)
    assert raised.value.budget == 3
    with pytest.raises(ScanBudgetExceeded):
        _search(corpus, "instance", "InstanceNumber=1", budget=5)


def test_search_indexed_ignores_budget(corpus: TagIndex) -> None:
    assert _search(corpus, "study", "PatientID=PAT-1", budget=1) == ["1.9.1", "1.9.2"]


def test_search_follows_restore_with_new_patient(corpus: TagIndex) -> None:
    """Overwriting an instance with new patient attributes moves the study in the index."""
    study = STUDIES[3]
    renamed = (study[0], "NEW-9", {"Alphabetic": "Zeta^Zed"}, "20200101", "ACC-9", study[5])
    corpus.store_instance(_record(renamed, "1.9.4.1", "US", 1), True)
    assert _search(corpus, "study", "PatientID=NEW-9") == ["1.9.4"]
    assert _search(corpus, "study", "PatientName=zeta*") == ["1.9.4"]
    assert _search(corpus, "study", "PatientID=pat-3") == []
    assert _search(corpus, "study", "StudyDate=20200101") == ["1.9.4"]


def test_search_forgets_deleted(corpus: TagIndex) -> None:
    corpus.delete_study("1.9.3")
    corpus.delete_series("1.9.2", "1.9.2.1")
    assert _search(corpus, "study", "PatientName=yamada*") == []
    assert _search(corpus, "study", "ModalitiesInStudy=MR") == []
    assert _search(corpus, "series", "Modality=MR") == []
    assert _search(corpus, "instance", "", "1.9.2") == ["1.9.2.2.1"]
    study = next(corpus.search("study", [], None))
    assert study.study.study_uid == "1.9.10"


def test_search_candidates_carry_exact_aggregates(corpus: TagIndex) -> None:
    (candidate,) = [
        c
        for c in corpus.search("series", [], None)
        if c.series and c.series.series_uid == "1.9.2.1"
    ]
    assert candidate.series is not None
    assert (candidate.study.num_series, candidate.study.num_instances) == (2, 3)
    assert candidate.study.modalities == ["CT", "MR"]
    assert candidate.series.num_instances == 2


@pytest.mark.parametrize(
    "hints",
    [
        pytest.param([], id="listing"),
        pytest.param([Narrowing("StudyInstanceUID", "uids", ("1.9.2",))], id="study"),
        pytest.param([Narrowing("SeriesInstanceUID", "uids", ("1.9.2.1",))], id="series"),
        pytest.param([Narrowing("SOPInstanceUID", "uids", ("1.9.2.2.1",))], id="sop"),
    ],
)
def test_search_instance_candidates_decode_to_the_stored_record(
    corpus: TagIndex, hints: list[Narrowing]
) -> None:
    """UIDs come with the candidate; its record, decoded on demand, is the stored one."""
    candidates = list(corpus.search("instance", hints, None))
    assert candidates
    for candidate in candidates:
        instance = candidate.instance
        assert instance is not None and candidate.series is not None
        assert instance.series_uid == candidate.series.series_uid
        stored = corpus.get_instance(instance.study_uid, instance.series_uid, instance.sop_uid)
        assert instance.record == stored
