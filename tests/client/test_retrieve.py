"""The retrieve job step against a remote that answers its series search oddly (a loopback
HTTP server, never a mock)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from chalice.test import Client
from pydicom.uid import generate_uid

from chalicelib import jobs
from chalicelib.dicom.multipart import (
    encode_multipart,
    iter_multipart,
    parse_media_type,
    split_multipart,
)
from chalicelib.server.api import create_app
from tests.client.loopback import answer, loopback_server
from tests.client.test_two_servers import rewrite, store
from tests.conftest import make_context, testdata
from tests.server.test_localserver import in_process_server, local_server

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


SERIES_INSTANCES = 24
PEAK_BOUND = 6 * 1024 * 1024
"""Python memory a retrieve or a proxied GET of the 24-slice series (12.6 MB) may take at its
peak: a few of its 0.5 MB parts (2.7 and 3.0 MB measured), not the answer (held whole: 24.7
and 24.4 MB)."""


@pytest.fixture(scope="module")
def remote_series(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Our own server (`make run`) holding a series of SERIES_INSTANCES 0.5 MB slices, more
    than PEAK_BOUND in all; yields its URL, the study and the series."""
    slice_ = testdata("2020-08-12-Christopher.dcm").read_bytes()
    study, series = generate_uid(), generate_uid()
    instances = [rewrite(slice_, study, series, generate_uid()) for _ in range(SERIES_INSTANCES)]
    assert sum(len(i.data) for i in instances) > 2 * PEAK_BOUND
    with local_server(tmp_path_factory.mktemp("remote")) as remote:
        store(remote, instances)
        yield remote, study, series


def test_retrieve_step_memory_is_bounded_by_a_part_not_the_series(
    tmp_path: Path, remote_series: tuple[str, str, str]
) -> None:
    """The series is retrieved with a peak of Python allocations (tracemalloc) under
    PEAK_BOUND."""
    remote, study, series = remote_series
    ctx = make_context("local", tmp_path, servers={"remote": [f"{remote}/dicom-web/"]})
    resource = {"Study": study, "Series": series}
    job = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": [resource]}, {}, 0)
    ctx.jobs.create(job)
    tracemalloc.start()
    try:
        done = jobs.run_step_with_retries(ctx, job.id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    job = ctx.jobs.get(job.id)
    assert done and job.state == "Success", job.error_description
    assert job.content["ReceivedInstancesCount"] == str(SERIES_INSTANCES)
    assert len(ctx.index.list_instances(study, series)) == SERIES_INSTANCES
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MB"


def test_proxy_get_passes_a_series_on_as_it_arrives(
    tmp_path: Path, remote_series: tuple[str, str, str]
) -> None:
    """`servers/{name}/get` of the series through a local server (in this process, `make
    run`'s server): the answer's parts are the remote's, byte for byte, and the process's
    peak of Python allocations stays under PEAK_BOUND (the answer was read whole before)."""
    remote, study, series = remote_series
    uri = f"/studies/{study}/series/{series}"
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    direct = requests.get(f"{remote}/dicom-web{uri}", headers=accept, timeout=60)
    assert direct.status_code == 200 and len(direct.content) > 2 * PEAK_BOUND
    servers = {"remote": [f"{remote}/dicom-web/"]}
    with in_process_server(tmp_path, 60, servers=servers) as url:
        tracemalloc.start()
        try:
            with requests.post(
                f"{url}/dicom-web/servers/remote/get",
                json={"Uri": uri, "HttpHeaders": accept},
                stream=True,
                timeout=60,
            ) as answer:
                assert answer.status_code == 200
                boundary = parse_media_type(answer.headers["Content-Type"]).params["boundary"]
                parts = iter_multipart(answer.iter_content(64 * 1024), boundary)
                digests = [hashlib.sha256(part.body).digest() for part in parts]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    boundary = parse_media_type(direct.headers["Content-Type"]).params["boundary"]
    parts = split_multipart(direct.content, boundary)
    assert digests == [hashlib.sha256(part.body).digest() for part in parts]
    assert len(digests) == SERIES_INSTANCES
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MB"


def test_retrieve_answer_broken_off_mid_part_is_transient_and_keeps_the_parts_before(
    tmp_path: Path,
) -> None:
    """A remote that closes the connection inside its second part (read as it arrives): the
    first part is stored, the step is tried again as a transient failure (not a defect's
    'internal error'), then the job fails saying the answer broke off."""
    slice_ = testdata("2020-08-12-Christopher.dcm").read_bytes()
    study, series = generate_uid(), generate_uid()
    first, second = (rewrite(slice_, study, series, generate_uid()) for _ in range(2))
    parts = [({"Content-Type": "application/dicom"}, i.data) for i in (first, second)]
    body = encode_multipart(parts, "XX")
    asked: list[str] = []

    def do_get(handler: BaseHTTPRequestHandler) -> None:
        asked.append(handler.path)
        handler.send_response(200)
        handler.send_header(
            "Content-Type", 'multipart/related; type="application/dicom"; boundary=XX'
        )
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) * 3 // 4])
        handler.close_connection = True

    with loopback_server(do_get) as origin:
        ctx = make_context("local", tmp_path, servers={"odd": [f"{origin}/dicom-web/"]})
        job = jobs.new_job(jobs.RETRIEVE, "odd", {"Uri": "/studies/1.2.3"}, {}, 0)
        ctx.jobs.create(job)
        ended = jobs.run_inline(ctx, job.id)
    assert ended.state == "Failure"
    assert "the answer broke off" in ended.error_description, ended.error_description
    assert len(asked) == 1 + len(jobs.LOCAL_RETRY_DELAYS)
    assert [i.sop_uid for i in ctx.index.list_instances(study)] == [first.sop]
