"""The local server's connections: a thread only for a request whose head has arrived.

http.server gives every connection a thread from its accept to its close and waits for its
bytes without end: 4,000 slowloris connections (a header byte every few seconds, under any
timeout between bytes) held 4,000 threads, and would for ever. Here (`localserver.py` uses it)
- one thread, `HeadReader`, waits with a selector for the next request head of every
  connection, new or kept alive: a connection that is idle or sends its head slowly costs a
  socket and a few KB, no thread. One that sends nothing for `timeout` seconds, or whose head
  is not complete `head_timeout` seconds after its first byte, is closed, its request not run;
- a complete head (or one too large to hold, or a request line the handler refuses at once)
  goes to `WorkerPool`: at most `workers` requests are served at once, the others wait their
  turn in arrival order. After its answer a kept-alive connection goes back to the head
  reader, unless the head of its next request has already arrived whole (pipelined): a part
  of one goes back with it;
- `DeadlineReader` is the handler's socket reader: each read within the connection timeout,
  and a whole request head, or a body at a minimum average rate, before a deadline;
  `DeadlineWriter` its writer: each wait for the client within the connection timeout, and
  the answer taken at a minimum average rate, so that slow readers cannot hold every worker;
- a request of the server to itself (a worker calling its own server, told by its
  `X-DicomWeb-Caller` header: `localserver.is_self_call`) runs even with every worker busy,
  since a worker waits for it;
- `SendBuffers` bounds how many connections have a large send buffer at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import select
import selectors
import socket
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("chalicelib.server.localserver")

HEAD_BUFFER = 16384
"""Bytes of a request head the head reader holds; a longer head goes to a worker, which reads
the rest (under the same deadline) and answers it, or refuses it past http.server's limits."""

DEADLINE_CHECK = 0.25
"""Seconds between the head reader's looks for connections past their time."""

CROWDED_GRACE = 1.0
"""Seconds of waiting for a slow reader after which its answer must go at the minimum rate
when other requests wait for a worker (`DeadlineWriter`); also how often it looks."""


class DeadlineReader(io.RawIOBase):
    """A connection's reads for `io.BufferedReader`: first the bytes `received` before (by the
    head reader), then each read from the socket within `timeout` seconds, and all of them
    before the deadline that `limit` sets. While `probing`, a read takes only what has
    already arrived (None when nothing has)."""

    def __init__(self, connection: socket.socket, timeout: float, received: bytes = b"") -> None:
        self.connection = connection
        self.timeout = timeout
        self._received = memoryview(received)
        self.probing = False
        self._part = "request"
        self._deadline = float("inf")
        self._seconds = 0.0
        self._rate = 0

    def readable(self) -> bool:
        return True

    def take_received(self) -> bytes:
        """The bytes received before and not read yet, which reads then no longer give."""
        left, self._received = bytes(self._received), memoryview(b"")
        return left

    def limit(self, part: str, seconds: float, rate: int = 0) -> None:
        """Reads of `part` ("request head", "request body") end `seconds` from now, one second
        later per `rate` bytes read (0: no later)."""
        self._part, self._seconds, self._rate = part, seconds, rate
        self._deadline = time.monotonic() + seconds

    def readinto(self, buffer: Any) -> int | None:
        if self._received:
            count = min(len(buffer), len(self._received))
            buffer[:count] = self._received[:count]
            self._received = self._received[count:]
            return count
        wait = 0.0 if self.probing else min(self.timeout, self._deadline - time.monotonic())
        if wait <= 0 and not self.probing:
            raise TimeoutError(self._late())
        if wait != self.timeout:
            self.connection.settimeout(wait)
        try:
            count = self.connection.recv_into(buffer)
        except BlockingIOError:  # probing: nothing has arrived
            return None
        except TimeoutError:
            if wait < self.timeout:
                raise TimeoutError(self._late()) from None
            raise TimeoutError(f"no byte of the {self._part} came for {self.timeout:g} s") from None
        finally:
            if wait != self.timeout:
                self.connection.settimeout(self.timeout)
        if self._rate:
            self._deadline += count / self._rate
        return count

    def _late(self) -> str:
        if self._rate:
            return (
                f"the {self._part} came slower than {self._rate} bytes/s after its first "
                f"{self._seconds:g} s (DicomWeb.RequestBodyMinRate)"
            )
        return (
            f"the {self._part} was not complete within {self._seconds:g} s "
            "(DicomWeb.RequestHeadTimeout)"
        )


class DeadlineWriter(io.BufferedIOBase):
    """A connection's writes (the handler's `wfile`, and `sendfile`): each waits for room in
    the send buffer at most `timeout` seconds without the client taking a byte; and the time
    an answer waits for the client in all may pass `grace` seconds by one second per `rate`
    bytes it took since the first wait (0: no rate), i.e. a client must take its answer at
    `rate` bytes/s on average after the grace. Only waits count (time spent building the
    answer is not the client's). Kestrel's MinResponseDataRate is the same guard. Then the
    connection is set to reset when it closes (`reset_on_close`), whoever catches the
    TimeoutError raised (http.server's handle_one_request catches it itself and closes), and
    its worker is freed for the other clients.

    What the client took is what left the kernel's send queue (SIOCOUTQ: bytes not sent or
    not acknowledged) since the first wait, looked at on every tick of a wait: Linux reports
    room (POLLOUT) only once a third of the buffer has drained, ~2.7 MB of a SEND_BUFFER, and
    counting only the bytes sent after each wait cut off clients reading at 5x the rate.
    Where the ioctl fails (not Linux), the bytes sent after the first wait count."""

    def __init__(
        self,
        connection: socket.socket,
        timeout: float,
        grace: float,
        rate: int,
        crowded: Callable[[], bool] = lambda: False,
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.grace = grace
        self.rate = rate
        self._crowded = crowded
        self._writable = select.poll()  # not select.select: descriptors pass 1024
        self._writable.register(connection, select.POLLOUT)
        self.begin()

    def writable(self) -> bool:
        return True

    def begin(self) -> None:
        """A new answer: its waits and bytes counted from zero."""
        self._waited = 0.0
        self._sent = 0
        """Bytes sent since the first wait."""
        self._full = False
        self._queued_then: int | None = None
        """The send queue at the first wait (None: not known)."""

    def write(self, data: Any) -> int:
        self.send(data)
        return len(data)

    def send(self, data: bytes, flags: int = 0) -> None:
        """All of `data`, with send(2) `flags` (e.g. MSG_MORE)."""
        view = memoryview(data).cast("B")
        while view:
            self._wait()
            count = self.connection.send(view, flags)
            view = view[count:]
            self._sent += count * self._full

    def sendfile(self, descriptor: int, offset: int, length: int) -> int:
        """`os.sendfile` until `length` bytes are sent or the file ends: the bytes sent
        (`socket.sendfile` adds a poll selector, an fstat and a seek to every call: about
        10 µs for each of a series' hundred parts)."""
        sent = 0
        connection = self.connection.fileno()
        while sent < length:
            try:
                count = os.sendfile(connection, descriptor, offset + sent, length - sent)
            except BlockingIOError:  # the socket has a timeout: non-blocking underneath
                self._wait()
                continue
            if not count:
                break
            sent += count
            self._sent += count * self._full
        return sent

    def _queued(self) -> int | None:
        """The bytes in the connection's send queue, not sent or not acknowledged (None where
        the system does not tell)."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.connection, termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return None

    def _taken(self) -> int:
        """The bytes the client took since the first wait."""
        if self._queued_then is None:
            return self._sent
        queued = self._queued()
        if queued is None:
            return self._sent
        return self._sent - (queued - self._queued_then)

    def _wait(self) -> None:
        """Until the socket takes bytes again (at once when it has room), looking at what the
        client took every CROWDED_GRACE seconds at most. While `crowded` (other requests wait
        for a worker) the grace is CROWDED_GRACE at most: 4 readers at 1 KB/s held 4 workers
        for the whole grace (30 s) while another client waited."""
        if self._writable.poll(0):
            return
        if not self._full:
            self._full = True
            self._queued_then = self._queued()
        quiet_since = time.monotonic()
        taken = self._taken()
        while True:
            crowded = self._crowded()
            grace = min(self.grace, CROWDED_GRACE) if crowded else self.grace
            allowed = grace + taken / self.rate - self._waited if self.rate else 1e9
            if allowed <= 0:
                reset_on_close(self.connection)
                raise TimeoutError(self._late(grace, crowded))
            left = self.timeout - (time.monotonic() - quiet_since)
            if left <= 0:
                reset_on_close(self.connection)
                raise TimeoutError(f"the client took nothing of the answer for {self.timeout:g} s")
            started = time.monotonic()
            ready = self._writable.poll(min(left, allowed, CROWDED_GRACE) * 1000)
            self._waited += time.monotonic() - started
            if ready:
                return
            now_taken = self._taken()
            if now_taken > taken:
                quiet_since = time.monotonic()
            taken = now_taken

    def _late(self, grace: float, crowded: bool) -> str:
        others = ", other requests waiting for a worker" if crowded else ""
        return (
            f"the client took the answer slower than {self.rate} bytes/s after "
            f"{grace:g} s of waiting for it{others} (DicomWeb.ResponseMinRate)"
        )


def header_value(head: bytes, name: bytes) -> bytes | None:
    """The value of the header `name` (lower case) in the request `head` (request line and
    header lines, RFC 9112 §5), None when it has none: names compared whole, nothing read
    past the blank line that ends the head."""
    for line in head.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if not line:
            break
        field_name, colon, value = line.partition(b":")
        if colon and field_name.lower() == name:
            return value.strip(b" \t")
    return None


def reset_on_close(connection: socket.socket) -> None:
    """Make closing `connection` reset it (SO_LINGER on, 0 s), for an answer cut off
    (truncated anyway): a plain close left the socket to the kernel, in FIN-WAIT-1 with the
    unsent answer (up to 8 MB of a SEND_BUFFER) while its send buffer was given back, so
    slow readers reconnecting piled up kernel memory."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def head_is_complete(received: bytes | bytearray) -> bool:
    """Whether a worker can take the request: its head ends (a blank line, RFC 9112 §2.1), or
    its request line is not the three words the handler reads on from (an HTTP/0.9 line, a
    blank or malformed one: answered at once), or it is longer than HEAD_BUFFER."""
    if len(received) >= HEAD_BUFFER:
        return True
    line_end = received.find(b"\n")
    if line_end < 0:
        return False
    if len(received[:line_end].split()) != 3:
        return True
    return received.find(b"\n\r\n", line_end) >= 0 or received.find(b"\n\n", line_end) >= 0


@dataclass(eq=False)
class _Waiting:
    """A connection waiting for its request head."""

    connection: socket.socket
    address: Any
    last_byte: float
    """When its last byte came (or it began to wait)."""
    head_deadline: float = float("inf")
    """When its head must be complete: set by its first byte."""
    received: bytearray = field(default_factory=bytearray)


class HeadReader:
    """One thread that reads every waiting connection's request head, then gives the
    connection and the bytes read to `ready` (see the module docstring)."""

    def __init__(
        self,
        ready: Callable[[socket.socket, Any, bytes], None],
        timeout: float,
        head_timeout: float,
    ) -> None:
        self._ready = ready
        self.timeout = timeout
        self.head_timeout = head_timeout
        self._arrivals: deque[tuple[socket.socket, Any, bytes]] = deque()
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="head-reader", daemon=True)
        self._thread.start()

    def add(self, connection: socket.socket, address: Any, received: bytes = b"") -> None:
        """Wait for the next request on `connection` (from any thread), of which `received`
        already came (a part of a pipelined head)."""
        if self._stopping:
            connection.close()
            return
        self._arrivals.append((connection, address, received))
        if self._stopping:  # stopped meanwhile: the thread may have closed the others already
            self._close_arrivals()
            return
        with contextlib.suppress(OSError):  # a full pipe already wakes it
            self._wake_out.send(b"\0")

    def stop(self) -> None:
        """Close every waiting connection and end the thread."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")
        self._thread.join()

    def _run(self) -> None:
        next_check = 0.0
        while not self._stopping:
            for key, _ in self._selector.select(DEADLINE_CHECK):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_in.recv(4096)
                else:
                    self._safely(self._receive, key.data)
            now = time.monotonic()
            while self._arrivals:
                connection, address, received = self._arrivals.popleft()
                waiting = _Waiting(connection, address, now, received=bytearray(received))
                if received:
                    waiting.head_deadline = now + self.head_timeout
                try:
                    connection.setblocking(False)
                    self._selector.register(connection, selectors.EVENT_READ, waiting)
                except (OSError, ValueError):  # closed meanwhile
                    connection.close()
                    continue
                if head_is_complete(waiting.received):
                    self._safely(self._dispatch, waiting)
            if now >= next_check:
                self._close_late(now)
                next_check = now + DEADLINE_CHECK
        self._close_arrivals()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self._wake_out.close()

    def _close_arrivals(self) -> None:
        """Close the connections added and not yet waited on (from either thread)."""
        while True:
            try:
                connection, *_ = self._arrivals.popleft()
            except IndexError:
                return
            connection.close()

    def _safely(self, action: Callable[[_Waiting], None], waiting: _Waiting) -> None:
        """`action` on `waiting`, a failure ending that connection, never this thread (which
        every connection's next request waits on)."""
        try:
            action(waiting)
        except Exception:
            log.exception("connection from %s dropped", waiting.address[0])
            self._drop(waiting)

    def _receive(self, waiting: _Waiting) -> None:
        try:
            data = waiting.connection.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # reset by the client
            log.info("client %s closed the connection before it was answered", waiting.address[0])
            self._drop(waiting)
            return
        if not data:
            if waiting.received:  # the handler answers it: the head ended with the connection
                self._dispatch(waiting)
            else:
                log.debug("client %s closed its idle connection", waiting.address[0])
                self._drop(waiting)
            return
        now = time.monotonic()
        if not waiting.received:
            waiting.head_deadline = now + self.head_timeout
        waiting.last_byte = now
        waiting.received += data
        if head_is_complete(waiting.received):
            self._dispatch(waiting)

    def _close_late(self, now: float) -> None:
        for key in list(self._selector.get_map().values()):
            waiting = key.data
            if waiting is None:
                continue
            if now >= waiting.head_deadline:
                log.info(
                    "request head from %s not complete within %g s "
                    "(DicomWeb.RequestHeadTimeout): connection closed, request not run",
                    waiting.address[0],
                    self.head_timeout,
                )
            elif now - waiting.last_byte >= self.timeout:
                # An idle keep-alive connection is normal (a browser's); stalled headers are not.
                level = logging.INFO if waiting.received else logging.DEBUG
                log.log(
                    level,
                    "connection from %s sent nothing for %g s: closed",
                    waiting.address[0],
                    self.timeout,
                )
            else:
                continue
            self._drop(waiting)

    def _dispatch(self, waiting: _Waiting) -> None:
        self._selector.unregister(waiting.connection)
        self._ready(waiting.connection, waiting.address, bytes(waiting.received))

    def _drop(self, waiting: _Waiting) -> None:
        with contextlib.suppress(KeyError, ValueError):  # given to a worker, or closed
            self._selector.unregister(waiting.connection)
        waiting.connection.close()


class WorkerPool:
    """At most `size` threads, started as needed, that each run `work` on one ready request
    at a time, oldest first; a request that finds them all busy waits for one, unless
    `urgent` says that a busy thread waits for it: that one runs in a thread of its own, at
    most `size` such threads at once (past them it waits like the others; a thread beside
    that ends takes the oldest waiting request while every worker is busy).

    `work` may return what is left to do once its thread counts as idle (the connection
    handed back to the head reader): a client's next request, arriving meanwhile, then goes
    to that thread. When the thread handed it back while still busy, that request started
    a thread more; a thread's allocations go to its own glibc arena, which keeps what it
    freed: the benchmark's peak RSS was 171-181 MiB instead of 155 in the runs where that
    happened during its STOW-RS batches (3 of 9; 1 of 16 after, cause not found)."""

    def __init__(
        self,
        size: int,
        work: Callable[..., Callable[[], None] | None],
        urgent: Callable[..., bool] = lambda *job: False,
    ) -> None:
        self.size = size
        self._work = work
        self._urgent = urgent
        self._ready: deque[tuple[Any, ...]] = deque()
        self._changed = threading.Condition()
        self._threads = 0
        self._idle = 0
        self._urgent_threads = 0
        self._closing = False

    def submit(self, *job: Any) -> None:
        """Run `job` when a thread is free, or beside the busy ones when urgent: told, counted
        and else queued under one lock, so that a slot given back meanwhile takes it up."""
        with self._changed:
            beside = (
                self._threads >= self.size
                and self._idle <= len(self._ready)
                and self._urgent_threads < self.size
                and self._urgent(*job)
            )
            if beside:
                self._urgent_threads += 1
            else:
                self._ready.append(job)
                if self._idle >= len(self._ready):
                    self._changed.notify()
                elif self._threads < self.size:
                    self._threads += 1
                    try:
                        self._start_worker()
                    except BaseException:  # the pool keeps its size; the caller closes the job
                        self._threads -= 1
                        self._ready.remove(job)
                        raise
        if beside:
            self._run_beside(job)

    def crowded(self) -> bool:
        """Whether requests wait for a worker."""
        return bool(self._ready)

    def _start_worker(self) -> None:
        threading.Thread(target=self._run, name="request-worker", daemon=True).start()

    def close(self) -> list[tuple[Any, ...]]:
        """End the idle threads (busy ones end after their request); the jobs left undone."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            left, self._ready = list(self._ready), deque()
        return left

    def _run(self) -> None:
        """Run jobs until the pool closes. A job whose `work` raises is logged, and the thread
        goes on: it ended uncounted, and a pool of 1 left every later request waiting."""
        after: Callable[[], None] | None = None
        try:
            while True:
                with self._changed:
                    self._idle += 1
                if after is not None:
                    self._safely(after)
                with self._changed:
                    while not self._ready and not self._closing:
                        self._changed.wait()
                    self._idle -= 1
                    if self._closing:
                        return
                    job = self._ready.popleft()
                after = self._safely(self._work, *job)
        finally:
            with self._changed:
                self._threads -= 1

    def _run_beside(self, job: tuple[Any, ...]) -> None:
        """Run `job` in a thread of its own (its slot among the `size` counted by the caller)."""
        try:
            threading.Thread(
                target=self._run_once, args=job, name="urgent-request", daemon=True
            ).start()
        except BaseException:
            with self._changed:
                self._urgent_threads -= 1
            raise

    def _run_once(self, *job: Any) -> None:
        """Run `job`, then, while every worker is busy, the oldest waiting urgent ones, before
        giving the slot back: an urgent request queued past the cap (a worker's self call
        while a job runner's self call held the slot) was left to the busy workers, one of
        which waited for it until its HttpTimeout. Only urgent ones: an ordinary request
        taken here could make a self call of its own that finds the cap full, and wait with
        every worker for a slot none of them gives back."""
        try:
            while True:
                after = self._safely(self._work, *job)
                if after is not None:
                    self._safely(after)
                with self._changed:  # checked and given back at once: no job queued between
                    waiting = len(self._ready) - self._idle  # not taken by an idle worker
                    urgent = None
                    if not self._closing and self._threads >= self.size and waiting > 0:
                        urgent = next(
                            (queued for queued in self._ready if self._urgent(*queued)), None
                        )
                    if urgent is None:
                        self._urgent_threads -= 1
                        return
                    self._ready.remove(urgent)
                    job = urgent
        except BaseException:
            with self._changed:
                self._urgent_threads -= 1
            raise

    @staticmethod
    def _safely(action: Callable[..., Any], *job: Any) -> Any:
        try:
            return action(*job)
        except Exception:
            log.exception("a request's worker failed; it takes the next request")
            return None


class SendBuffers:
    """Send buffers of `size` bytes (SO_SNDBUF) for connections with a large answer, at most
    `count` at once: a slow client keeps its buffer full, and the memory of buffers set by
    hand is not moderated by the kernel as that of its autotuned ones is (net.ipv4.tcp_wmem,
    4 MB at most here). A connection keeps its buffer until it closes; the others have the
    kernel's."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self._free = count
        self._lock = threading.Lock()

    def enlarge(self, connection: Connection) -> None:
        """Give `connection` a large buffer, if it has none and one is free."""
        if connection.send_buffers is not None:
            return
        with self._lock:
            if not self._free:
                return
            self._free -= 1
        connection.send_buffers = self
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.size)

    def give_back(self) -> None:
        with self._lock:
            self._free += 1


class Connection(socket.socket):
    """An accepted connection, which gives back its large send buffer when it closes."""

    __slots__ = ("send_buffers",)

    @classmethod
    def adopt(cls, accepted: socket.socket) -> Connection:
        """The connection `accepted` (by `socket.accept`), as a `Connection`."""
        timeout = accepted.gettimeout()
        connection = cls(accepted.family, accepted.type, accepted.proto, accepted.detach())
        connection.send_buffers = None
        connection.settimeout(timeout)
        return connection

    def close(self) -> None:
        buffers, self.send_buffers = self.send_buffers, None
        if buffers is not None:
            buffers.give_back()
        super().close()
