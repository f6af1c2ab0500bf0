"""The local server for real: a process on a free loopback port, driven by real clients."""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from tests.client.loopback import answer, loopback_server
from tests.conftest import REPO, testdata
from tests.corpus import storable

CT = "2020-08-12-Christopher.dcm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerUrl(str):
    """The root URL of a running local server; `process` is the server's process."""

    process: subprocess.Popen


@contextmanager
def local_server(
    data_dir: Path,
    port: int | None = None,
    config: dict[str, Any] | None = None,
    module: str = "chalicelib.server.localserver",
) -> Iterator[ServerUrl]:
    """`python -m chalicelib.server.localserver` as `make run` starts it (or `module`, e.g.
    `make run-moto`'s motoserver); yields its root URL.

    `config` is the server's DICOMWEB_CONFIG document; its output goes to `server.log` in
    `data_dir` (a pipe nobody reads would block a busy server)."""
    port = port or _free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    env.pop("DICOMWEB_CONFIG", None)
    if config is not None:
        env["DICOMWEB_CONFIG"] = json.dumps(config)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        started_at = log.tell()  # a restart on the same data_dir appends to the last run's log
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.process = process
    try:
        # Ready once it prints the line that follows its bind (not any answer on the port,
        # which another pytest-xdist worker's server may hold); a loaded machine may be slow.
        deadline = time.monotonic() + 60
        while b"DICOMweb server at" not in log_path.read_bytes()[started_at:]:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local server did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_server(tmp_path_factory.mktemp("localserver")) as url:
        yield url


def test_dicomweb_client_stores_and_retrieves(server: str) -> None:
    """dicomweb-client sends bodies over 1 MB chunked: the local server must read them."""
    client = DICOMwebClient(url=f"{server}/dicom-web")
    items = [f for f in storable() if f.name in (CT, "ColorTestImageJ.dcm", "PrivateTags.dcm")]
    datasets = [dcmread(io.BytesIO(f.data)) for f in items]
    assert sum(len(f.data) for f in items) > 1_000_000
    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == len(items)
    for item in items:
        retrieved = client.retrieve_instance(
            item.study_uid, item.series_uid, item.sop_uid, media_types=(("application/dicom", "*"),)
        )
        assert retrieved.SOPInstanceUID == item.sop_uid
        assert retrieved.PixelData == dcmread(io.BytesIO(item.data)).PixelData
    study = client.retrieve_study(items[0].study_uid)
    assert {ds.SOPInstanceUID for ds in study} == {
        f.sop_uid for f in items if f.study_uid == items[0].study_uid
    }


def test_bulkdata_uri_from_dicomweb_client_metadata_resolves(server: str) -> None:
    """dicomweb-client sends Host without the port; the links it gets back must still work."""
    client = DICOMwebClient(url=f"{server}/dicom-web")
    item = next(f for f in storable() if f.name == "PrivateTags.dcm")
    client.store_instances([dcmread(io.BytesIO(item.data))])
    metadata = client.retrieve_instance_metadata(item.study_uid, item.series_uid, item.sop_uid)
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{server}/dicom-web/studies/{item.study_uid}/")
    (frame,) = client.retrieve_bulkdata(uri, media_types=(("application/octet-stream", "*"),))
    assert frame == dcmread(io.BytesIO(item.data)).PixelData


def test_chunked_stow_body(server: str) -> None:
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

    body = stow_body(testdata(CT).read_bytes())

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = requests.post(
        f"{server}/dicom-web/studies",
        data=chunks(),
        headers={"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["00081199"]["Value"]


def test_unknown_path_404_json(server: str) -> None:
    for path in ("/nothing", "/dicom-web/nothing/here", "/dicom-web/studies/1.2/x/y/z/w"):
        response = requests.get(server + path, timeout=10)
        assert response.status_code == 404
        assert response.json()["Message"]


def test_binary_answer_is_not_base64(server: str) -> None:
    item = next(f for f in storable() if f.name == CT)
    client = DICOMwebClient(url=f"{server}/dicom-web")
    client.store_instances([dcmread(io.BytesIO(item.data))])
    response = requests.get(
        f"{server}/dicom-web/studies/{item.study_uid}/series/{item.series_uid}"
        f"/instances/{item.sop_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=30,
    )
    assert response.status_code == 200
    assert item.data in response.content


def test_data_survives_a_restart(tmp_path: Path) -> None:
    item = next(f for f in storable() if f.name == CT)
    with local_server(tmp_path) as url:
        DICOMwebClient(url=f"{url}/dicom-web").store_instances([dcmread(io.BytesIO(item.data))])
    with local_server(tmp_path) as url:
        client = DICOMwebClient(url=f"{url}/dicom-web")
        retrieved = client.retrieve_instance(
            item.study_uid, item.series_uid, item.sop_uid, media_types=(("application/dicom", "*"),)
        )
        assert retrieved.SOPInstanceUID == item.sop_uid


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "chalicelib.server.localserver", "--port", str(port)],
            cwd=REPO,
            env={**os.environ, "DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already in use" in result.stderr


def test_path_parameters_are_percent_decoded_as_api_gateway_does(tmp_path: Path) -> None:
    """A configured server named "my peer" is reached at servers/my%20peer, as on AWS (a
    name given to PUT takes no space: servers/other%40one)."""
    config = {"DicomWeb": {"Servers": {"my peer": ["http://127.0.0.1:9/dicom-web/"]}}}
    with local_server(tmp_path, config=config) as url:
        response = requests.get(f"{url}/dicom-web/servers/my%20peer", timeout=30)
        assert response.status_code == 200, response.text
        response = requests.put(
            f"{url}/dicom-web/servers/other%40one", json={"Url": "http://h/"}, timeout=30
        )
        assert response.status_code == 200, response.text
        names = requests.get(f"{url}/dicom-web/servers", timeout=30).json()
        assert names == ["my peer", "other@one"]


def test_bad_option_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    """README: a bad value stops the server with the rule; a line, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.server.localserver", "--port", "0"],
        cwd=REPO,
        env={
            **os.environ,
            "DATA_DIR": str(tmp_path),
            "DICOMWEB_CONFIG": '{"DicomWeb": {"QidoMaxLimit": "many"}}',
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "QidoMaxLimit" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def _raw_exchange(server: str, request: bytes) -> tuple[int, dict]:
    """Send `request` as written and read one answer: (status, JSON body)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    address = urlsplit(server)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(request)
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        return answer.status, json.loads(answer.read())


def _half_closed_exchange(server: str, request: bytes) -> bytes:
    """Send `request` as written, end the sending side (the client gives up), and read
    everything the server answers until it closes."""
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


# Issue 11: each of these closed the connection without an answer.
@pytest.mark.parametrize(
    ("request_bytes", "message"),
    [
        (
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/related; boundary=b\r\n\r\nZZZ\r\n",
            "chunk size line 'ZZZ' is not hexadecimal",
        ),
        (
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
            "Content-Length 'abc' is not a number",
        ),
        (
            "GET /nothing HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer é€\r\n\r\n".encode(),
            "Authorization header holds non-ASCII characters",
        ),
        # Python's int() took these: a wait for 16 bytes never sent, a body ended early.
        (
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/related; boundary=b\r\n\r\n0x10\r\n",
            "chunk size line '0x10' is not hexadecimal",
        ),
        (
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/related; boundary=b\r\n\r\n\r\n",
            "chunk size line '' is not hexadecimal",
        ),
    ],
    ids=[
        "chunk-size-ZZZ",
        "content-length-abc",
        "non-ascii-authorization",
        "chunk-size-0x10",
        "chunk-size-blank",
    ],
)
def test_malformed_request_400_json(server: str, request_bytes: bytes, message: str) -> None:
    status, body = _raw_exchange(server, request_bytes)
    assert status == 400
    assert message in body["Message"]


# http.server's own refusals were HTML pages (an unknown method a 501); an HTTP/0.9 request
# line got no answer at all, the server waiting for headers such a client never sends.
@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"FOO /dicom-web/studies HTTP/1.1\r\nHost: h\r\n\r\n", 405, "'FOO' is not a method"),
        (
            b"GET /dicom-web/studies/" + b"1." * 35000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            414,
            "request line is over 65,536 bytes",
        ),
        (
            b"GET /dicom-web/studies HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
            431,
            "Line too long",
        ),
        (b"GET /dicom-web/studies\r\n", 400, "no HTTP version"),
    ],
    ids=["unknown-method", "request-line-70k", "header-line-70k", "http-0.9"],
)
def test_refused_request_answered_in_json(
    server: str, request_bytes: bytes, status: int, message: str
) -> None:
    answer_status, body = _raw_exchange(server, request_bytes)
    assert answer_status == status
    assert message in body["Message"]


def _stow_tiny(url: str) -> str:
    """A new 2 × 2 instance stored; its path."""
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body, tiny_image

    response = requests.post(
        f"{url}/dicom-web/studies",
        data=stow_body(tiny_image()),
        headers={"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["00081199"]["Value"][0]["00081190"]["Value"][0].split(url, 1)[1]


def test_request_cut_before_the_end_of_its_headers_is_not_run(server: str) -> None:
    """A client that gave up before the blank line ending its headers (RFC 9112 §2.1) had
    its request carried out anyway: here a DELETE of the study."""
    instance = _stow_tiny(server)
    study = instance.split("/series/")[0]
    answer = _half_closed_exchange(server, f"DELETE {study} HTTP/1.1\r\nHost: h\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"the connection ended before the blank line" in answer
    assert requests.get(server + instance, timeout=30).status_code == 200


@pytest.mark.parametrize(
    "lengths",
    [b"Content-Length: 5\r\nContent-Length: 7\r\n", b"Content-Length: 5, 7\r\n"],
    ids=["two-headers", "one-list"],
)
def test_differing_content_lengths_400_closed_and_not_run(server: str, lengths: bytes) -> None:
    """Content-Length values that differ leave the body's end unknown: an unrecoverable error,
    RFC 9112 §6.3 (item 5). Answered 400 and the connection closed (the client keeps its
    side open); the DELETE is not run. The server took one of the values and ran it."""
    instance = _stow_tiny(server)
    study = instance.split("/series/")[0].encode()
    with _connect(server) as connection:
        connection.sendall(
            b"DELETE " + study + b" HTTP/1.1\r\nHost: h\r\n" + lengths + b"\r\nabcdefg"
        )
        answer = _read_to_the_end(connection)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"different Content-Length values (5, 7)" in answer
    assert requests.get(server + instance, timeout=30).status_code == 200


def test_repeated_equal_content_length_is_one(server: str) -> None:
    """The same value repeated, in headers or a list, is that value (RFC 9112 §6.3)."""
    request = b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 0\r\n"
    with _connect(server) as connection:
        connection.sendall(request + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        answer = _read_to_the_end(connection)
    assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 204 "))


def test_chunked_body_cut_before_its_last_chunk_400(server: str) -> None:
    """The connection ended where a chunk size was due: the answer says so (it said that an
    empty chunk size line is not hexadecimal)."""
    answer = _half_closed_exchange(
        server,
        b"POST /dicom-web/studies HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/related; boundary=b\r\n\r\n3\r\nabc\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"the connection ended before its last chunk" in answer


def test_semicolon_stays_in_path_parameters(server: str) -> None:
    """Chalice's local matcher cut `;2` off `frames/1;2` and answered frame 1."""
    instance = _stow_tiny(server)
    response = requests.get(f"{server}{instance}/frames/1;2", timeout=30)
    assert response.status_code == 400
    assert "'1;2' is not a frame number" in response.json()["Message"]


def test_listen_backlog_holds_a_burst_of_connections(tmp_path: Path) -> None:
    """http.server listens with a backlog of 5: of 200 clients connecting at once, the others'
    SYNs were dropped and they waited 1, 3, 7 s for retransmits, or timed out. The server
    here is made but not serving, so only the kernel's queue holds the connections."""
    import select

    from chalicelib.server.localserver import make_server

    server = make_server("127.0.0.1", 0, tmp_path)
    connections = [socket.socket() for _ in range(64)]
    try:
        port = server.server.server_address[1]
        for connection in connections:
            connection.setblocking(False)
            connection.connect_ex(("127.0.0.1", port))
        pending = list(connections)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            _, connected, _ = select.select([], pending, [], 0.5)
            pending = [c for c in pending if c not in connected]
        assert not pending, f"{len(pending)} of 64 connections not established"
    finally:
        for connection in connections:
            connection.close()
        server.server.server_close()


def test_clients_resetting_mid_request_are_logged_in_a_line(tmp_path: Path) -> None:
    """Slowloris clients resetting their connections halfway through the headers: a log line
    each, not socketserver's traceback (800 at once held the server for seconds)."""
    with local_server(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                connection.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n")
        log_path = tmp_path / "server.log"
        deadline = time.monotonic() + 30
        while log_path.read_text().count("closed the connection before it was answered") < 3:
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.1)
        assert requests.get(f"{url}/dicom-web/studies", timeout=30).status_code in (200, 204)
    assert "Traceback" not in log_path.read_text()


@pytest.mark.parametrize("path", ["/dicom-web/nothing-here", "/dicom-web/studies/1.2.3"])
def test_head_answer_has_no_content(server: str, path: str) -> None:
    """A HEAD answer is the GET's headers without content (RFC 9110 §9.3.2), also where the
    server answers itself (an unknown path): the GET that follows on the connection starts
    right after the HEAD's headers, with the length the HEAD announced."""
    from urllib.parse import urlsplit

    address = urlsplit(server)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            f"HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\n"
            f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
        )
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, get = received.split(b"\r\n\r\n", 1)
    get_headers, body = get.split(b"\r\n\r\n", 1)
    assert get_headers.startswith(b"HTTP/1.1 404 ")

    def length(headers: bytes) -> int:
        lines = headers.decode("latin-1").split("\r\n")
        return int(
            next(v for k, _, v in (x.partition(": ") for x in lines) if k == "Content-Length")
        )

    assert length(head) == length(get_headers) == len(body) > 0


def _with_series_uid(uid: bytes) -> bytes:
    """ColorTestImageJ.dcm with SeriesInstanceUID's 8 value bytes replaced by `uid`."""
    ds = dcmread(io.BytesIO(testdata("ColorTestImageJ.dcm").read_bytes()))
    ds.SeriesInstanceUID = "1.2.999"
    out = io.BytesIO()
    ds.save_as(out)
    assert len(uid) == 8 and out.getvalue().count(b"1.2.999\0") == 1
    return out.getvalue().replace(b"1.2.999\0", uid)


def test_stow_warning_with_non_latin1_reason_is_answered(server: str) -> None:
    """Issue 11: a refusal reason with NUL or '€' closed the connection with no answer, while
    the valid parts of the same request were stored."""
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

    body = stow_body(testdata(CT).read_bytes(), _with_series_uid("1.2.€\0".encode()))
    response = requests.post(
        f"{server}/dicom-web/studies",
        data=body,
        headers={"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert response.status_code == 202
    warning = response.headers["Warning"]
    assert warning.isascii() and "part 2:" in warning and "\\x" in warning
    assert len(response.json()["00081198"]["Value"]) == 1


def test_stow_many_refused_parts_warning_is_readable(server: str) -> None:
    """Issue 12: ~700 refused parts made a Warning line over 64 KB that `requests` cannot read."""
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

    response = requests.post(
        f"{server}/dicom-web/studies",
        data=stow_body(*[b"not DICOM %d" % n for n in range(1000)]),
        headers={"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.headers["Warning"].endswith('more"')


def _ct_copies(count: int, implicit: tuple[int, ...] = ()) -> list[tuple[str, bytes]]:
    """`count` copies of the CT slice as (SOP Instance UID, bytes), all in one new series;
    the copies numbered in `implicit` in Implicit VR Little Endian (sent converted)."""
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    ds = dcmread(testdata(CT))
    stored = ds.file_meta.TransferSyntaxUID
    ds.SeriesInstanceUID = generate_uid()
    copies = []
    for number in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if number in implicit else stored
        out = io.BytesIO()
        ds.save_as(out)
        copies.append((ds.SOPInstanceUID, out.getvalue()))
    return copies


def test_store_killed_mid_request_keeps_acknowledged_instances(tmp_path: Path) -> None:
    """kill -9 while a STOW-RS request is being stored: after a restart, every instance
    acknowledged before is there, and every instance the index lists reads back whole (no
    record without its blob, no count without its instance, no temporary file left)."""
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

    copies = _ct_copies(50)
    acknowledged, in_flight = copies[:10], copies[10:]
    ds = dcmread(io.BytesIO(copies[0][1]))
    series_path = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    headers = {"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"}
    blobs = tmp_path / "blobs"

    def store(url: str, instances: list[tuple[str, bytes]]) -> requests.Response:
        body = stow_body(*(data for _, data in instances))
        return requests.post(f"{url}/dicom-web/studies", data=body, headers=headers, timeout=60)

    def store_until_killed(url: str) -> None:
        with suppress(requests.RequestException):
            store(url, in_flight)

    with local_server(tmp_path) as url:
        answer = store(url, acknowledged)
        assert answer.status_code == 200, answer.text
        written = len(list(blobs.rglob("*.dcm")))
        request = threading.Thread(target=store_until_killed, args=(url,), daemon=True)
        request.start()
        deadline = time.monotonic() + 60  # the kill lands in the middle of the request
        half = written + len(in_flight) // 2
        while len(list(blobs.rglob("*.dcm"))) < half and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(url.process.pid, signal.SIGKILL)
        url.process.wait()
        request.join(timeout=60)
    with local_server(tmp_path) as url:
        found = requests.get(f"{url}{series_path}/instances", timeout=30)
        assert found.status_code == 200, found.text
        listed = {item["00080018"]["Value"][0] for item in found.json()}
        assert {uid for uid, _ in acknowledged} <= listed
        by_uid = dict(copies)
        for uid in listed:
            stored = requests.get(
                f"{url}{series_path}/instances/{uid}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
                timeout=30,
            )
            assert stored.status_code == 200 and by_uid[uid] in stored.content
            metadata = requests.get(f"{url}{series_path}/instances/{uid}/metadata", timeout=30)
            assert metadata.status_code == 200, metadata.text
        series = requests.get(f"{url}{series_path.rsplit('/series/', 1)[0]}/series", timeout=30)
        assert series.json()[0]["00201209"]["Value"] == [len(listed)]
    assert not list((blobs / ".tmp").iterdir())


ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _store(url: str, instances: list[bytes]) -> str:
    """Store `instances` (one series); the series' path."""
    from tests.server.helpers import STOW_CONTENT_TYPE, stow_body

    response = requests.post(
        f"{url}/dicom-web/studies",
        data=stow_body(*instances),
        headers={"Content-Type": STOW_CONTENT_TYPE, "Accept": "application/dicom+json"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    first = dcmread(io.BytesIO(instances[0]))
    return f"/dicom-web/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"


def _parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    from chalicelib.dicom.multipart import parse_media_type, split_multipart

    boundary = parse_media_type(response.headers["Content-Type"]).params["boundary"]
    return [(part.headers, part.body) for part in split_multipart(response.content, boundary)]


def _sop_order(instances: list[bytes]) -> list[bytes]:
    """As WADO-RS answers a series: by SOP Instance UID."""
    return sorted(instances, key=lambda data: dcmread(io.BytesIO(data)).SOPInstanceUID)


def _peak_rss(process: subprocess.Popen) -> int:
    """VmHWM of `process` in bytes: the most memory it ever held."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    pytest.fail(f"no VmHWM in /proc/{process.pid}/status")


def test_concurrent_jpeg_2000_retrieves_keep_the_server_up(tmp_path: Path) -> None:
    """pylibjpeg-openjpeg's encoder is not thread-safe: two series retrieves transcoded to
    JPEG 2000 at once killed the server process with a segmentation fault."""
    from concurrent.futures import ThreadPoolExecutor

    instances = [data for _, data in _ct_copies(8)]
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
    with local_server(tmp_path) as url:
        series = url + _store(url, instances)
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.get(series, headers={"Accept": accept}, timeout=300),
                    range(3),
                )
            )
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        for answer in answers:
            assert answer.content.count(b"transfer-syntax=1.2.840.10008.1.2.4.90") == 8
        assert url.process.poll() is None


def test_series_retrieve_streams_in_flat_memory(tmp_path: Path) -> None:
    """A series goes out part by part from the stored files: retrieving 60 slices (31 MB)
    leaves the server's peak memory where it was (joined in memory it needs the answer
    twice: its parts and the join)."""
    instances = [data for _, data in _ct_copies(60)]
    with local_server(tmp_path) as url:
        path = _store(url, instances)
    with local_server(tmp_path) as url:  # a peak not made by the stores
        series = url + path
        first = series + "/instances/" + dcmread(io.BytesIO(instances[0])).SOPInstanceUID
        assert requests.get(first, headers={"Accept": ANY_SYNTAX}, timeout=60).status_code == 200
        before = _peak_rss(url.process)
        with requests.get(series, headers={"Accept": ANY_SYNTAX}, stream=True, timeout=60) as r:
            assert r.status_code == 200
            size = sum(len(chunk) for chunk in r.iter_content(1 << 20))
        grown = _peak_rss(url.process) - before
    assert size > sum(len(data) for data in instances) > 30_000_000
    assert grown < size / 4, f"peak memory grew by {grown} bytes for a {size}-byte answer"


def test_series_retrieve_byte_identical_with_content_length(tmp_path: Path) -> None:
    instances = [data for _, data in _ct_copies(5)]
    with local_server(tmp_path) as url:
        series = url + _store(url, instances)
        response = requests.get(series, headers={"Accept": ANY_SYNTAX}, timeout=60)
        assert response.status_code == 200
        assert "Transfer-Encoding" not in response.headers
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert [body for _, body in _parts(response)] == _sop_order(instances)
        head = requests.head(series, headers={"Accept": ANY_SYNTAX}, timeout=60)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == response.headers["Content-Length"]
        assert head.headers["Content-Type"].startswith(
            'multipart/related; type="application/dicom"'
        )

        study, series_uid = series.split("/studies/")[1].split("/series/")
        client = DICOMwebClient(url=f"{url}/dicom-web")
        retrieved = client.retrieve_series(
            study, series_uid, media_types=(("application/dicom", "*"),)
        )
        assert retrieved == [dcmread(io.BytesIO(data)) for data in _sop_order(instances)]


def test_series_with_a_part_to_convert_is_chunked(tmp_path: Path) -> None:
    """A part built when its turn comes (Implicit VR Little Endian goes out as Explicit): its
    size is unknown when the answer starts, so the answer is chunked (RFC 9112 §7.1). (The first
    such part is built before the answer starts, so two.)"""
    from pydicom.uid import ExplicitVRLittleEndian

    instances = [data for _, data in _ct_copies(4, implicit=(1, 2))]
    with local_server(tmp_path) as url:
        series = url + _store(url, instances)
        response = requests.get(series, headers={"Accept": ANY_SYNTAX}, timeout=60)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    parts = _parts(response)
    originals = [dcmread(io.BytesIO(data)) for data in _sop_order(instances)]
    assert len(parts) == len(originals) == 4
    for (headers, body), original in zip(parts, originals, strict=True):
        assert headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
        sent = dcmread(io.BytesIO(body))
        assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert sent.SOPInstanceUID == original.SOPInstanceUID
        assert sent.PixelData == original.PixelData


def test_stored_file_shorter_than_recorded_breaks_the_answer_off(tmp_path: Path) -> None:
    """Once the status line is out an error cannot change it: the server closes the connection
    before the announced length, so the client sees a truncated answer, not a complete one."""
    instances = [data for _, data in _ct_copies(3)]
    with local_server(tmp_path) as url:
        series = url + _store(url, instances)
        sop = dcmread(io.BytesIO(_sop_order(instances)[1])).SOPInstanceUID
        (blob,) = (tmp_path / "blobs").rglob(f"{sop}_*.dcm")
        blob.chmod(0o600)
        blob.write_bytes(blob.read_bytes()[:1000])
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(series, headers={"Accept": ANY_SYNTAX}, timeout=60)
        log = (tmp_path / "server.log").read_text()
        assert f"blob {blob.relative_to(tmp_path / 'blobs')} gave 1000 of" in log


@pytest.mark.parametrize(
    ("name", "numbers"),
    [("MultiframeWindowing.dcm", [4, 1, 2]), ("Issue164.dcm", [1, 87, 40])],
    ids=["native", "jpeg-baseline"],
)
def test_frames_stream_from_the_stored_file(tmp_path: Path, name: str, numbers: list[int]) -> None:
    """Frames sent as stored are ranges of the stored file: the answer's length is known
    (Content-Length) and every part is the frame's bytes."""
    from pydicom.encaps import generate_frames

    item = next(f for f in storable() if f.name == name)
    ds = dcmread(io.BytesIO(item.data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    else:
        size = len(ds.PixelData) // ds.NumberOfFrames
        frames = [ds.PixelData[n * size : (n + 1) * size] for n in range(ds.NumberOfFrames)]
    with local_server(tmp_path) as url:
        _store(url, [item.data])
        response = requests.get(
            f"{url}/dicom-web/studies/{item.study_uid}/series/{item.series_uid}/instances/"
            f"{item.sop_uid}/frames/{','.join(map(str, numbers))}",
            headers={
                "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
            },
            timeout=60,
        )
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert [body for _, body in _parts(response)] == [frames[n - 1] for n in numbers]


def test_client_leaving_mid_answer_is_logged_in_a_line(tmp_path: Path) -> None:
    """A viewer that cancels a series download is no server error: one log line, no
    traceback, and the next request is answered."""
    instances = [data for _, data in _ct_copies(20)]
    with local_server(tmp_path) as url:
        series = url + _store(url, instances)
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            path = series.split(url, 1)[1]
            client.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {ANY_SYNTAX}\r\n\r\n".encode()
            )
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
        # SO_LINGER 0: the close resets the connection while the server is still sending
        deadline = time.monotonic() + 30
        log_path = tmp_path / "server.log"
        while "closed the connection" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.1)
        assert requests.get(series, headers={"Accept": ANY_SYNTAX}, timeout=60).status_code == 200
    log = log_path.read_text()
    assert f"client closed the connection during GET {path}" in log
    assert "Traceback" not in log


def _ct_of_64_frames() -> bytes:
    """The CT slice as an instance of 64 frames (34 MB) in Explicit VR Little Endian."""
    ds = dcmread(testdata(CT))
    ds.NumberOfFrames = 64
    ds.PixelData = ds.PixelData * 64
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_wado_uri_dicom_streams_the_stored_file(tmp_path: Path) -> None:
    """WADO-URI contentType=application/dicom of an instance stored in Explicit VR Little
    Endian is the stored file, sent from it: its length up front, the same bytes, and the
    server's peak memory where it was for a 34 MB instance (read into memory it grows by
    the instance at least). HEAD gives the GET's length."""
    data = _ct_of_64_frames()
    ds = dcmread(io.BytesIO(data))
    with local_server(tmp_path) as url:
        _store(url, [data])
    query = (
        f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
        f"&objectUID={ds.SOPInstanceUID}&contentType=application/dicom"
    )
    with local_server(tmp_path) as url:  # a peak not made by the store
        wado = f"{url}/wado?{query}"
        assert requests.get(f"{url}/dicom-web/studies", timeout=60).status_code == 200
        before = _peak_rss(url.process)
        with requests.get(wado, stream=True, timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "application/dicom"
            body = b"".join(response.iter_content(1 << 20))
        grown = _peak_rss(url.process) - before
        head = requests.head(wado, timeout=60)
    assert body == data and len(data) > 33_000_000
    assert response.headers["Content-Length"] == head.headers["Content-Length"] == str(len(data))
    assert grown < len(data) / 4, f"peak memory grew by {grown} bytes for a {len(data)}-byte answer"


QUICK_TIMEOUT = 1.0
"""The connection timeout of `quick_server`, in seconds (60 in `make run`)."""


@contextmanager
def in_process_server(data_dir: Path, timeout: float, **changes: Any) -> Iterator[str]:
    """`make_server`'s server with a connection timeout of `timeout` s and the settings
    `changes`, serving from a thread of the test; yields its root URL."""
    from chalicelib.server.localserver import make_server

    server = make_server("127.0.0.1", 0, data_dir, timeout=timeout, **changes)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with in_process_server(tmp_path_factory.mktemp("quick"), QUICK_TIMEOUT) as url:
        yield url


def _connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20)


def _read_to_the_end(connection: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    answer = b""
    with suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_idle_keep_alive_connection_is_closed_after_the_timeout(
    quick_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """http.server had no timeout: a connection left open after its answer held a thread
    for ever. (The client waits 20 s; the server closes after 1.) The close is no error."""
    import http.client

    with _connect(quick_server) as connection:
        connection.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        answer.read()
        assert answer.status in (200, 204) and not answer.will_close
        assert _read_to_the_end(connection) == b""
    # Normal for a browser's connections: http.server wrote "Request timed out" for each.
    assert "timed out" not in capsys.readouterr().err


def test_stalled_headers_are_cut_off_and_not_run(quick_server: str) -> None:
    """A client whose headers stop midway (slowloris) is cut off: what it sends after the
    timeout reaches no request, so this DELETE is never carried out."""
    instance = _stow_tiny(quick_server)
    study = instance.split("/series/")[0]
    with _connect(quick_server) as connection:
        connection.sendall(f"DELETE {study} HTTP/1.1\r\nHost: h\r\n".encode())
        time.sleep(2 * QUICK_TIMEOUT)
        with suppress(OSError):
            connection.sendall(b"\r\n")
        assert _read_to_the_end(connection) == b""
    assert requests.get(quick_server + instance, timeout=30).status_code == 200


def test_stalled_body_is_answered_408_and_not_run(quick_server: str) -> None:
    """Complete headers, then a body that stops: 408 Request Timeout (RFC 9110 §15.5.9) and
    the connection closed; the request is not run."""
    instance = _stow_tiny(quick_server)
    study = instance.split("/series/")[0]
    with _connect(quick_server) as connection:
        connection.sendall(
            f"DELETE {study} HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab".encode()
        )
        answer = _read_to_the_end(connection)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"no byte of the request body came for 1 s" in answer
    assert requests.get(quick_server + instance, timeout=30).status_code == 200


def _receive_small(url: str) -> socket.socket:
    """A connection to `url` with a 32 KB receive buffer: the server's sends soon wait for it."""
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    connection.settimeout(20)
    connection.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return connection


def test_big_series_to_slow_and_stalled_readers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The socket's timeout makes it non-blocking underneath: `sendfile` to a client that reads
    slower than the server sends must wait for it, not break the answer off. A series of one
    34 MB instance (one `sendfile`) to a client with a small receive buffer, pausing (under
    the timeout) after each of its first MBs, arrives whole while a stalled client is open
    and others are answered. A client that stops reading is cut off after the timeout: it
    finds the answer truncated."""
    import http.client

    from chalicelib.dicom.multipart import parse_media_type, split_multipart

    caplog.set_level(logging.INFO, logger="chalicelib.server.localserver")
    instances = [_ct_of_64_frames()]
    with in_process_server(tmp_path, QUICK_TIMEOUT) as url:
        path = _store(url, instances)
        request = f"GET {path} HTTP/1.1\r\nHost: h\r\nAccept: {ANY_SYNTAX}\r\n\r\n".encode()
        with _connect(url) as stalled, _receive_small(url) as reader:
            stalled.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n")
            reader.sendall(request)
            answer = http.client.HTTPResponse(reader)
            answer.begin()
            assert answer.status == 200
            body = b""
            for _ in range(8):
                body += answer.read(1 << 20)
                time.sleep(QUICK_TIMEOUT / 4)
                assert requests.get(f"{url}/dicom-web/studies", timeout=20).status_code == 200
            body += answer.read()
        assert "took nothing" not in caplog.text
        with _receive_small(url) as idle:
            idle.sendall(request)
            deadline = time.monotonic() + 30
            while f"took nothing of the answer for 1 s during GET {path}" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text[-2000:]
                time.sleep(0.1)
            truncated = _read_to_the_end(idle)
    assert len(body) == int(answer.headers["Content-Length"]) > 30_000_000
    boundary = parse_media_type(answer.headers["Content-Type"]).params["boundary"]
    assert [part.body for part in split_multipart(body, boundary)] == _sop_order(instances)
    assert truncated.startswith(b"HTTP/1.1 200 ") and len(truncated) < len(body)


def _status_with_host(url: str, host: str, auth: str = "") -> int:
    """The status of GET /dicom-web/servers sent with `Host: host`."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.putrequest("GET", "/dicom-web/servers", skip_host=True)
        connection.putheader("Host", host)
        if auth:
            connection.putheader("Authorization", auth)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_without_authentication_no_foreign_domain_is_answered(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example whose name the attacker's DNS turns into
    127.0.0.1 is same-origin with this server for the browser. Without authentication, a Host
    that is a domain name but localhost's (or DicomWeb.Host's) is refused; with it, the
    credentials decide."""
    config = {"DicomWeb": {"Host": "pacs.example:8042"}}
    with local_server(tmp_path / "open", config=config) as url:
        port = url.rsplit(":", 1)[1]
        assert _status_with_host(url, f"evil.example:{port}") == 403
        assert _status_with_host(url, "evil.example") == 403
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "a.localhost", "h"):
            assert _status_with_host(url, host) == 200, host
        assert _status_with_host(url, "pacs.example:8042") == 200
    users = {"AuthenticationEnabled": True, "RegisteredUsers": {"u": "p"}}
    with local_server(tmp_path / "closed", config=users) as url:
        assert _status_with_host(url, "evil.example") == 401
        basic = "Basic " + base64.b64encode(b"u:p").decode()
        assert _status_with_host(url, "evil.example", basic) == 200


def test_periodic_sweep_removes_blobs_of_an_interrupted_delete(tmp_path: Path) -> None:
    """A delete interrupted after its index commit leaves its blobs pending. The server swept
    them only at start-up; now also every SweepInterval seconds while it runs (0.2 here,
    passed in), and the sweep's thread ends with the server."""
    from dataclasses import replace

    from chalicelib.config import load_settings
    from chalicelib.context import build_context

    def sweeps() -> int:
        return [thread.name for thread in threading.enumerate()].count("local-sweep")

    others = sweeps()  # of the module's servers
    with in_process_server(tmp_path, 10, sweep_interval=0.2):
        assert sweeps() == others + 1
        ctx = build_context(replace(load_settings(), data_dir=tmp_path))
        ctx.blobs.put("instances/left-by-a-delete.dcm", b"DICM")
        ctx.index.add_pending_deletes(["instances/left-by-a-delete.dcm"])
        deadline = time.monotonic() + 30
        # The blob goes first, then its pending entry.
        while ctx.index.pending_blob_deletes():
            assert time.monotonic() < deadline, "the pending delete was not swept"
            time.sleep(0.1)
        assert not ctx.blobs.exists("instances/left-by-a-delete.dcm")
    assert sweeps() == others


def test_periodic_sweep_leaves_the_stores_of_its_own_process(tmp_path: Path) -> None:
    """The sweep runs beside this process's stores, which may take longer than
    INTERRUPTED_WRITE_AGE (a large body on a slow disk): it removes the blobs of a store
    interrupted before the process started, never those of a store begun since, however old
    its intent (that one is removed at the next start)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from chalicelib.ingest import INTERRUPTED_WRITE_AGE, store_instance
    from chalicelib.server.localserver import PeriodicSweep
    from chalicelib.storage.records import utc_stamp
    from tests.conftest import make_context
    from tests.test_ingest import CT, Killed, KilledAtCommit, _interrupted_store

    ctx = make_context("local", tmp_path)
    data = testdata(CT).read_bytes()
    before = _interrupted_store(ctx, data)
    sweep = PeriodicSweep(ctx, 3600, started=datetime.now(UTC))
    later = datetime.now(UTC) + 10 * INTERRUPTED_WRITE_AGE
    try:
        with pytest.raises(Killed):  # its process runs on: as a store still writing
            store_instance(replace(ctx, index=KilledAtCommit(ctx.index)), data)
        intents = ctx.index.stale_blob_writes(utc_stamp(later))
        running = {key for write in intents for key in write.keys} - set(before.keys)
        sweep.sweep(later)
    finally:
        sweep.stop()
    assert before.keys and not any(ctx.blobs.exists(key) for key in before.keys)
    assert running and all(ctx.blobs.exists(key) for key in running)


def test_one_gateway_serves_every_request_of_a_server(tmp_path: Path) -> None:
    """The gateway (its routes sorted in a `DecodingRouteMatcher`) is built once per server,
    not once per request: a kept-alive connection's requests each built one."""
    from chalicelib.server.localserver import DecodingRouteMatcher, make_server

    server = make_server("127.0.0.1", 0, tmp_path)
    try:
        handler = server.server.RequestHandlerClass.func  # Chalice's partial(handler, app, config)
        matcher = handler.gateway.event_converter._route_matcher
        assert isinstance(matcher, DecodingRouteMatcher)
        assert matcher.match_route("/dicom-web/servers/my%20peer").captured == {"name": "my peer"}
    finally:
        server.server.server_close()


def test_local_server_on_a_port_another_server_holds_fails_fast(tmp_path: Path) -> None:
    """Under pytest-xdist another worker's server may bind the port chosen: any answer on it
    was taken for this server's. Only its own line after the bind is; it exits, port taken."""

    def not_found(handler: Any) -> None:
        answer(handler, 404, b'{"Message": "not the server under test"}', "application/json")

    with (
        loopback_server(not_found) as other,
        pytest.raises(pytest.fail.Exception, match="already in use"),
        local_server(tmp_path, port=int(other.rsplit(":", 1)[1])),
    ):
        pass
