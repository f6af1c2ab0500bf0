"""What a QIDO-RS page costs: the search reads the index past the page only to count what
follows, up to `REMAINING_COUNTED` matches, never every match (issue 14, cost flat in archive
size), on both backends."""

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
from chalicelib.server.qido import REMAINING_COUNTED, more_results
from chalicelib.storage.ports import SearchCandidate, TagIndex
from tests.server.helpers import HOST, json_of

STUDIES = REMAINING_COUNTED + 20  # more than a page and the count after it


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


def test_search_page_counts_what_follows_up_to_the_bound(counted) -> None:
    """One test, so the 120 studies are stored once per backend."""
    response, read = taken(counted, "/studies?limit=3")
    assert len(json_of(response)) == 3
    assert response.headers["Warning"] == f'299 {HOST} "{more_results(None)}"'
    assert "more than 100 additional results" in response.headers["Warning"]
    assert read == 3 + REMAINING_COUNTED + 1  # not all 120
    response, read = taken(counted, "/studies?limit=3&offset=3")
    assert len(json_of(response)) == 3 and read == 6 + REMAINING_COUNTED + 1

    # within the bound the count is exact, as PS3.18 §8.3.4.4.1 words it
    response, read = taken(counted, f"/studies?limit=10&offset={STUDIES - 50}")
    assert len(json_of(response)) == 10 and read == STUDIES
    assert response.headers["Warning"] == (
        f'299 {HOST} "There are 40 additional results that can be requested"'
    )
    response, read = taken(counted, f"/studies?limit=5&offset={STUDIES - 2}")
    assert len(json_of(response)) == 2 and read == STUDIES
    assert "Warning" not in response.headers

    # indexed keys too: a date range and ModalitiesInStudy (study n is CT when n is even)
    response, read = taken(counted, "/studies?StudyDate=19000101-20991231&limit=2")
    assert len(json_of(response)) == 2 and read == 2 + REMAINING_COUNTED + 1
    assert more_results(None) in response.headers["Warning"]
    response, read = taken(counted, "/studies?ModalitiesInStudy=CT&limit=2")
    assert len(json_of(response)) == 2 and read == STUDIES // 2
    assert more_results(STUDIES // 2 - 2) in response.headers["Warning"]
    response, read = taken(counted, f"/studies?ModalitiesInStudy=CT&limit={STUDIES}")
    assert len(json_of(response)) == STUDIES // 2 and read == STUDIES // 2
    assert "Warning" not in response.headers
