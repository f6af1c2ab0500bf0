"""What a QIDO-RS page costs: the search reads the index up to the first match after the page,
never every match (issue 14, cost flat in archive size), on both backends."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from chalice.test import Client

from bench.scale import StudySpec, instance_bytes
from chalicelib.context import Context
from chalicelib.dicom.matching import Narrowing
from chalicelib.dicom.tags import Level
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from chalicelib.server.qido import MORE_RESULTS
from chalicelib.storage.ports import SearchCandidate, TagIndex
from tests.server.helpers import HOST, json_of

STUDIES = 12


class CountingIndex:
    """The context's real TagIndex, counting the candidates searches take from it."""

    def __init__(self, index: TagIndex) -> None:
        self._index = index
        self.taken = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def search(
        self, level: Level, hints: Sequence[Narrowing], budget: int | None
    ) -> Iterator[SearchCandidate]:
        for candidate in self._index.search(level, hints, budget):
            self.taken += 1
            yield candidate


@pytest.fixture
def counted(context: Context) -> tuple[Client, CountingIndex]:
    specs = [StudySpec(n, 1, seed=14) for n in range(STUDIES)]
    for spec in specs:
        assert store_instance(context, instance_bytes(spec, 1)).status == "stored"
    index = CountingIndex(context.index)
    context.index = index
    return Client(create_app(lambda: context)), index


def taken(counted: tuple[Client, CountingIndex], path: str) -> tuple[Any, int]:
    client, index = counted
    index.taken = 0
    response = client.http.get(
        f"/dicom-web{path}", headers={"Accept": "application/dicom+json", "Host": HOST}
    )
    assert response.status_code == 200, response.body
    return response, index.taken


def test_search_page_reads_one_match_past_the_page(counted) -> None:
    response, read = taken(counted, "/studies?limit=3")
    assert len(json_of(response)) == 3
    assert response.headers["Warning"] == f'299 {HOST} "{MORE_RESULTS}"'
    assert read == 4  # the page and the one match that says there is more; it read 12

    response, read = taken(counted, "/studies?limit=3&offset=3")
    assert len(json_of(response)) == 3 and read == 7


def test_search_last_page_has_no_warning(counted) -> None:
    response, read = taken(counted, f"/studies?limit=5&offset={STUDIES - 2}")
    assert len(json_of(response)) == 2 and read == STUDIES
    assert "Warning" not in response.headers


def test_search_narrowed_page_reads_one_match_past_the_page(counted) -> None:
    """Indexed keys too: a date range and ModalitiesInStudy (study n is CT when n is even)."""
    response, read = taken(counted, "/studies?StudyDate=19000101-20991231&limit=2")
    assert len(json_of(response)) == 2 and read == 3
    assert MORE_RESULTS in response.headers["Warning"]
    response, read = taken(counted, "/studies?ModalitiesInStudy=CT&limit=2")
    assert len(json_of(response)) == 2 and read == 3
    response, read = taken(counted, "/studies?ModalitiesInStudy=CT&limit=10")
    assert len(json_of(response)) == STUDIES // 2 and read == STUDIES // 2
    assert "Warning" not in response.headers
