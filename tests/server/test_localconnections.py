"""The local server's connections (chalicelib/server/localconnections.py), for real: a server
serving from a thread of the test, driven over loopback sockets by slow, stalled and
pipelining clients."""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from chalicelib.client.session import SELF_CALL_TOKEN
from chalicelib.server.localconnections import (
    HEAD_BUFFER,
    Connection,
    DeadlineWriter,
    HeadReader,
    SendBuffers,
    WorkerPool,
    head_is_complete,
)
from chalicelib.server.localserver import SEND_BUFFER, is_self_call
from tests.server.test_localserver import (
    ANY_SYNTAX,
    _connect,
    _ct_of_64_frames,
    _read_to_the_end,
    _receive_small,
    _store,
    _stow_tiny,
    in_process_server,
)

LOGGER = "chalicelib.server.localserver"


def _trickle(connection: socket.socket, data: bytes, pause: float) -> None:
    """Send `data` a byte every `pause` s until it is all sent or the server answers or
    closes the connection."""
    for byte in data:
        if select.select([connection], [], [], pause)[0]:
            return
        try:
            connection.sendall(bytes([byte]))
        except OSError:
            return


@pytest.mark.parametrize(
    ("received", "complete"),
    [
        (b"GET /a HTTP/1.1\r\nHost: h\r\n", False),
        (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET /a HTTP/1.1\nHost: h\n\n", True),
        (b"GET /a HTTP/1.1\r\n\r\n", True),
        (b"GET /a HTTP/1.1", False),
        (b"GET /a\r\n", True),  # HTTP/0.9: the handler answers 400 at once
        (b"\r\n", True),
        (b"GET /a HTTP/1.1\r\nX: " + b"a" * HEAD_BUFFER, True),
    ],
)
def test_head_is_complete(received: bytes, complete: bool) -> None:
    assert head_is_complete(received) is complete


def test_slow_request_heads_take_no_thread_and_others_are_answered(tmp_path: Path) -> None:
    """Slowloris: 300 connections each with half a request head took 300 threads (4,000 took
    4,000), for as long as they trickled. Now they wait in the head reader: requests of other
    clients are answered meanwhile, with no more threads than HttpThreadsCount (4 here), and
    each slow request is answered once its head is complete."""
    with in_process_server(tmp_path, 30, http_threads_count=4) as url:
        before = threading.active_count()
        slow = [_connect(url) for _ in range(300)]
        try:
            for connection in slow:
                connection.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\nX-Slow: ")
            # Accepted after every slow connection (the listen queue is in order).
            for _ in range(8):
                response = requests.get(f"{url}/dicom-web/studies", timeout=30)
                assert response.status_code in (200, 204)
            threads = threading.active_count() - before
            for connection in slow:
                connection.sendall(b"1\r\n\r\n")
            answers = [connection.recv(12) for connection in slow]
        finally:
            for connection in slow:
                connection.close()
    assert threads <= 4, f"{threads} threads more with 300 slow connections open"
    assert set(answers) <= {b"HTTP/1.1 200", b"HTTP/1.1 204"}, set(answers)


def test_request_head_trickling_in_is_cut_off_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A head byte every 0.2 s never trips the 10 s between bytes: http.server waited for it
    for ever. Its head must be whole within RequestHeadTimeout (1 s here) of its first byte,
    else the connection is closed, its request (a DELETE) not run, and the server's log
    says why."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    with in_process_server(tmp_path, 10, request_head_timeout=1) as url:
        instance = _stow_tiny(url)
        study = instance.split("/series/")[0]
        with _connect(url) as connection:
            head = f"DELETE {study} HTTP/1.1\r\nHost: h\r\nX-Pad: {'a' * 40}\r\n\r\n".encode()
            _trickle(connection, head[:-2], 0.2)
            with suppress(OSError):
                connection.sendall(head[-2:])
            assert _read_to_the_end(connection) == b""
        assert requests.get(url + instance, timeout=30).status_code == 200
    assert "not complete within 1 s (DicomWeb.RequestHeadTimeout)" in caplog.text


def test_request_body_slower_than_the_minimum_rate_is_answered_408(tmp_path: Path) -> None:
    """A body byte every 0.1 s never trips the 10 s between bytes. With RequestBodyMinRate 100
    (bytes/s after the first RequestHeadTimeout, 1 s) it is answered 408 and not run."""
    with in_process_server(tmp_path, 10, request_head_timeout=1, request_body_min_rate=100) as url:
        instance = _stow_tiny(url)
        study = instance.split("/series/")[0]
        with _connect(url) as connection:
            connection.sendall(
                f"DELETE {study} HTTP/1.1\r\nHost: h\r\nContent-Length: 300\r\n\r\n".encode()
            )
            _trickle(connection, b"a" * 300, 0.1)
            answer = _read_to_the_end(connection)
        assert requests.get(url + instance, timeout=30).status_code == 200
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"came slower than 100 bytes/s after its first 1 s" in answer


def test_request_head_cut_off_by_the_timeout_is_logged_not_on_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head longer than the head reader holds is read on by its worker; cut off there by the
    timeout, http.server wrote "Request timed out" on stderr. It goes to the server's log,
    as the other connection events do."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    with in_process_server(tmp_path, 1) as url, _connect(url) as connection:
        connection.sendall(
            b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 2 * HEAD_BUFFER
        )
        assert _read_to_the_end(connection) == b""
    assert "timed out" not in capsys.readouterr().err
    assert "Request timed out" in caplog.text
    assert "no byte of the request head came for 1 s" in caplog.text


def test_kept_alive_and_pipelined_requests_are_each_answered(tmp_path: Path) -> None:
    """A request, then after a pause (the connection back in the head reader) two sent
    together: each is answered, in order, on the one connection."""
    request = b"GET /dicom-web/%s HTTP/1.1\r\nHost: h\r\n%s\r\n"
    with in_process_server(tmp_path, 10) as url, _connect(url) as connection:
        connection.sendall(request % (b"studies", b""))
        time.sleep(0.5)
        connection.sendall(
            request % (b"nothing", b"") + request % (b"studies", b"Connection: close\r\n")
        )
        answers = _read_to_the_end(connection)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answers)
    assert statuses in ([b"200", b"404", b"200"], [b"204", b"404", b"204"]), answers[:500]


def test_kept_alive_connection_past_descriptor_1024_is_answered_again(tmp_path: Path) -> None:
    """With over 1,024 descriptors open (many clients), a kept-alive connection's next request
    is awaited with poll: select.select refused the descriptor (ValueError), and the
    connection was dropped after its first answer."""
    request = b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n%s\r\n"
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with in_process_server(tmp_path, 10) as url, _connect(url) as connection:
            connection.sendall(request % b"")
            first = b""
            while b"\r\n\r\n" not in first:
                first += connection.recv(65536)
            time.sleep(0.2)  # the worker has had its look for a next request
            connection.sendall(request % b"Connection: close\r\n")
            answers = first + _read_to_the_end(connection)
    finally:
        for descriptor in filler:
            os.close(descriptor)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answers)
    assert statuses in ([b"200", b"200"], [b"204", b"204"]), answers[:500]


def test_a_part_of_a_pipelined_head_waits_in_the_head_reader_not_in_a_worker(
    tmp_path: Path,
) -> None:
    """A request sent with the start of the next one: the worker answers the first and gives
    the connection back with that start, so the one worker serves another client while the
    rest of the head is awaited; then the second request is answered from both parts."""
    request = b"GET /dicom-web/studies HTTP/1.1\r\nHost: h\r\n%s\r\n"
    second = request % b"Connection: close\r\n"
    changes = {"http_threads_count": 1, "request_head_timeout": 60}
    with in_process_server(tmp_path, 60, **changes) as url, _connect(url) as connection:
        connection.sendall(request % b"" + second[:20])
        first = b""
        while b"\r\n\r\n" not in first:  # its head at least: the worker is done with it
            first += connection.recv(65536)
        assert requests.get(f"{url}/dicom-web/studies", timeout=10).status_code in (200, 204)
        connection.sendall(second[20:])
        answers = first + _read_to_the_end(connection)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answers)
    assert statuses in ([b"200", b"200"], [b"204", b"204"]), answers[:500]


def test_head_reader_survives_a_request_it_cannot_hand_over() -> None:
    """The head reader is the one thread every connection's next request waits on: a failure
    to hand one request over (a worker thread that cannot start) ends that connection, not
    the thread, and the next request is handed over."""
    handed: list[bytes] = []

    def ready(connection: socket.socket, address: object, received: bytes) -> None:
        connection.close()
        handed.append(received)
        if len(handed) == 1:
            raise RuntimeError("can't start new thread")

    reader = HeadReader(ready, timeout=10, head_timeout=10)
    clients = []
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            for path in (b"/first", b"/second"):
                clients.append(socket.create_connection(listener.getsockname()))
                reader.add(*listener.accept())
                clients[-1].sendall(b"GET %s HTTP/1.1\r\n\r\n" % path)
                deadline = time.monotonic() + 10
                while not any(path in request for request in handed):
                    assert time.monotonic() < deadline, handed
                    time.sleep(0.05)
    finally:
        reader.stop()
        for client in clients:
            client.close()
    assert handed == [b"GET /first HTTP/1.1\r\n\r\n", b"GET /second HTTP/1.1\r\n\r\n"]


class _FirstThreadFails(WorkerPool):
    """A pool whose first worker thread cannot start, as when the system has no thread left."""

    failed = False

    def _start_worker(self) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("can't start new thread")
        super()._start_worker()


def test_worker_pool_keeps_its_size_after_a_thread_that_cannot_start() -> None:
    """The job whose thread could not start is given back (its connection is closed by the
    head reader), not left to run later; and the pool may still start its one thread, so
    the next job runs instead of waiting for ever."""
    done: list[str] = []
    finished = threading.Event()

    def work(name: str) -> None:
        done.append(name)
        finished.set()

    pool = _FirstThreadFails(1, work)
    try:
        with pytest.raises(RuntimeError):
            pool.submit("refused")
        pool.submit("next")
        assert finished.wait(10), "the next job never ran: the pool thinks its thread runs"
    finally:
        left = pool.close()
    assert (done, left) == (["next"], [])


def test_head_reader_closes_a_connection_added_while_it_stops() -> None:
    """A connection added as the reader stops (after `add` found it running, before it
    queued the connection) is closed, not left open after the reader's thread ended."""
    reader = HeadReader(lambda *_: None, timeout=10, head_timeout=10)

    class StopsFirst(deque):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            reader.stop()
            super().append(item)

    reader._arrivals = StopsFirst()
    server, client = socket.socketpair()
    with client:
        reader.add(server, ("127.0.0.1", 0))
        assert server.fileno() == -1, "the connection was left open"


def test_head_reader_hands_over_a_head_given_back_whole() -> None:
    """A connection given back with a whole head (a worker's buffer held its start, the rest
    was read before) is handed over at once, not when a byte more arrives."""
    handed = queue.Queue()  # type: ignore[var-annotated]
    reader = HeadReader(lambda *request: handed.put(request[2]), timeout=10, head_timeout=10)
    server, client = socket.socketpair()
    try:
        reader.add(server, ("127.0.0.1", 0), b"GET /b HTTP/1.1\r\n\r\n")
        assert handed.get(timeout=10) == b"GET /b HTTP/1.1\r\n\r\n"
    finally:
        reader.stop()
        server.close()
        client.close()


def test_worker_pool_goes_on_after_a_job_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A job whose work raised ended its thread, still counted as running: with a pool of 1
    every later job waited for ever. The failure is logged and the thread takes the next."""
    done: list[str] = []
    finished = threading.Event()

    def work(name: str) -> None:
        if name == "fails":
            raise RuntimeError("a defect in the handler")
        done.append(name)
        finished.set()

    pool = WorkerPool(1, work)
    try:
        pool.submit("fails")
        pool.submit("next")
        assert finished.wait(10), "the next job never ran: the pool thinks its thread runs"
    finally:
        left = pool.close()
    assert (done, left) == (["next"], [])
    assert "a defect in the handler" in caplog.text


def _status_from_another_process(url: str, timeout: float) -> str:
    """The status of GET `url` from another process, without this process's client session
    (the server runs its requests even with every worker busy: `is_self_call`)."""
    client = (
        "import requests, sys; "
        "print(requests.get(sys.argv[1], timeout=float(sys.argv[2])).status_code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", client, url, str(timeout)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip() or done.stderr[-300:]


def _read_slowly(connection: socket.socket, received: list[int], ends: list[str]) -> None:
    """Read 64 KB every 0.1 s until the server closes the connection; `ends` gets how:
    "reset", "closed" or the error."""
    try:
        while chunk := connection.recv(65536):
            received.append(len(chunk))
            time.sleep(0.1)
        ends.append("closed")
    except ConnectionResetError:
        ends.append("reset")
    except OSError as error:
        ends.append(repr(error))


def test_slow_reader_is_cut_off_below_the_minimum_rate_and_frees_its_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client reading a 34 MB series at about 640 KB/s held the one worker (HttpThreadsCount
    1) for the 50 s it took, and every other request waited. With ResponseMinRate 2,000,000
    (bytes/s, after RequestHeadTimeout, 1 s, of waiting for it) it is cut off, its answer
    truncated, and the other client is answered. The connection is reset: closed, it stayed
    in the kernel with the unsent answer (FIN-WAIT-1, MBs), which the client went on
    reading."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    changes = {"http_threads_count": 1, "request_head_timeout": 1, "response_min_rate": 2_000_000}
    with in_process_server(tmp_path, 30, **changes) as url:
        path = _store(url, [_ct_of_64_frames()])
        received: list[int] = []
        ends: list[str] = []
        with _receive_small(url) as slow:
            slow.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nAccept: {ANY_SYNTAX}\r\n\r\n".encode())
            reader = threading.Thread(target=_read_slowly, args=(slow, received, ends))
            reader.start()
            while not received:  # the worker is sending the series
                time.sleep(0.05)
            other = _status_from_another_process(f"{url}/dicom-web/studies", 20)
            reader.join(60)
    assert other == "200"
    assert 0 < sum(received) < 30_000_000
    assert ends == ["reset"]
    assert "slower than 2000000 bytes/s after 1 s of waiting" in caplog.text
    assert "(DicomWeb.ResponseMinRate)" in caplog.text


def test_slow_reader_is_cut_off_after_a_short_grace_when_others_wait_for_its_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The grace before the minimum rate applies is RequestHeadTimeout (30 s here): a slow
    reader held the one worker that long while another client waited (its 15 s ran out).
    While requests wait for a worker the grace is CROWDED_GRACE (1 s)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    changes = {"http_threads_count": 1, "request_head_timeout": 30, "response_min_rate": 2_000_000}
    with in_process_server(tmp_path, 60, **changes) as url:
        path = _store(url, [_ct_of_64_frames()])
        received: list[int] = []
        with _receive_small(url) as slow:
            slow.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nAccept: {ANY_SYNTAX}\r\n\r\n".encode())
            reader = threading.Thread(target=_read_slowly, args=(slow, received, []))
            reader.start()
            while not received:  # the worker is sending the series
                time.sleep(0.05)
            other = _status_from_another_process(f"{url}/dicom-web/studies", 15)
            reader.join(60)
    assert other == "200"
    assert 0 < sum(received) < 30_000_000
    assert "after 1 s of waiting for it, other requests waiting for a worker" in caplog.text


def test_stalled_reader_of_answers_built_whole_is_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight pipelined rendered images (400 KB each, built whole, not streamed) to a client
    that reads none: the writer is cut after the grace, and the connection reset. http.server
    catches that TimeoutError itself ("Request timed out") and closed the connection plainly:
    the client went on reading the 2.8 MB queued in the kernel, then EOF."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    changes = {"request_head_timeout": 1, "response_min_rate": 2_000_000}
    with in_process_server(tmp_path, 30, **changes) as url:
        path = _store(url, [_ct_of_64_frames()])
        rendered = f"{path}/rendered?viewport=4096,4096"
        request = f"GET {rendered} HTTP/1.1\r\nHost: h\r\nAccept: image/png\r\n\r\n"
        with _receive_small(url) as stalled:
            stalled.sendall(request.encode() * 8)
            for _ in range(600):  # the writer gives up after its 1 s grace
                if "(DicomWeb.ResponseMinRate)" in caplog.text:
                    break
                time.sleep(0.05)
            ends: list[str] = []
            _read_slowly(stalled, [], ends)
    assert "Request timed out: TimeoutError('the client took the answer slower" in caplog.text
    assert ends == ["reset"]


def _read_at(connection: socket.socket, rate: int, received: list[int]) -> None:
    """Read at about `rate` bytes/s until the other end closes the connection; `received`
    holds the bytes read."""
    started = time.monotonic()
    with suppress(OSError):
        while chunk := connection.recv(16384):
            received[0] += len(chunk)
            ahead = received[0] / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def _send_to_a_reader(source: int, length: int, reader_rate: int, crowded: bool) -> str:
    """Send `length` bytes of the file `source` through a DeadlineWriter (ResponseMinRate
    200,000 bytes/s, grace 1 s: 30 s cut to CROWDED_GRACE while `crowded`), with the server's
    SEND_BUFFER, to a client reading at `reader_rate`: "done" or why it was cut, and the
    bytes the client received."""
    received = [0]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect(listener.getsockname())
        reader = threading.Thread(target=_read_at, args=(client, reader_rate, received))
        reader.start()
        ours, _ = listener.accept()
        with ours, client:
            ours.settimeout(60)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            grace = 30.0 if crowded else 1.0
            writer = DeadlineWriter(ours, 60, grace, 200_000, lambda: crowded)
            try:
                sent = writer.sendfile(source, 0, length)
                outcome = f"done {sent}"
            except TimeoutError as late:
                outcome = f"cut: {late}"
            ours.shutdown(socket.SHUT_WR)
            reader.join(60)
    return f"{outcome}, received {received[0]}"


def test_client_reading_at_five_times_the_minimum_rate_gets_the_whole_answer(
    tmp_path: Path,
) -> None:
    """Linux reports room in a send buffer (POLLOUT) only once a third of it has drained:
    with the 4 MB SEND_BUFFER (8 MB in the kernel) the first wait lasted until ~2.7 MB had
    gone, and counted no byte taken, so a client reading at 5x ResponseMinRate was cut after
    the 1 s grace, crowded or not (OHIF's series and frames came truncated). What a client
    took is what left the kernel's send queue (SIOCOUTQ), looked at on every tick of a wait."""
    length = 12_000_000
    blob = tmp_path / "answer"
    blob.write_bytes(os.urandom(length))
    outcomes: dict[bool, str] = {}
    descriptor = os.open(blob, os.O_RDONLY)
    try:
        senders = [
            threading.Thread(
                target=lambda crowded=crowded: outcomes.__setitem__(
                    crowded, _send_to_a_reader(descriptor, length, 1_000_000, crowded)
                )
            )
            for crowded in (False, True)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
    finally:
        os.close(descriptor)
    whole = f"done {length}, received {length}"
    assert outcomes == {False: whole, True: whole}


def test_send_buffers_are_bounded_and_given_back_on_close() -> None:
    """Every connection had a 4 MB send buffer of its own, however many slow readers: now at
    most `count` of them hold one, and a connection gives its own back when it closes."""
    buffers = SendBuffers(1 << 20, 1)
    pairs = [socket.socketpair() for _ in range(2)]
    first, second = (Connection.adopt(ours) for ours, _ in pairs)
    default = second.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    try:
        buffers.enlarge(first)
        buffers.enlarge(second)
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
        assert second.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == default
        first.close()
        buffers.enlarge(second)
        assert second.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
    finally:
        second.close()
        for _, theirs in pairs:
            theirs.close()


@pytest.mark.parametrize(
    ("head", "self_call"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-DicomWeb-Caller: %s\r\n\r\n", True),
        (b"GET / HTTP/1.1\nx-dicomweb-caller:%s\n\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-DicomWeb-Caller: 0%s\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Other: X-DicomWeb-Caller: %s\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nX-DicomWeb-Callers: %s\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nHost: h\r\n\r\nX-DicomWeb-Caller: %s\r\n", False),
        (b"GET /X-DicomWeb-Caller:%s HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ],
)
def test_a_self_call_is_told_by_its_header_token(head: bytes, self_call: bool) -> None:
    """A request of the server to itself carries this process's token in its
    X-DicomWeb-Caller header (every client session sends it); the token elsewhere (another
    header's value, the body, the path) or another token is not one."""
    assert is_self_call(head % SELF_CALL_TOKEN.encode(), "127.0.0.1", "127.0.0.1") is self_call


@pytest.mark.parametrize(
    ("peer", "local", "self_call"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "10.1.2.3", True),
        ("::1", "::1", True),
        ("10.1.2.3", "10.1.2.3", True),
        ("10.1.2.4", "10.1.2.3", False),
        ("192.0.2.7", "127.0.0.1", False),
    ],
)
def test_a_self_call_comes_from_this_host(peer: str, local: str, self_call: bool) -> None:
    """The token goes to every remote server: from a peer that is neither loopback nor the
    server's own address it does not count, or a remote could take every self-call slot."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-DicomWeb-Caller: %s\r\n\r\n" % SELF_CALL_TOKEN.encode()
    assert is_self_call(head, peer, local) is self_call


def test_a_request_of_the_server_to_itself_runs_with_every_worker_busy(tmp_path: Path) -> None:
    """`/servers/self/get` on a server whose remote "self" is itself: its worker waits for
    the answer of a request that needs a worker. With HttpThreadsCount 1 that request waited
    for the busy worker until the call's HttpTimeout (5 s here), and the answer was a 504.
    A request this process opened runs even with every worker busy."""
    changes = {"http_threads_count": 1, "servers_in_database": True, "http_timeout": 5}
    with in_process_server(tmp_path, 30, **changes) as url:
        _stow_tiny(url)
        put = requests.put(f"{url}/dicom-web/servers/self", json={"Url": f"{url}/dicom-web"})
        assert put.status_code == 200, put.text
        answer = requests.post(
            f"{url}/dicom-web/servers/self/get", json={"Uri": "/studies"}, timeout=30
        )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == 1


def test_urgent_requests_run_beside_a_full_pool_at_most_its_size() -> None:
    """A request that a busy worker waits for runs in a thread of its own, but at most
    `size` of them at once, the others waiting their turn: they were uncounted and
    unbounded."""
    started: list[str] = []
    release = threading.Event()
    all_ran = threading.Event()

    def work(name: str) -> None:
        started.append(name)
        if len(started) == 4:
            all_ran.set()
        release.wait(30)

    pool = WorkerPool(1, work, urgent=lambda name: name.startswith("urgent"))
    try:
        pool.submit("busy")
        while not started:
            time.sleep(0.01)
        for name in ("urgent 1", "urgent 2", "urgent 3"):
            pool.submit(name)
        for _ in range(1000):  # one runs beside the busy worker
            if len(started) >= 2:
                break
            time.sleep(0.01)
        time.sleep(0.2)  # the two others would have started by now, if they could
        assert len(started) == 2, started
        assert pool.crowded()
        release.set()
        assert all_ran.wait(30), started
    finally:
        release.set()
        pool.close()
    assert sorted(started) == ["busy", "urgent 1", "urgent 2", "urgent 3"]


def test_an_urgent_request_queued_past_the_cap_runs_once_a_slot_is_free() -> None:
    """Pool of 1: its worker waits for its own self call ("self B"), queued because another
    self call ("self A", a job runner's) held the one slot beside. Once A ended, its slot
    picked nothing up: B waited for the busy worker, which waited for B (until HttpTimeout).
    The thread that ran A runs B."""
    started: list[str] = []
    release_a = threading.Event()
    b_ran = threading.Event()

    def work(name: str) -> None:
        started.append(name)
        if name == "busy":
            b_ran.wait(30)
        elif name == "self A":
            release_a.wait(30)
        else:
            b_ran.set()

    pool = WorkerPool(1, work, urgent=lambda name: name.startswith("self"))
    try:
        pool.submit("busy")
        while "busy" not in started:
            time.sleep(0.01)
        pool.submit("self A")
        while "self A" not in started:
            time.sleep(0.01)
        pool.submit("self B")
        assert pool.crowded()  # past the cap: B waits
        release_a.set()
        assert b_ran.wait(10), "self B waited for the busy worker that waits for it"
    finally:
        release_a.set()
        b_ran.set()
        pool.close()
    assert started == ["busy", "self A", "self B"]


def test_a_slot_beside_the_pool_takes_no_ordinary_request() -> None:
    """Pool of 1: R1 makes self calls 1 and 2; R2 arrives while self call 1 runs and makes
    self call 3. When the thread beside the pool took the oldest waiting request whatever it
    was (R2), R2's self call 3 and R1's self call 2 both found the cap full and waited for
    threads that waited for them: both until the timeout. Taking only urgent ones, both
    are answered."""
    answered = {name: threading.Event() for name in ("self 1", "self 2", "self 3")}
    release_1 = threading.Event()
    started: list[str] = []
    got: dict[str, bool] = {}

    def work(name: str) -> None:
        started.append(name)
        if name == "R1":
            pool.submit("self 1")
            answered["self 1"].wait(10)
            pool.submit("self 2")
            got["R1"] = answered["self 2"].wait(5)
        elif name == "R2":
            pool.submit("self 3")
            got["R2"] = answered["self 3"].wait(5)
        else:
            if name == "self 1":
                release_1.wait(10)
            answered[name].set()

    pool = WorkerPool(1, work, urgent=lambda name: name.startswith("self"))
    try:
        pool.submit("R1")
        while "self 1" not in started:
            time.sleep(0.01)
        pool.submit("R2")
        release_1.set()
        deadline = time.monotonic() + 15
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release_1.set()
        for event in answered.values():
            event.set()
        pool.close()
    assert got == {"R1": True, "R2": True}, started


def test_worker_pool_gives_a_connections_next_request_to_the_same_thread() -> None:
    """`work` returns the hand-back of its connection, which the pool runs once the thread
    counts as idle: the next request, arriving at once, goes to that thread. Handed back
    while the thread was still busy, it started a thread more (a glibc arena more, which
    keeps what it frees: the benchmark's peak RSS rose from 155 to 171-181 MiB)."""
    threads: list[int] = []
    finished = threading.Event()

    def work(name: str) -> Callable[[], None] | None:
        threads.append(threading.get_ident())
        if name == "first":
            return lambda: pool.submit("next")
        finished.set()
        return None

    pool = WorkerPool(4, work)
    try:
        pool.submit("first")
        assert finished.wait(10), "the next request never ran"
    finally:
        pool.close()
    assert len(threads) == 2 and threads[0] == threads[1], threads
