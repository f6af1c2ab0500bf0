"""The reads of QIDO-RS searches on DynamoDB (`search.SearchReads`), from the GSIs and study
partitions, never Scan: `study_date` lists studies newest first and answers StudyDate ranges;
`study_keys` lists the studies of a study key newest first (keyed study searches);
`search` answers exact and prefix keys on PatientID, AccessionNumber, PatientName and
Modality/ModalitiesInStudy by value (searches below the study level, and prefixes without a
study key), one Query per value with `begins_with` on `sxs`; `series_uid` and `sop_uid`
answer UID keys. GSI reads are eventually consistent: a study stored a moment ago may be
missing from a search."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from itertools import islice

from chalicelib.dicom.matching import Narrowing
from chalicelib.storage.dynamo.items import key_value, search_instance_of, series_of, study_of
from chalicelib.storage.dynamo.table import (
    DATE_INDEX,
    DATE_SHARDS,
    KEY_INDEX,
    SEARCH_INDEX,
    SERIES_INDEX,
    SOP_INDEX,
    STUDY_SK,
    Table,
    Value,
    string,
)
from chalicelib.storage.ports import SearchInstance, SeriesRecord, StudyRecord
from chalicelib.storage.records import date_bounds
from chalicelib.storage.search import KeyRun, SeriesKey, StudyTree

FIRST_PAGE = 8
"""Items of the first page of each date shard; each next page doubles. The merge of the shards
reads each shard's first page, and a QIDO-RS page stops at the first match after it: 1 MB pages
read some 3,000 study items to list 10 (issue 14, cost flat in archive size)."""
FIRST_KEY_PAGE = 16
"""Items of the first page of a study key (one run: a name prefix, a PatientID), and studies
of the first batch read for them; each next one doubles."""


class DynamoSearchReads:
    def __init__(self, table: Table) -> None:
        self._table = table

    def studies_by_date(self, hint: Narrowing | None) -> Iterator[StudyRecord]:
        return map(study_of, self._date_listing(hint))

    def studies_by_key(self, run: KeyRun) -> Iterator[tuple[str, StudyRecord]]:
        """A page of the key's items from `study_keys`, then their studies in one batch
        read, page after page (a study deleted meanwhile is left out)."""
        values = {":kx": string(f"{run.name}={key_value(run.value)}")}
        options = {}
        if run.prefix is not None:
            values[":term"] = string(run.prefix)
            options["FilterExpression"] = "begins_with(#term, :term)"
            options["ExpressionAttributeNames"] = {"#term": "term"}
        items = self._table.pages(
            growing=FIRST_KEY_PAGE,
            IndexName=KEY_INDEX,
            KeyConditionExpression="kx = :kx",
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            **options,
        )
        size = FIRST_KEY_PAGE
        while batch := list(islice(items, size)):
            found = {s.study_uid: s for s in self.studies([i["pk"]["S"] for i in batch])}
            for item in batch:
                if (study := found.get(item["pk"]["S"])) is not None:
                    yield item["kd"]["S"], study
            size *= 2

    def study_uids(self) -> Iterator[str]:
        yield from sorted(item["pk"]["S"] for item in self._date_listing(None))

    def study_uids_for(self, hint: Narrowing) -> set[str]:
        if hint.keyword == "StudyDate":
            return {item["pk"]["S"] for item in self._date_listing(hint)}
        keyword = "Modality" if hint.keyword == "ModalitiesInStudy" else hint.keyword
        return {pk for pk, _ in self._search_index(keyword, hint)}

    def studies(self, study_uids: Sequence[str]) -> list[StudyRecord]:
        return [
            study_of(item)
            for item in self._table.batch_get([(uid, STUDY_SK) for uid in study_uids])
        ]

    def series_keys(self, hint: Narrowing, hints: Sequence[Narrowing]) -> list[SeriesKey]:
        if hint.keyword == "Modality":
            keys = self._search_index("Modality", hint)
        else:
            studies = [h.values for h in hints if h.keyword == "StudyInstanceUID"]
            if len(studies) == 1 and len(studies[0]) == 1:
                # The series of a study in the URL: the keys are known, no GSI read needed.
                keys = [(studies[0][0], f"SE#{uid}") for uid in hint.values]
            else:
                keys = [key for uid in hint.values for key in self._table.lookup(SERIES_INDEX, uid)]
        return [(pk, sk.removeprefix("SE#")) for pk, sk in keys]

    def instances(self, sop_uids: Sequence[str]) -> list[SearchInstance]:
        keys = [key for uid in sop_uids for key in self._table.lookup(SOP_INDEX, uid)]
        return [search_instance_of(item) for item in self._table.batch_get(keys)]

    def parents(
        self, keys: Sequence[SeriesKey]
    ) -> tuple[dict[str, StudyRecord], dict[SeriesKey, SeriesRecord]]:
        items = self._table.batch_get(
            [
                key
                for study_uid, series_uid in keys
                for key in ((study_uid, STUDY_SK), (study_uid, f"SE#{series_uid}"))
            ]
        )
        studies = (study_of(item) for item in items if item["sk"]["S"] == STUDY_SK)
        series = (series_of(item) for item in items if item["sk"]["S"] != STUDY_SK)
        return (
            {study.study_uid: study for study in studies},
            {(s.study_uid, s.series_uid): s for s in series},
        )

    def study_tree(
        self, study_uid: str, series_uids: Sequence[str] | None, with_instances: bool
    ) -> StudyTree | None:
        """A whole study from one Query of its partition; chosen series from one batch read,
        their instances queried series by series as they are consumed."""
        if series_uids is None:
            return self._whole_study(study_uid, with_instances)
        items = self._table.batch_get(
            [(study_uid, STUDY_SK), *((study_uid, f"SE#{uid}") for uid in series_uids)]
        )
        study = next((study_of(i) for i in items if i["sk"]["S"] == STUDY_SK), None)
        if study is None:
            return None
        series = sorted(
            (series_of(i) for i in items if i["sk"]["S"] != STUDY_SK), key=lambda s: s.series_uid
        )
        instances = (
            search_instance_of(item)
            for s in (series if with_instances else [])
            for item in self._table.query(study_uid, f"IN#{s.series_uid}#")
        )
        return StudyTree(study, series, instances)

    def _whole_study(self, study_uid: str, with_instances: bool) -> StudyTree | None:
        condition, values = "pk = :pk", {":pk": string(study_uid)}
        if not with_instances:  # "SE#..." < "ST": the series items and the study item
            condition, values[":se"] = "pk = :pk AND sk >= :se", string("SE#")
        items = list(
            self._table.pages(
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                ConsistentRead=True,
            )
        )
        study = next((study_of(i) for i in items if i["sk"]["S"] == STUDY_SK), None)
        if study is None:
            return None
        return StudyTree(
            study,
            [series_of(i) for i in items if i["sk"]["S"][:3] == "SE#"],
            [search_instance_of(i) for i in items if i["sk"]["S"][:3] == "IN#"],
        )

    def _search_index(self, keyword: str, hint: Narrowing) -> list[tuple[str, str]]:
        """(pk, sk) of the items of the shared GSI `search` whose `keyword` value equals one of
        the hint's values (`exact`) or starts with one (`prefix`)."""
        keys = []
        for value in map(key_value, hint.values):
            items = self._table.pages(
                IndexName=SEARCH_INDEX,
                KeyConditionExpression="sx = :sx AND begins_with(sxs, :v)",
                ExpressionAttributeValues={
                    ":sx": string(f"{keyword}#{value[:1]}"),
                    ":v": string(value if hint.kind == "prefix" else f"{value}#"),
                },
            )
            keys += [(item["pk"]["S"], item["sk"]["S"]) for item in items]
        return keys

    def _date_listing(self, hint: Narrowing | None) -> Iterator[dict[str, Value]]:
        """Study items from the GSI `study_date`, newest first (within `hint`'s range), the
        shards merged."""
        condition, values = "ds = :ds", {}
        if hint is not None:
            low, high = date_bounds(hint)
            condition += " AND dk BETWEEN :low AND :high"
            # "#" < "0" < "9" < "$": every dated key of the range, none without a date.
            values = {":low": string(low or "0"), ":high": string(f"{high or '9' * 8}$")}
        shards = [
            self._table.pages(
                growing=FIRST_PAGE,
                IndexName=DATE_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeValues={":ds": string(f"DS#{n}"), **values},
                ScanIndexForward=False,
            )
            for n in range(DATE_SHARDS)
        ]
        yield from heapq.merge(*shards, key=lambda item: item["dk"]["S"], reverse=True)
