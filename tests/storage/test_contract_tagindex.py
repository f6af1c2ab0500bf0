"""TagIndex contract: the same behaviour from SQLite and from DynamoDB.

Listings are in UID byte order: series by SeriesInstanceUID, instances by (SeriesInstanceUID,
SOPInstanceUID), so "1.2.3.10" comes before "1.2.3.2".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.storage.local import SqliteTagIndex
from chalicelib.storage.ports import (
    ConfigStore,
    Conflict,
    InstanceFile,
    InstanceRecord,
    NotFound,
    StudyRecord,
    TagIndex,
)
from chalicelib.storage.records import first_version, utc_stamp
from tests.storage.conftest import (
    CT_IMAGE,
    MR_IMAGE,
    SECONDARY_CAPTURE,
    SERIES,
    SOP,
    STUDY,
    build_record,
)

MakeRecord = Callable[..., InstanceRecord]
OTHER_STUDY = "1.2.4"
OTHER_SERIES = "1.2.3.2"


def _counts(study: StudyRecord) -> tuple[int, int, list[str], list[str]]:
    return study.num_series, study.num_instances, study.modalities, study.sop_classes


def _store_two_series(tag_index: TagIndex, make_record: MakeRecord) -> list[InstanceRecord]:
    """Series SERIES: two CT instances; series OTHER_SERIES: one MR instance."""
    records = [
        make_record(sop=f"{SERIES}.1"),
        make_record(sop=f"{SERIES}.2"),
        make_record(
            series=OTHER_SERIES, sop=f"{OTHER_SERIES}.1", modality="MR", sop_class=MR_IMAGE
        ),
    ]
    return [tag_index.store_instance(r, overwrite=False).record for r in records]


def test_store_instance_new_creates_records(tag_index: TagIndex, make_record: MakeRecord) -> None:
    record = make_record()
    started = first_version()
    result = tag_index.store_instance(record, overwrite=False)
    assert result.outcome == "created"
    assert result.replaced_blob_keys == []
    assert result.record.stored_at.endswith("Z")
    assert tag_index.get_instance(STUDY, SERIES, SOP) == result.record
    study = tag_index.get_study(STUDY)
    assert _counts(study) == (1, 1, ["CT"], [CT_IMAGE])
    assert (study.version >= started, study.study_tags, study.orthanc_id) == (
        True,
        record.study_tags,
        f"study-{STUDY}",
    )
    series = tag_index.get_series(STUDY, SERIES)
    assert (series.num_instances, series.version >= started, series.series_tags) == (
        1,
        True,
        record.series_tags,
    )
    assert series.orthanc_id == f"series-{SERIES}"


def test_store_instance_two_series_counts(tag_index: TagIndex, make_record: MakeRecord) -> None:
    _store_two_series(tag_index, make_record)
    study = tag_index.get_study(STUDY)
    assert _counts(study) == (2, 3, ["CT", "MR"], sorted([CT_IMAGE, MR_IMAGE]))
    assert [(s.series_uid, s.num_instances) for s in tag_index.list_series(STUDY)] == [
        (SERIES, 2),
        (OTHER_SERIES, 1),
    ]


def _versions(tag_index: TagIndex, series: str = SERIES) -> tuple[int, int]:
    return tag_index.get_study(STUDY).version, tag_index.get_series(STUDY, series).version


def test_store_instance_bumps_versions(tag_index: TagIndex, make_record: MakeRecord) -> None:
    tag_index.store_instance(make_record(sop=f"{SERIES}.1"), overwrite=False)
    study, series = _versions(tag_index)
    tag_index.store_instance(make_record(sop=f"{SERIES}.2"), overwrite=False)
    assert _versions(tag_index) == (study + 1, series + 1)


def test_store_instance_restore_without_overwrite_keeps(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    first = tag_index.store_instance(make_record(blob_key="a/old.dcm"), overwrite=False)
    versions = _versions(tag_index)
    again = tag_index.store_instance(make_record(blob_key="a/new.dcm"), overwrite=False)
    assert again.outcome == "kept"
    assert again.record == first.record
    assert again.replaced_blob_keys == []
    assert tag_index.get_instance(STUDY, SERIES, SOP).blob_key == "a/old.dcm"
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])
    assert _versions(tag_index) == versions


def test_store_instance_restore_with_overwrite_replaces(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(
        make_record(blob_key="a/old.dcm", metadata_key="a/old.json"), overwrite=False
    )
    study_version, series_version = _versions(tag_index)
    result = tag_index.store_instance(
        make_record(blob_key="a/new.dcm", metadata_key="a/new.json"), overwrite=True
    )
    assert result.outcome == "replaced"
    assert result.replaced_blob_keys == ["a/old.dcm", "a/old.json"]
    assert tag_index.get_instance(STUDY, SERIES, SOP) == result.record
    assert result.record.blob_key == "a/new.dcm"
    study = tag_index.get_study(STUDY)
    assert _counts(study) == (1, 1, ["CT"], [CT_IMAGE])
    assert _versions(tag_index) == (study_version + 1, series_version + 1)
    assert tag_index.get_series(STUDY, SERIES).num_instances == 1


def test_store_instance_overwrite_same_keys_releases_nothing(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(metadata_key="a/meta.json"), overwrite=False)
    result = tag_index.store_instance(make_record(metadata_key="a/meta.json"), overwrite=True)
    assert (result.outcome, result.replaced_blob_keys) == ("replaced", [])


def test_store_instance_overwrite_new_sop_class_recomputes_sop_classes(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(sop=f"{SERIES}.1"), overwrite=False)
    tag_index.store_instance(make_record(sop=f"{SERIES}.2"), overwrite=False)
    tag_index.store_instance(
        make_record(sop=f"{SERIES}.1", sop_class=SECONDARY_CAPTURE), overwrite=True
    )
    assert tag_index.get_study(STUDY).sop_classes == sorted([CT_IMAGE, SECONDARY_CAPTURE])
    tag_index.store_instance(
        make_record(sop=f"{SERIES}.2", sop_class=SECONDARY_CAPTURE), overwrite=True
    )
    assert tag_index.get_study(STUDY).sop_classes == [SECONDARY_CAPTURE]


@pytest.mark.parametrize("overwrite", [False, True])
def test_store_instance_sop_in_other_study_conflict(
    tag_index: TagIndex, make_record: MakeRecord, overwrite: bool
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(Conflict, match=SOP):
        tag_index.store_instance(make_record(study=OTHER_STUDY, series="1.2.4.1"), overwrite)
    with pytest.raises(NotFound):
        tag_index.get_study(OTHER_STUDY)
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])


def test_store_instance_sop_in_other_series_conflict(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(Conflict, match=SOP):
        tag_index.store_instance(make_record(series=OTHER_SERIES), overwrite=True)
    assert [s.series_uid for s in tag_index.list_series(STUDY)] == [SERIES]
    assert tag_index.get_study(STUDY).num_instances == 1


def test_store_instance_series_in_other_study_conflict(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(Conflict, match=SERIES):
        tag_index.store_instance(make_record(study=OTHER_STUDY, sop="1.2.4.9"), overwrite=False)
    with pytest.raises(NotFound):
        tag_index.get_study(OTHER_STUDY)


def test_get_instance_without_series_finds_it(tag_index: TagIndex, make_record: MakeRecord) -> None:
    stored = tag_index.store_instance(make_record(), overwrite=False).record
    assert tag_index.get_instance(STUDY, None, SOP) == stored


@pytest.mark.parametrize(
    ("study_uid", "series_uid", "sop_uid"),
    [
        (OTHER_STUDY, SERIES, SOP),
        (STUDY, OTHER_SERIES, SOP),
        (OTHER_STUDY, None, SOP),
        (STUDY, SERIES, "1.2.3.1.99"),
        (STUDY, None, "1.2.3.1.99"),
    ],
    ids=["other-study", "other-series", "other-study-any-series", "unknown", "unknown-any-series"],
)
def test_get_instance_wrong_parent_not_found(
    tag_index: TagIndex,
    make_record: MakeRecord,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str,
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(NotFound):
        tag_index.get_instance(study_uid, series_uid, sop_uid)


def test_find_instance_by_sop_uid(tag_index: TagIndex, make_record: MakeRecord) -> None:
    stored = tag_index.store_instance(make_record(), overwrite=False).record
    assert tag_index.find_instance(SOP) == stored
    with pytest.raises(NotFound):
        tag_index.find_instance("1.2.3.1.99")


def test_get_series_wrong_study_not_found(tag_index: TagIndex, make_record: MakeRecord) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(NotFound):
        tag_index.get_series(OTHER_STUDY, SERIES)
    with pytest.raises(NotFound):
        tag_index.get_series(STUDY, OTHER_SERIES)


def test_get_study_unknown_not_found(tag_index: TagIndex) -> None:
    with pytest.raises(NotFound):
        tag_index.get_study(STUDY)


def test_list_series_unknown_study_empty(tag_index: TagIndex) -> None:
    assert tag_index.list_series(STUDY) == []
    assert tag_index.list_instances(STUDY) == []
    assert tag_index.list_instances(STUDY, SERIES) == []


def test_list_instances_in_uid_order(tag_index: TagIndex, make_record: MakeRecord) -> None:
    pairs = [
        (series, f"{series}.{n}")
        for series in ("1.2.3.2", "1.2.3.10", "1.2.3.1")
        for n in (3, 1, 20, 2)
    ]
    for series, sop in pairs:
        tag_index.store_instance(make_record(series=series, sop=sop), overwrite=False)
    expected = sorted(pairs)
    listed = tag_index.list_instances(STUDY)
    assert [(r.series_uid, r.sop_uid) for r in listed] == expected
    assert [s.series_uid for s in tag_index.list_series(STUDY)] == [
        "1.2.3.1",
        "1.2.3.10",
        "1.2.3.2",
    ]
    in_series = tag_index.list_instances(STUDY, "1.2.3.1")
    assert [r.sop_uid for r in in_series] == [
        sop for series, sop in expected if series == "1.2.3.1"
    ]
    assert tag_index.list_instances(STUDY) == listed


def test_list_instances_beyond_one_page(tag_index: TagIndex, make_record: MakeRecord) -> None:
    """Four ~300 KB records pass DynamoDB's 1 MB page."""
    for n in range(4):
        tag_index.store_instance(
            make_record(sop=f"{SERIES}.{n}", comments="x" * 300_000), overwrite=False
        )
    assert [r.sop_uid for r in tag_index.list_instances(STUDY, SERIES)] == [
        f"{SERIES}.{n}" for n in range(4)
    ]
    assert len(tag_index.list_instances(STUDY)) == 4
    assert [f.sop_uid for f in tag_index.list_instance_files(STUDY)] == [
        f"{SERIES}.{n}" for n in range(4)
    ]


def test_list_instance_files_match_the_records(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    records = _store_two_series(tag_index, make_record)
    odd = dataclasses.replace(
        make_record(sop=f"{SERIES}.10", blob_key=f"{STUDY}/{SERIES}/odd/x.dcm"),
        transfer_syntax_uid="1.2.840.10008.1.2",
        size=777,
        has_file_meta=False,
    )
    records.append(tag_index.store_instance(odd, overwrite=False).record)
    expected = [InstanceFile.of(r) for r in tag_index.list_instances(STUDY)]
    assert [(f.series_uid, f.sop_uid) for f in expected] == sorted(
        (r.series_uid, r.sop_uid) for r in records
    )
    assert tag_index.list_instance_files(STUDY) == expected
    assert tag_index.list_instance_files(STUDY, SERIES) == [
        f for f in expected if f.series_uid == SERIES
    ]
    (stored,) = tag_index.list_instance_files(STUDY, SERIES, f"{SERIES}.10")
    assert stored == InstanceFile(
        STUDY,
        SERIES,
        f"{SERIES}.10",
        "1.2.840.10008.1.2",
        f"{STUDY}/{SERIES}/odd/x.dcm",
        777,
        False,
    )
    assert tag_index.list_instance_files(STUDY, None, f"{SERIES}.10") == [stored]


@pytest.mark.parametrize(
    ("study_uid", "series_uid", "sop_uid"),
    [
        (OTHER_STUDY, None, None),
        (STUDY, "1.2.3.9", None),
        (OTHER_STUDY, SERIES, SOP),
        (STUDY, OTHER_SERIES, SOP),
        (OTHER_STUDY, None, SOP),
        (STUDY, SERIES, "1.2.3.1.99"),
    ],
    ids=["study", "series", "other-study", "other-series", "other-study-no-series", "unknown"],
)
def test_list_instance_files_elsewhere_empty(
    tag_index: TagIndex,
    make_record: MakeRecord,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    assert tag_index.list_instance_files(study_uid, series_uid, sop_uid) == []


def test_iter_studies_every_study_stable_order(
    tag_index: TagIndex, config_store: ConfigStore, make_record: MakeRecord
) -> None:
    config_store.put_item("servers", "ST", {"Url": "http://peer/"})
    uids = ["1.2.5", "1.2.3", "1.2.4"]
    for uid in uids:
        tag_index.store_instance(make_record(study=uid, series=f"{uid}.1", sop=f"{uid}.1.1"), False)
    listed = [s.study_uid for s in tag_index.iter_studies()]
    assert sorted(listed) == sorted(uids)
    assert [s.study_uid for s in tag_index.iter_studies()] == listed
    assert all(s.num_instances == 1 for s in tag_index.iter_studies())


def test_delete_instance_last_of_series_removes_series(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    records = _store_two_series(tag_index, make_record)
    before = tag_index.get_study(STUDY).version
    result = tag_index.delete_instance(STUDY, OTHER_SERIES, f"{OTHER_SERIES}.1")
    assert result.instances == [records[2]]
    study = tag_index.get_study(STUDY)
    assert _counts(study) == (1, 2, ["CT"], [CT_IMAGE])
    assert study.version == before + 1
    with pytest.raises(NotFound):
        tag_index.get_series(STUDY, OTHER_SERIES)
    with pytest.raises(NotFound):
        tag_index.find_instance(f"{OTHER_SERIES}.1")
    assert [s.series_uid for s in tag_index.list_series(STUDY)] == [SERIES]


def test_delete_instance_keeps_series_and_bumps_versions(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(sop=f"{SERIES}.1"), overwrite=False)
    tag_index.store_instance(
        make_record(sop=f"{SERIES}.2", sop_class=SECONDARY_CAPTURE), overwrite=False
    )
    study_version, series_version = _versions(tag_index)
    tag_index.delete_instance(STUDY, SERIES, f"{SERIES}.2")
    assert tag_index.get_series(STUDY, SERIES).num_instances == 1
    assert _versions(tag_index) == (study_version + 1, series_version + 1)
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])
    assert [r.sop_uid for r in tag_index.list_instances(STUDY)] == [f"{SERIES}.1"]


def test_delete_instance_last_of_study_removes_study(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    tag_index.delete_instance(STUDY, SERIES, SOP)
    with pytest.raises(NotFound):
        tag_index.get_study(STUDY)
    assert tag_index.list_series(STUDY) == []
    assert list(tag_index.iter_studies()) == []
    again = tag_index.store_instance(make_record(), overwrite=False)
    assert again.outcome == "created"
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])


@pytest.mark.parametrize(
    ("study_uid", "series_uid", "sop_uid"),
    [(OTHER_STUDY, SERIES, SOP), (STUDY, OTHER_SERIES, SOP), (STUDY, SERIES, "1.2.3.1.99")],
    ids=["other-study", "other-series", "unknown"],
)
def test_delete_instance_wrong_parent_not_found(
    tag_index: TagIndex, make_record: MakeRecord, study_uid: str, series_uid: str, sop_uid: str
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    versions = _versions(tag_index)
    with pytest.raises(NotFound):
        tag_index.delete_instance(study_uid, series_uid, sop_uid)
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])
    assert _versions(tag_index) == versions


def test_delete_series_keeps_other_series(tag_index: TagIndex, make_record: MakeRecord) -> None:
    records = _store_two_series(tag_index, make_record)
    before = tag_index.get_study(STUDY).version
    result = tag_index.delete_series(STUDY, SERIES)
    assert result.instances == records[:2]
    study = tag_index.get_study(STUDY)
    assert _counts(study) == (1, 1, ["MR"], [MR_IMAGE])
    assert study.version > before
    assert [r.sop_uid for r in tag_index.list_instances(STUDY)] == [f"{OTHER_SERIES}.1"]
    with pytest.raises(NotFound):
        tag_index.get_series(STUDY, SERIES)


def test_delete_series_last_removes_study(tag_index: TagIndex, make_record: MakeRecord) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    tag_index.delete_series(STUDY, SERIES)
    with pytest.raises(NotFound):
        tag_index.get_study(STUDY)


def test_delete_series_many_instances(tag_index: TagIndex, make_record: MakeRecord) -> None:
    """More instances than one DynamoDB transaction holds."""
    for n in range(100):
        tag_index.store_instance(make_record(sop=f"{SERIES}.{n}"), overwrite=False)
    tag_index.store_instance(
        make_record(series=OTHER_SERIES, sop=f"{OTHER_SERIES}.1", modality="MR"), overwrite=False
    )
    result = tag_index.delete_series(STUDY, SERIES)
    assert len(result.instances) == 100
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["MR"], [CT_IMAGE])
    assert tag_index.list_instances(STUDY, SERIES) == []


@pytest.mark.parametrize(
    ("study_uid", "series_uid"), [(OTHER_STUDY, SERIES), (STUDY, OTHER_SERIES)]
)
def test_delete_series_wrong_parent_not_found(
    tag_index: TagIndex, make_record: MakeRecord, study_uid: str, series_uid: str
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    with pytest.raises(NotFound):
        tag_index.delete_series(study_uid, series_uid)
    assert tag_index.get_series(STUDY, SERIES).num_instances == 1


def test_delete_study_removes_everything(tag_index: TagIndex, make_record: MakeRecord) -> None:
    records = _store_two_series(tag_index, make_record)
    other = tag_index.store_instance(
        make_record(study=OTHER_STUDY, series="1.2.4.1", sop="1.2.4.1.1"), overwrite=False
    ).record
    result = tag_index.delete_study(STUDY)
    assert result.instances == records
    with pytest.raises(NotFound):
        tag_index.get_study(STUDY)
    assert tag_index.list_series(STUDY) == []
    assert tag_index.list_instances(STUDY) == []
    assert [s.study_uid for s in tag_index.iter_studies()] == [OTHER_STUDY]
    assert tag_index.find_instance("1.2.4.1.1") == other


# Issue 11: versions restarted at 1, so a series deleted and stored again with as many
# instances answered 304 to the ETag of its former content.
def test_versions_unique_across_delete_and_recreate(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    studies: set[int] = set()
    series: set[int] = set()
    for lifetime in range(2):
        for n in range(3):
            tag_index.store_instance(make_record(sop=f"{SERIES}.{lifetime}.{n}"), overwrite=False)
            study_version, series_version = _versions(tag_index)
            assert study_version not in studies and series_version not in series
            studies.add(study_version)
            series.add(series_version)
        tag_index.delete_study(STUDY)


def test_delete_study_unknown_not_found(tag_index: TagIndex) -> None:
    with pytest.raises(NotFound):
        tag_index.delete_study(STUDY)


def test_store_instance_concurrent_threads_exact_counts(tmp_path: Path) -> None:
    """Local only (moto's DynamoDB is not thread-safe): threads of two index objects on one
    file store one series, each also re-storing one shared instance."""
    indexes = [SqliteTagIndex(tmp_path / "index.sqlite") for _ in range(2)]

    def store(worker: int) -> list[str]:
        index = indexes[worker % 2]
        outcomes = [index.store_instance(build_record(sop=SOP), overwrite=False).outcome]
        for n in range(25):
            record = build_record(sop=f"{SERIES}.{worker}.{n}", modality=f"M{worker % 3}")
            outcomes.append(index.store_instance(record, overwrite=False).outcome)
        return outcomes

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [o for result in pool.map(store, range(8)) for o in result]
    assert outcomes.count("created") == 201
    assert outcomes.count("kept") == 7
    study = indexes[0].get_study(STUDY)
    assert _counts(study) == (1, 201, ["CT", "M0", "M1", "M2"], [CT_IMAGE])
    assert indexes[1].get_series(STUDY, SERIES).num_instances == 201
    assert len(indexes[1].list_instances(STUDY, SERIES)) == 201
    for index in indexes:
        index.close()


# Issue 11: a DELETE that dies between its index commit and its blob removal must be
# recoverable; the intent is written with the index delete, on every adapter.
def test_delete_records_pending_blob_deletes(tag_index: TagIndex, make_record: MakeRecord) -> None:
    for n in range(100):  # more than one DynamoDB transaction's worth
        tag_index.store_instance(
            make_record(sop=f"{SERIES}.{n}", metadata_key=f"{STUDY}/{SERIES}/{n}/m.json.gz"),
            overwrite=False,
        )
    assert tag_index.pending_blob_deletes() == []
    removed = tag_index.delete_series(STUDY, SERIES).instances
    keys = [key for record in removed for key in record.blob_keys()]
    assert len(keys) == 200
    assert sorted(tag_index.pending_blob_deletes()) == sorted(keys)
    tag_index.blobs_deleted(keys[:3])
    assert sorted(tag_index.pending_blob_deletes()) == sorted(keys[3:])
    tag_index.blobs_deleted(keys[3:])
    assert tag_index.pending_blob_deletes() == []


def test_add_pending_deletes_lists_keys_and_folders_until_deleted(tag_index: TagIndex) -> None:
    entries = ["thumbnails/1.2.3/", "thumbnails/1.2.3.jpg", "cache/metadata/1.2.3/"]
    tag_index.add_pending_deletes(entries)
    tag_index.add_pending_deletes([])
    assert sorted(tag_index.pending_blob_deletes()) == sorted(entries)
    tag_index.blobs_deleted(entries[:1])
    assert sorted(tag_index.pending_blob_deletes()) == sorted(entries[1:])
    tag_index.blobs_deleted(entries[1:])
    assert tag_index.pending_blob_deletes() == []


def _moment() -> str:
    """A stamp between what was recorded before and what is recorded after."""
    before = utc_stamp()
    while utc_stamp() == before:
        pass
    return utc_stamp()


def test_blob_writes_begun_are_listed_once_stale(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    records = [
        make_record(sop=f"{SERIES}.{n}", metadata_key=f"{STUDY}/{SERIES}/{n}.json.gz")
        for n in range(30)  # more than a DynamoDB BatchWriteItem takes
    ]
    tag_index.begin_blob_writes(records[:1])
    between = _moment()
    tag_index.begin_blob_writes(records[1:])
    assert tag_index.stale_blob_writes(utc_stamp(datetime(2000, 1, 1, tzinfo=UTC))) == []
    (first,) = tag_index.stale_blob_writes(between)
    assert (first.study_uid, first.series_uid, first.sop_uid) == (STUDY, SERIES, f"{SERIES}.0")
    assert first.keys == tuple(records[0].blob_keys()) and first.blob_key == records[0].blob_key
    assert first.at < between
    stale = tag_index.stale_blob_writes(_moment())
    assert stale[0].blob_key == first.blob_key
    assert sorted(w.blob_key for w in stale) == sorted(r.blob_key for r in records)
    tag_index.end_blob_writes([r.blob_key for r in records[:10]] + ["not/begun.dcm"])
    left = tag_index.stale_blob_writes(_moment())
    assert sorted(w.blob_key for w in left) == sorted(r.blob_key for r in records[10:])


def test_store_instances_ends_the_blob_writes_it_commits(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    """Created and replaced records' intents end with the commit; a kept record's (its blobs
    unused) and a refused one's stay, and so does another request's intent for the blob of the
    stored record a kept result names."""
    stored = make_record(sop=f"{SERIES}.1", blob_key="a/stored.dcm")
    tag_index.store_instance(stored, overwrite=False)
    created = make_record(sop=f"{SERIES}.2", blob_key="a/created.dcm")
    kept = make_record(sop=f"{SERIES}.1", blob_key="a/kept.dcm")
    refused = make_record(study=OTHER_STUDY, sop=f"{SERIES}.2", blob_key="a/refused.dcm")
    tag_index.begin_blob_writes([created, kept, refused, stored])
    results = tag_index.store_instances([created, kept, refused], overwrite=False)
    assert [getattr(r, "outcome", None) for r in results] == ["created", "kept", None]
    left = tag_index.stale_blob_writes(_moment())
    assert sorted(w.blob_key for w in left) == ["a/kept.dcm", "a/refused.dcm", "a/stored.dcm"]
    replacing = make_record(sop=f"{SERIES}.1", blob_key="a/replacing.dcm")
    tag_index.begin_blob_writes([replacing])
    (result,) = tag_index.store_instances([replacing], overwrite=True)
    assert result.outcome == "replaced"
    left = tag_index.stale_blob_writes(_moment())
    assert sorted(w.blob_key for w in left) == ["a/kept.dcm", "a/refused.dcm", "a/stored.dcm"]


def test_store_instances_batch_counts_each_once(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    records = [
        make_record(sop=f"{SERIES}.1"),
        make_record(sop=f"{SERIES}.2"),
        make_record(
            series=OTHER_SERIES, sop=f"{OTHER_SERIES}.1", modality="MR", sop_class=MR_IMAGE
        ),
        make_record(sop=f"{SERIES}.1", blob_key="again.dcm"),  # the first one, sent twice
    ]
    results = tag_index.store_instances(records, overwrite=False)
    assert [r.outcome for r in results if not isinstance(r, Exception)] == [
        "created",
        "created",
        "created",
        "kept",
    ]
    assert results[3].record.blob_key == records[0].blob_key
    assert _counts(tag_index.get_study(STUDY)) == (2, 3, ["CT", "MR"], sorted([CT_IMAGE, MR_IMAGE]))
    assert [(s.series_uid, s.num_instances) for s in tag_index.list_series(STUDY)] == [
        (SERIES, 2),
        (OTHER_SERIES, 1),
    ]
    assert [i.sop_uid for i in tag_index.list_instances(STUDY)] == [
        f"{SERIES}.1",
        f"{SERIES}.2",
        f"{OTHER_SERIES}.1",
    ]


def test_store_instances_more_than_one_transaction(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    """More instances than one DynamoDB transaction holds, over two series, one of which
    exists already, with search values that change within the request."""
    tag_index.store_instance(make_record(sop=f"{SERIES}.0"), overwrite=False)
    records = [make_record(sop=f"{SERIES}.{n}") for n in range(1, 71)]
    records += [
        make_record(series=OTHER_SERIES, sop=f"{OTHER_SERIES}.{n}", modality="MR")
        for n in range(50)
    ]
    records[-1].study_tags["00100020"] = {"vr": "LO", "Value": ["PAT-2"]}
    results = tag_index.store_instances(records, overwrite=False)
    assert [r.outcome for r in results if not isinstance(r, Exception)] == ["created"] * 120
    assert _counts(tag_index.get_study(STUDY)) == (2, 121, ["CT", "MR"], [CT_IMAGE])
    assert [(s.series_uid, s.num_instances) for s in tag_index.list_series(STUDY)] == [
        (SERIES, 71),
        (OTHER_SERIES, 50),
    ]
    assert len(tag_index.list_instances(STUDY)) == 121
    assert tag_index.get_study(STUDY).study_tags["00100020"]["Value"] == ["PAT-2"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_store_instances_conflict_refuses_its_record_alone(
    tag_index: TagIndex, make_record: MakeRecord, overwrite: bool
) -> None:
    tag_index.store_instance(make_record(), overwrite=False)
    records = [
        make_record(sop=f"{SERIES}.7"),
        make_record(study=OTHER_STUDY, series="1.2.4.1"),  # SOP already in STUDY
        make_record(study=OTHER_STUDY, sop="1.2.4.9"),  # SERIES already in STUDY
        make_record(study=OTHER_STUDY, series="1.2.4.1", sop="1.2.4.1.1"),
    ]
    results = tag_index.store_instances(records, overwrite)
    assert [type(r).__name__ for r in results] == [
        "StoreResult",
        "Conflict",
        "Conflict",
        "StoreResult",
    ]
    assert SOP in str(results[1]) and SERIES in str(results[2])
    assert _counts(tag_index.get_study(STUDY)) == (1, 2, ["CT"], [CT_IMAGE])
    assert _counts(tag_index.get_study(OTHER_STUDY)) == (1, 1, ["CT"], [CT_IMAGE])
    assert [i.sop_uid for i in tag_index.list_instances(OTHER_STUDY)] == ["1.2.4.1.1"]


def test_store_instances_overwrite_replaces_within_batch(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    first, second = make_record(blob_key="first.dcm"), make_record(blob_key="second.dcm")
    results = tag_index.store_instances([first, second], overwrite=True)
    assert [r.outcome for r in results if not isinstance(r, Exception)] == ["created", "replaced"]
    assert "first.dcm" in results[1].replaced_blob_keys
    assert tag_index.get_instance(STUDY, SERIES, SOP).blob_key == "second.dcm"
    assert _counts(tag_index.get_study(STUDY)) == (1, 1, ["CT"], [CT_IMAGE])


def _carrying(record: InstanceRecord, document: bytes) -> InstanceRecord:
    record.metadata = document
    return record


def test_metadata_documents_follow_their_records(
    tag_index: TagIndex, make_record: MakeRecord
) -> None:
    """An index that keeps the metadata documents commits each with its record, keeps it when
    the record is kept, replaces it with the record and removes it with the record; one that
    keeps none answers none (ingest writes them as blobs there)."""
    other = f"{SERIES}.2"
    tag_index.store_instances(
        [_carrying(make_record(), b"first"), _carrying(make_record(sop=other), b"other")],
        overwrite=False,
    )

    def kept(documents: dict[str, bytes]) -> dict[str, bytes]:
        return documents if tag_index.keeps_metadata else {}

    assert tag_index.metadata_documents([SOP, other, "9.9"]) == kept(
        {SOP: b"first", other: b"other"}
    )
    assert tag_index.get_instance(STUDY, SERIES, SOP).metadata is None
    assert [r.metadata for r in tag_index.list_instances(STUDY)] == [None, None]
    tag_index.store_instance(_carrying(make_record(), b"again"), overwrite=False)
    assert tag_index.metadata_documents([SOP]) == kept({SOP: b"first"})
    tag_index.store_instance(_carrying(make_record(), b"again"), overwrite=True)
    assert tag_index.metadata_documents([SOP]) == kept({SOP: b"again"})
    tag_index.delete_instance(STUDY, SERIES, SOP)
    assert tag_index.metadata_documents([SOP, other]) == kept({other: b"other"})
    assert tag_index.metadata_documents([]) == {}
