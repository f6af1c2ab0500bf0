"""`TagIndex.search`, written once for every adapter: which hint narrows, what is read for it,
the walk below studies and series, the parents of instance candidates, and the scan budget.
Search Transaction, PS3.18 §10.6 (2025b).

An adapter supplies only its reads (`SearchReads`); the order of the results, the same on
every adapter, is set here (see `TagIndex.search`).

Keyed study searches (PatientID, AccessionNumber, PatientName, ModalitiesInStudy) read study
keys: each adapter keeps, per study, a key per value (PatientID = P123, PatientName =
SMITH^ANNA, ModalitiesInStudy = CT, and the PatientName prefixes PatientName*1 = S,
PatientName*2 = SM, PatientName*3 = SMI) ordered by `study_order` within the key. A hint
becomes one date-ordered run per value (`key_runs`: an exact value reads its key, a name
prefix the bucket of its first `PREFIX_BUCKET` characters, skipping the terms a longer prefix
does not start), and the runs are merged newest first: a QIDO-RS page reads about a page of
keys and of studies however large the archive (issue 14). Prefixes of PatientID,
AccessionNumber and ModalitiesInStudy have no bucket: every match is read and sorted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Protocol

from chalicelib.dicom.matching import Narrowing, index_text
from chalicelib.dicom.tags import Level
from chalicelib.storage.ports import (
    ScanBudgetExceeded,
    SearchCandidate,
    SearchInstance,
    SeriesRecord,
    StudyRecord,
)
from chalicelib.storage.records import PREFIX_BUCKET, study_date

SeriesKey = tuple[str, str]
"""(StudyInstanceUID, SeriesInstanceUID)."""


@dataclass
class StudyTree:
    """A study as one read of it saw it: the study, the series asked for (ascending
    SeriesInstanceUID), and their instances in (SeriesInstanceUID, SOPInstanceUID) order
    (read lazily where the adapter can)."""

    study: StudyRecord
    series: list[SeriesRecord]
    instances: Iterable[SearchInstance]


@dataclass(frozen=True)
class KeyRun:
    """The studies whose key `name` has `value` (and, for a prefix longer than the bucket,
    whose full term starts with `prefix`), in `study_order` descending."""

    name: str
    value: str
    prefix: str | None = None


class SearchReads(Protocol):
    """The reads an adapter answers a search with, each from its indexes (never a full scan
    of records at a level below the one listed)."""

    def studies_by_date(self, hint: Narrowing | None) -> Iterator[StudyRecord]:
        """Studies newest first (StudyDate descending, absent last, then StudyInstanceUID
        descending, see `study_order`): within the StudyDate range `hint` (dated studies only),
        all when None. Read lazily: a caller that stops after a page reads about a page."""

    def studies_by_key(self, run: KeyRun) -> Iterator[tuple[str, StudyRecord]]:
        """The studies of a key run, newest first, each with its `study_order` as the key
        holds it; read lazily in growing pages, like `studies_by_date`."""

    def study_uids(self) -> Iterator[str]:
        """Every StudyInstanceUID, ascending."""

    def study_uids_for(self, hint: Narrowing) -> set[str]:
        """The studies satisfying a PatientID, AccessionNumber, PatientName, StudyDate or
        ModalitiesInStudy hint (a superset)."""

    def studies(self, study_uids: Sequence[str]) -> list[StudyRecord]:
        """The studies among `study_uids` that exist, in any order."""

    def series_keys(self, hint: Narrowing, hints: Sequence[Narrowing]) -> list[SeriesKey]:
        """The series satisfying a SeriesInstanceUID or Modality hint (a superset; `hints`
        are all the hints, for an adapter that can use a study UID to read less)."""

    def instances(self, sop_uids: Sequence[str]) -> list[SearchInstance]:
        """The instances among `sop_uids` that exist, in any order."""

    def parents(
        self, keys: Sequence[SeriesKey]
    ) -> tuple[dict[str, StudyRecord], dict[SeriesKey, SeriesRecord]]:
        """The studies and series of `keys` that exist, by UID and by key."""

    def study_tree(
        self, study_uid: str, series_uids: Sequence[str] | None, with_instances: bool
    ) -> StudyTree | None:
        """The study with its series (all, or those of `series_uids` that exist) and, when
        `with_instances`, their instances, from reads that agree with each other (a delete
        between two of them must not show a series without its study); None when the study
        does not exist."""


# The hints an index can use at each level, in the order they are tried.
_HINT_ORDER: dict[Level, tuple[str, ...]] = {
    "study": (
        "StudyInstanceUID",
        "PatientID",
        "AccessionNumber",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
    ),
    "series": (
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "PatientID",
        "AccessionNumber",
        "PatientName",
        "StudyDate",
        "Modality",
        "ModalitiesInStudy",
    ),
    "instance": (
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "PatientID",
        "AccessionNumber",
        "PatientName",
        "StudyDate",
        "Modality",
        "ModalitiesInStudy",
    ),
}


def search_hint(level: Level, hints: Sequence[Narrowing]) -> Narrowing | None:
    """The hint a search at `level` narrows with, or None (a listing)."""
    for keyword in _HINT_ORDER[level]:
        for hint in hints:
            if hint.keyword == keyword:
                if hint.keyword == "PatientName":
                    # The index holds the case-folded form whatever QidoCaseSensitive says:
                    # fold the key too, for a superset of the case-sensitive matches.
                    values = tuple(index_text(v, case_sensitive=False) for v in hint.values)
                    return Narrowing(hint.keyword, hint.kind, values)
                return hint
    return None


def run_search(
    reads: SearchReads, level: Level, hints: Sequence[Narrowing], budget: int | None
) -> Iterator[SearchCandidate]:
    """`TagIndex.search` over an adapter's reads (see its contract in ports.py)."""
    hint = search_hint(level, hints)
    if hint is None:
        yield from _listing(reads, level, budget)
    elif hint.keyword == "SOPInstanceUID":
        yield from _with_parents(reads, sorted(reads.instances(hint.values), key=_instance_order))
    elif hint.keyword in ("SeriesInstanceUID", "Modality"):
        yield from _below_series(reads, level, sorted(set(reads.series_keys(hint, hints))))
    elif level == "study" and hint.keyword == "StudyDate":
        yield from map(SearchCandidate, reads.studies_by_date(hint))
    elif level == "study" and hint.keyword != "StudyInstanceUID":
        yield from map(SearchCandidate, _studies_by_keys(reads, hint))
    elif hint.keyword == "StudyInstanceUID":
        if level == "study":
            studies = reads.studies(sorted(set(hint.values)))
            yield from map(SearchCandidate, sorted(studies, key=study_order, reverse=True))
        else:
            yield from _below_studies(reads, level, sorted(set(hint.values)))
    else:
        yield from _below_studies(reads, level, sorted(reads.study_uids_for(hint)))


def key_runs(hint: Narrowing) -> list[KeyRun] | None:
    """The key runs whose merge lists the studies of a PatientID, AccessionNumber, PatientName
    or ModalitiesInStudy hint; None for a prefix that has no bucket (not a PatientName)."""
    if hint.kind == "exact":
        return [KeyRun(hint.keyword, value) for value in hint.values]
    if hint.keyword != "PatientName":
        return None
    return [
        KeyRun(
            f"PatientName*{min(len(value), PREFIX_BUCKET)}",
            value[:PREFIX_BUCKET],
            value if len(value) > PREFIX_BUCKET else None,
        )
        for value in hint.values
    ]


def _studies_by_keys(reads: SearchReads, hint: Narrowing) -> Iterator[StudyRecord]:
    """The studies of a keyed hint newest first: its key runs merged (a study two runs hold,
    such as two name groups in one bucket, once), or every match sorted."""
    runs = key_runs(hint)
    if runs is None:
        studies = reads.studies(sorted(reads.study_uids_for(hint)))
        yield from sorted(studies, key=study_order, reverse=True)
        return
    merged = heapq.merge(
        *(reads.studies_by_key(run) for run in runs), key=lambda pair: pair[0], reverse=True
    )
    seen: set[str] = set()
    for _, study in merged:
        if study.study_uid not in seen:
            seen.add(study.study_uid)
            yield study


def study_order(study: StudyRecord) -> str:
    """The sort key of studies in search results, descending: newest first, absent last."""
    return f"{study_date(study.study_tags)}#{study.study_uid}"


def _instance_order(instance: SearchInstance) -> tuple[str, str, str]:
    return (instance.study_uid, instance.series_uid, instance.sop_uid)


def _listing(reads: SearchReads, level: Level, budget: int | None) -> Iterator[SearchCandidate]:
    """Every resource of the level in search order, under `budget`."""
    if level == "study":
        candidates = map(SearchCandidate, reads.studies_by_date(None))
    else:
        candidates = _below_studies(reads, level, reads.study_uids())
    for read, candidate in enumerate(candidates, 1):
        if budget is not None and read > budget:
            raise ScanBudgetExceeded(level, budget)
        yield candidate


def _below_studies(
    reads: SearchReads, level: Level, study_uids: Iterable[str]
) -> Iterator[SearchCandidate]:
    for study_uid in study_uids:
        yield from _below(reads.study_tree(study_uid, None, level == "instance"), level)


def _below_series(
    reads: SearchReads, level: Level, keys: list[SeriesKey]
) -> Iterator[SearchCandidate]:
    for study_uid, group in groupby(keys, key=lambda key: key[0]):
        series_uids = [series_uid for _, series_uid in group]
        yield from _below(reads.study_tree(study_uid, series_uids, level == "instance"), level)


def _below(tree: StudyTree | None, level: Level) -> Iterator[SearchCandidate]:
    """The series or instance candidates of one study tree."""
    if tree is None:
        return  # deleted meanwhile
    if level == "series":
        yield from (SearchCandidate(tree.study, series) for series in tree.series)
        return
    series = {s.series_uid: s for s in tree.series}
    for instance in tree.instances:
        if instance.series_uid in series:
            yield SearchCandidate(tree.study, series[instance.series_uid], instance)


def _with_parents(reads: SearchReads, instances: list[SearchInstance]) -> Iterator[SearchCandidate]:
    studies, series = reads.parents([(i.study_uid, i.series_uid) for i in instances])
    for instance in instances:
        study = studies.get(instance.study_uid)
        parent = series.get((instance.study_uid, instance.series_uid))
        if study is not None and parent is not None:  # else deleted meanwhile
            yield SearchCandidate(study, parent, instance)
