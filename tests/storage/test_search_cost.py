"""What a search reads from the index before its caller stops (issue 14, cost flat in archive
size): QIDO-RS takes a page and one more match, so the date-ordered listing must not read a
whole first page of 500 rows (SQLite) or 1 MB per date shard (DynamoDB) to give a few.
Counted through wrappers around the real SQLite connection and DynamoDB client (moto)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from bench.counting import CountingDynamoClient, CountingSqlite, SqliteReads
from chalicelib.dicom.matching import Narrowing, index_text
from chalicelib.storage.dynamo import DynamoTagIndex
from chalicelib.storage.local import SqliteTagIndex
from chalicelib.storage.ports import TagIndex
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


@pytest.fixture
def counted_sqlite(tmp_path: Path) -> Iterator[tuple[TagIndex, Callable[[], SqliteReads]]]:
    index = SqliteTagIndex(tmp_path / "index.sqlite")
    sqlite = CountingSqlite(index._db._db)
    index._db._db = sqlite
    for n in range(STUDIES):
        index.store_instance(build_record(f"1.2.{n}", f"1.2.{n}.1", f"1.2.{n}.1.1"), False)
    sqlite.reset()
    yield index, sqlite.reset
    index.close()


@pytest.mark.parametrize(
    "hint",
    [
        Narrowing("PatientName", "prefix", (index_text("DOE", case_sensitive=False),)),
        Narrowing("PatientID", "exact", ("PAT-1",)),
        Narrowing("ModalitiesInStudy", "exact", ("CT",)),
    ],
    ids=lambda hint: hint.keyword,
)
def test_search_keyed_results_come_from_one_query_sqlite(counted_sqlite, hint) -> None:
    """On SQLite a keyed study search comes in listing order from one query (it read every
    matching term, then every matching study row), and the first page holds a QIDO-RS page
    and the matches its Warning counts: every page of a keyed query sorts all its matches
    again (4 pages made a PatientName search 4 times slower at 100,000 studies). DynamoDB
    still reads every match: its `search` index is ordered by value, not by date."""
    index, read = counted_sqlite
    taken = list(index.search("study", [hint], None))
    assert len(taken) == STUDIES
    assert [c.study.study_uid for c in taken] == sorted(
        (f"1.2.{n}" for n in range(STUDIES)), reverse=True
    )  # newest first: one date, so StudyInstanceUID descending
    reads = read()
    assert reads.rows == STUDIES
    assert reads.statements == 2  # the page of 40 and the empty one that ends it (16, 32: 3)


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
