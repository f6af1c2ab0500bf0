"""What a search reads from the index before its caller stops (issue 14, cost flat in archive
size): QIDO-RS takes a page and one more match, so the date-ordered listing must not read a
whole first page of 500 rows (SQLite) or 1 MB per date shard (DynamoDB) to give a few.
Counted through wrappers around the real SQLite connection and DynamoDB client (moto)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import pytest

from bench.counting import CountingDynamoClient, CountingSqlite
from bench.scale import dynamo_items, write_dynamo
from chalicelib.dicom.matching import Narrowing, index_text
from chalicelib.storage.dynamo import DynamoTagIndex
from chalicelib.storage.local import SqliteTagIndex
from chalicelib.storage.ports import InstanceRecord, TagIndex
from chalicelib.storage.records import search_terms
from tests.storage.conftest import TABLE, build_record

STUDIES = 40
TAKEN = 6
"""Fewer than a first page of any date shard: the first pages are all that is read."""


@pytest.fixture(params=["local", "aws"])
def counted(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TagIndex, Callable[[], int]]]:
    """An index of STUDIES studies and a function giving what it read since the last call:
    rows SQLite returned, or items DynamoDB read."""
    if request.param == "local":
        index = SqliteTagIndex(tmp_path / "index.sqlite")
        sqlite = CountingSqlite(index._db._db)
        index._db._db = sqlite  # the adapter's own connection, counted
        read: Callable[[], Any] = lambda: sqlite.reset().rows  # noqa: E731
    else:
        dynamodb = CountingDynamoClient(request.getfixturevalue("dynamodb"))
        index = DynamoTagIndex(dynamodb, TABLE)
        read = lambda: dynamodb.reset().items_read  # noqa: E731
    for n in range(STUDIES):
        index.store_instance(build_record(f"1.2.{n}", f"1.2.{n}.1", f"1.2.{n}.1.1"), False)
    read()
    yield index, read
    if isinstance(index, SqliteTagIndex):
        index.close()


def test_search_listing_first_results_read_a_small_page(counted) -> None:
    index, read = counted
    assert len(list(islice(index.search("study", [], None), TAKEN))) == TAKEN
    assert read() <= 32  # 16 rows, or 8 items of each of 4 date shards; all 40 before


def test_search_study_date_range_first_results_read_a_small_page(counted) -> None:
    index, read = counted
    hint = Narrowing("StudyDate", "range", ("20240101", "20241231"))
    assert len(list(islice(index.search("study", [hint], None), TAKEN))) == TAKEN
    assert read() <= 32


def test_search_listing_read_to_the_end_lists_every_study(counted) -> None:
    """Growing pages leave nothing out (each shard's pages chained by LastEvaluatedKey)."""
    index, read = counted
    uids = [candidate.study.study_uid for candidate in index.search("study", [], None)]
    assert sorted(uids) == sorted(f"1.2.{n}" for n in range(STUDIES))
    assert read() >= STUDIES


SURNAMES = ("SMITH", "DOE", "ROSSI", "KIM", "COHEN", "NOVAK", "SILVA", "OBI", "MORI", "PEREZ")
GIVEN_NAMES = ("ANNA", "JOHN")
SMALL, LARGE = 400, 1600
"""Archive sizes (studies) of the keyed cost test: every key below matches 10% or more."""
KEYED_TAKEN = 12
"""Fewer than a first page of a study key: the first page is all that is read."""


def keyed_record(n: int) -> InstanceRecord:
    """Study n of an archive where one study in ten is a SMITH, has PatientID PAT-3 and
    AccessionNumber ACC-3, and every other study has a CT series; dates spread over 20
    years, so UID order says nothing of date order."""
    record = build_record(f"1.2.{n}", f"1.2.{n}.1", f"1.2.{n}.1.1", modality=["CT", "MR"][n % 2])
    day = date(2000, 1, 1) + timedelta(days=n * 7919 % 7300)
    record.study_tags.update(
        {
            "00100010": {
                "vr": "PN",
                "Value": [{"Alphabetic": f"{SURNAMES[n % 10]}^{GIVEN_NAMES[n // 10 % 2]}"}],
            },
            "00100020": {"vr": "LO", "Value": [f"PAT-{n % 10}"]},
            "00080050": {"vr": "SH", "Value": [f"ACC-{n % 10}"]},
            "00080020": {"vr": "DA", "Value": [day.strftime("%Y%m%d")]},
        }
    )
    return record


@pytest.fixture(params=["local", "aws"])
def growing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TagIndex, Callable[[int], None], Callable[[], dict[str, int]]]]:
    """An empty index, a function that grows it to n studies of `keyed_record`, and one that
    gives what the index read since its last call (SQLite rows and VM steps; DynamoDB items
    read). On DynamoDB the items are written as a store leaves them (bench.scale builds and
    checks them): moto copies its whole table in every transaction."""
    loaded = 0
    if request.param == "local":
        index = SqliteTagIndex(tmp_path / "index.sqlite")
        sqlite = CountingSqlite(index._db._db)
        index._db._db = sqlite

        def load(records: list[InstanceRecord]) -> None:
            index.store_instances(records, False)

        def read() -> dict[str, int]:
            reads = sqlite.reset()
            return {"rows": reads.rows, "vm_steps": reads.vm_steps}

    else:
        client = request.getfixturevalue("dynamodb")
        dynamodb = CountingDynamoClient(client)
        index = DynamoTagIndex(dynamodb, TABLE)

        def load(records: list[InstanceRecord]) -> None:
            items = [item for record in records for item in dynamo_items([record])]
            write_dynamo(client, items, TABLE)

        def read() -> dict[str, int]:
            return {"items_read": dynamodb.reset().items_read}

    def grow(size: int) -> None:
        nonlocal loaded
        load([keyed_record(n) for n in range(loaded, size)])
        loaded = size
        read()

    yield index, grow, read
    if isinstance(index, SqliteTagIndex):
        index.close()


def _name(kind: Literal["exact", "prefix"], *values: str) -> Narrowing:
    return Narrowing(
        "PatientName", kind, tuple(index_text(v, case_sensitive=False) for v in values)
    )


KEYED_HINTS = [
    _name("prefix", "Smi"),
    _name("prefix", "S"),
    _name("exact", "Smith^Anna", "Smith^John"),
    Narrowing("PatientID", "exact", ("PAT-3",)),
    Narrowing("AccessionNumber", "exact", ("ACC-3", "ACC-4")),
    Narrowing("ModalitiesInStudy", "exact", ("CT",)),
]


def test_search_keyed_first_results_read_the_same_at_every_size(growing) -> None:
    """A keyed study search reads its first results in answer order from a study key
    (issue 14): what it reads is the same at 400 and 1,600 studies, for name prefixes
    (within and beyond the bucket of one letter), exact names, IDs and modalities. Before,
    SQLite looked up the date of every match inside its query (VM steps grew with the
    matches) and DynamoDB read every match of the value-ordered `search` GSI, then sorted."""
    index, grow, read = growing
    measured: dict[int, list[dict[str, int]]] = {}
    for size in (SMALL, LARGE):
        grow(size)
        measured[size] = []
        for hint in KEYED_HINTS:
            taken = islice(index.search("study", [hint], None), KEYED_TAKEN)
            assert [c.study.study_uid for c in taken] == _newest_matches(hint, size)[:KEYED_TAKEN]
            measured[size].append(read())
    for hint, small, large in zip(KEYED_HINTS, measured[SMALL], measured[LARGE], strict=True):
        # SQLite VM steps (counted in hundreds) may take one or two more in the deeper
        # B-trees of more studies.
        steps = large.pop("vm_steps", 0) - small.pop("vm_steps", 0)
        assert large == small and steps <= 2, (hint, small, large, steps)


def _newest_matches(hint: Narrowing, size: int) -> list[str]:
    """The studies of `keyed_record` that `hint` matches, in answer order (newest first)."""

    def values(n: int) -> list[str]:
        record = keyed_record(n)
        if hint.keyword == "ModalitiesInStudy":
            return [record.series_tags["00080060"]["Value"][0]]
        terms = search_terms(record.study_tags)
        return [v for entry, v in terms.items() if entry.startswith(hint.keyword)]

    hits = [
        keyed_record(n)
        for n in range(size)
        if any(
            v in hint.values if hint.kind == "exact" else v.startswith(hint.values)
            for v in values(n)
        )
    ]
    assert len(hits) > KEYED_TAKEN  # the corpus has more matches than a page
    hits.sort(key=lambda r: (r.study_tags["00080020"]["Value"][0], r.study_uid), reverse=True)
    return [r.study_uid for r in hits]


def test_search_study_date_range_reads_within_the_range_sqlite(tmp_path: Path) -> None:
    """A newest-first page of an old date range starts at the range's end in the index; it
    walked every newer study down to the range first (SQLite VM steps, in hundreds)."""
    index = SqliteTagIndex(tmp_path / "index.sqlite")
    sqlite = CountingSqlite(index._db._db)
    index._db._db = sqlite
    for n in range(1000):
        record = build_record(f"1.2.{n}", f"1.2.{n}.1", f"1.2.{n}.1.1")
        day = date(2000, 1, 1) + timedelta(days=n)
        record.study_tags["00080020"] = {"vr": "DA", "Value": [day.strftime("%Y%m%d")]}
        index.store_instance(record, False)
    sqlite.reset()
    hint = Narrowing("StudyDate", "range", ("20000101", "20000131"))
    taken = list(islice(index.search("study", [hint], None), TAKEN))
    assert taken[0].study.study_tags["00080020"]["Value"] == ["20000131"]
    steps = sqlite.reset().vm_steps
    index.close()
    assert steps < 20, steps
