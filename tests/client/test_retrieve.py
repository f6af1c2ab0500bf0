"""The retrieve job step against a remote that answers its series search oddly (a loopback
HTTP server, never a mock)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from chalice.test import Client

from chalicelib.server.api import create_app
from tests.client.loopback import answer, loopback_server
from tests.conftest import make_context

STUDY = "1.2.3"
EMPTY_MULTIPART = b"--XX--\r\n"


@contextmanager
def _remote(series_answer: bytes) -> Iterator[tuple[str, list[str]]]:
    """A remote whose series search answers `series_answer` and whose study retrieve answers
    a multipart body without parts; yields its DICOMweb root and the paths it was asked."""
    asked: list[str] = []

    def do_get(handler: BaseHTTPRequestHandler) -> None:
        asked.append(handler.path)
        if handler.path.endswith("/series"):
            answer(handler, 200, series_answer, "application/dicom+json")
        else:
            multipart = 'multipart/related; type="application/dicom"; boundary=XX'
            answer(handler, 200, EMPTY_MULTIPART, multipart)

    with loopback_server(do_get) as origin:
        yield f"{origin}/dicom-web/", asked


@pytest.mark.parametrize(
    "series_answer",
    [b"42", b'{"0020000E": {"vr": "UI"}}', b'[{"0020000E": "1.2.3.4"}, 3, null, []]', b"[]"],
)
def test_study_retrieve_with_an_unreadable_series_list_fetches_the_study_whole(
    tmp_path: Path, series_answer: bytes
) -> None:
    with _remote(series_answer) as (url, asked):
        ctx = make_context("local", tmp_path, servers={"odd": [url]})
        client = Client(create_app(lambda: ctx))
        response = client.http.post(
            "/dicom-web/servers/odd/retrieve",
            body=json.dumps({"Resources": [{"Study": STUDY}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.body
    assert json.loads(response.body)["ReceivedInstancesCount"] == "0"
    assert asked == [f"/dicom-web/studies/{STUDY}/series", f"/dicom-web/studies/{STUDY}"]
