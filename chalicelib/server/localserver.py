"""`make run`: the app on Chalice's local server, fixed where it falls short for DICOMweb.

Chalice's `LocalDevServer` takes a request handler class; ours
- reads `Transfer-Encoding: chunked` request bodies (the stock handler reads Content-Length
  only, and dicomweb-client sends every STOW-RS body over 1 MB chunked);
- answers unknown paths with the app's JSON 404 instead of API Gateway's 403 "Missing
  Authentication Token";
- answers a malformed request (chunk size `ZZZ`, `Content-Length: abc`, a non-ASCII
  `Authorization`, an HTTP/0.9 request line, an unknown method, a request line or header
  over http.server's limits) and any failure outside the app with a JSON error, never by
  closing the connection without an answer or with http.server's HTML page;
- runs no request whose headers the client did not finish (the connection ended before
  the blank line): a client that gave up must not have its DELETE carried out;
- gives a connection a thread only once its request head has arrived, and serves at most
  `HttpThreadsCount` requests at once (`localconnections`: 4,000 slowloris connections took
  4,000 threads); a connection waiting for its head costs a socket and a few KB;
- closes a connection that makes no progress for `CONNECTION_TIMEOUT` (http.server waits
  for ever): an idle keep-alive connection, headers or a body that stall (a body answered
  408 first, its request not run), a client that stops reading its answer; and one whose
  request head is not complete `DicomWeb.RequestHeadTimeout` seconds after its first byte, or
  whose body comes slower than `DicomWeb.RequestBodyMinRate` (408), however steadily it trickles;
  or that takes its answer slower than `DicomWeb.ResponseMinRate` (its worker is freed);
- runs a request it makes to itself even with every worker busy (one of them waits for it);
- accepts a burst of connections (a listen backlog of `socket.SOMAXCONN`, not
  http.server's 5, past which connections stalled for seconds or timed out);
- sets TCP_NODELAY, and a send buffer of 4 MB (`SEND_BUFFER`) for large answers, 16 at most;
- passes binary bodies through without the base64 round trip that the Lambda event format
  forces on API Gateway (binary_types is emptied for the local app);
- refuses a body over `DicomWeb.MaxRequestBody` with 413 before reading it;
- removes, every `DicomWeb.SweepInterval` seconds as at start-up, the blobs of deletes that
  were interrupted, and of stores interrupted before it started (`PeriodicSweep`).

It refuses to start on an address other than loopback while `AuthenticationEnabled` is off:
that would publish every stored image to the network.

Usage: python -m chalicelib.server.localserver [--host 127.0.0.1] [--port 8042] [--data-dir var]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import functools
import hmac
import io
import ipaddress
import logging
import select
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    ForbiddenError,
    LocalDevServer,
    LocalGateway,
    LocalGatewayException,
    MatchResult,
    RouteMatcher,
    ThreadedHTTPServer,
)

from chalicelib.client.session import SELF_CALL_HEADER, SELF_CALL_TOKEN
from chalicelib.config import ConfigError, Settings, load_settings
from chalicelib.context import Context, build_context
from chalicelib.errors import (
    BadRequest,
    DicomWebError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UriTooLong,
)
from chalicelib.server.api import create_app
from chalicelib.server.delivery import BlobRange, StreamedBody
from chalicelib.server.http import SECURITY_HEADERS, error_response
from chalicelib.server.localconnections import (
    Connection,
    DeadlineReader,
    DeadlineWriter,
    HeadReader,
    SendBuffers,
    WorkerPool,
    head_is_complete,
    header_value,
)
from chalicelib.storage.ports import BlobStore

log = logging.getLogger(__name__)

_BLOCK = 1024 * 1024
"""Bytes per write when a stored object is copied from a stream rather than sent from a file."""


SEND_BUFFER = 4 * 1024 * 1024
"""SO_SNDBUF of a connection with a streamed answer (Linux doubles it, up to twice
net.core.wmem_max): a series goes out in fewer, fuller segments and `sendfile` waits less
often for the client than under the kernel's autotuning, which starts at 16 KB (server CPU
per 52.6 MB series 13.3-15.0 -> 10.8-13.3 ms, side by side). The memory it allows is mostly
references to page-cache pages, since `sendfile` does not copy."""
SEND_BUFFERS = 16
"""Connections that hold a SEND_BUFFER at once (64 MB; `localconnections.SendBuffers`): it
was every connection's, so many slow readers could pin memory without bound."""


CONNECTION_TIMEOUT = 60.0
"""Seconds a connection may go without progress: no byte of a request arriving (an idle
keep-alive connection, stalled headers or body) or none of an answer taken by the client.
Then it is closed: http.server had no timeout, so each such connection held a thread for
ever (4,000 slowloris connections closing at once stalled the other clients 25-30 s). A
request head or body that trickles in under it has its own deadline
(`DicomWeb.RequestHeadTimeout`, `DicomWeb.RequestBodyMinRate`)."""
NEXT_REQUEST_WAIT = 0.005
"""Seconds a worker waits for a kept-alive connection's next request before it hands the
connection to the head reader: a client that sends its requests back to back is answered
without two thread hand-overs each time (they made small answers 0.1-0.4 ms slower in the
benchmark, e.g. a JPEG frame 0.8 -> 1.0 ms)."""


class BodyTooLarge(Exception):
    """A request body over `max_body`: answered 413 without reading the rest."""


class PeriodicSweep:
    """What the start-up does once, every `interval` seconds in a daemon thread: remove the
    blobs of deletes interrupted after their index commit (`delete.finish_pending_deletes`)
    and of stores interrupted before it (`ingest.remove_interrupted_writes`); and delete the
    finished jobs past `JobsHistorySize` that the grace of `jobs.RECENTLY_ENDED_SECONDS`
    kept (`jobs.forget_old_jobs`: after a burst with no job ending after it). A server
    restarted after a kill -9 found the intents of the killed stores too young to remove,
    and never looked again while it ran; a blob whose removal failed waited for the next
    restart.

    Only the intents of stores begun before this process `started` are removed (once 20
    minutes old): a store of this process may run for longer than that (a large body over a
    slow disk), and would lose its blobs while still running. The blobs of a store of this
    process that failed before its commit are removed at the next start."""

    def __init__(self, ctx: Context, interval: float, started: datetime) -> None:
        self._ctx = ctx
        self._interval = interval
        self.started = started
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread, after the sweep it may be running."""
        self._stopped.set()
        self._thread.join()

    def sweep(self, now: datetime) -> None:
        """One sweep at `now`."""
        from chalicelib.ingest import INTERRUPTED_WRITE_AGE, remove_interrupted_writes
        from chalicelib.jobs import forget_old_jobs
        from chalicelib.server.delete import finish_pending_deletes

        finish_pending_deletes(self._ctx.index, self._ctx.blobs)
        cut_off = min(now, self.started + INTERRUPTED_WRITE_AGE)
        remove_interrupted_writes(self._ctx.index, self._ctx.blobs, cut_off)
        forget_old_jobs(self._ctx)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.sweep(datetime.now(UTC))
            except Exception:
                log.exception("the periodic sweep failed; the next one is in %g s", self._interval)


class DicomWebHTTPServer(ThreadedHTTPServer):
    """Chalice's threaded server with
    - the system's listen backlog: http.server's 5 overflowed when 200 clients connected at
      once, and their connections waited for SYN retransmits (1, 3, 7 s) or timed out;
    - a thread only for a request whose head has arrived, at most `workers` at once
      (`localconnections`), instead of one per connection from its accept to its close;
    - the `sweep` of its context, stopped with it."""

    request_queue_size = socket.SOMAXCONN
    connection_timeout: float = CONNECTION_TIMEOUT
    head_timeout: float = Settings.request_head_timeout
    body_min_rate: int = Settings.request_body_min_rate
    response_min_rate: int = Settings.response_min_rate
    workers: int = Settings.http_threads_count
    sweep: PeriodicSweep | None = None

    def __init__(self, server_address: Any, handler: Any) -> None:
        # Before the socket is bound: TCPServer calls server_close when that fails.
        self.pool = WorkerPool(self.workers, self._answer, urgent=self._from_itself)
        self.heads = HeadReader(self.pool.submit, self.connection_timeout, self.head_timeout)
        self.send_buffers = SendBuffers(SEND_BUFFER, SEND_BUFFERS)
        super().__init__(server_address, handler)

    def get_request(self) -> tuple[Connection, Any]:
        """The next connection, as a `Connection` (which gives back its send buffer)."""
        accepted, address = super().get_request()
        return Connection.adopt(accepted), address

    def process_request(self, request: Any, client_address: Any) -> None:
        """A new connection waits for its request head in the head reader, not in a thread."""
        self.heads.add(request, client_address)

    def _from_itself(self, connection: socket.socket, address: Any, received: bytes) -> bool:
        """A request of this server to itself: it runs even with every worker busy, since
        one of them waits for it (`is_self_call`)."""
        try:
            local = connection.getsockname()[0]
        except OSError:  # closed meanwhile
            return False
        return is_self_call(received, address[0], local)

    def _answer(
        self, connection: socket.socket, address: Any, received: bytes
    ) -> Callable[[], None] | None:
        """Handle the request whose head (`received`) has arrived, and those pipelined after
        it; then close the connection, or give what makes it wait for its next request in
        the head reader (`WorkerPool` runs it once the thread counts as idle)."""
        try:
            handler = self.RequestHandlerClass(connection, address, self, received=received)
        except Exception:
            self.handle_error(connection, address)
            self.shutdown_request(connection)
            return None
        if handler.close_connection:
            self.shutdown_request(connection)
            return None
        return functools.partial(self.heads.add, connection, address, handler.left)

    def server_close(self) -> None:
        if self.sweep is not None:
            self.sweep.stop()
        self.heads.stop()
        for connection, *_ in self.pool.close():
            connection.close()
        super().server_close()


def is_self_call(head: bytes, peer: str, local: str) -> bool:
    """Whether the request `head`, from the address `peer` to this server's `local` one, is
    one of this process's clients (`/servers/{name}/get`, a job whose remote is this server):
    by the token of its `X-DicomWeb-Caller` header (`session.SELF_CALL_TOKEN`), from this host
    (a loopback peer, or the server's own address). The token goes to every remote server:
    from anywhere, a remote could take every self-call slot. A self call through an
    HttpProxy comes from the proxy and does not count. It replaces an audit hook on every
    connect(2) of the process, one per server, never removed (~0.9 µs per audited event
    each), which also counted the test's own clients."""
    if peer != local and not is_loopback(peer):
        return False
    token = header_value(head, SELF_CALL_HEADER.lower().encode())
    return token is not None and hmac.compare_digest(token, SELF_CALL_TOKEN.encode())


class _LastLine:
    """A read stream that remembers the last line read: b"" when the stream ended."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.last: bytes | None = None

    def readline(self, limit: int = -1) -> bytes:
        self.last = self.stream.readline(limit)
        return self.last


class DecodingRouteMatcher(RouteMatcher):
    """Path parameters percent-decoded, as API Gateway passes them (Chalice's local matcher
    passes them as sent: a server "my peer" was unreachable at servers/my%20peer), and a `;`
    kept in them (Chalice's `urlparse` cut `;2` off `frames/1;2` and answered frame 1)."""

    def match_route(self, url: str) -> MatchResult:
        path, mark, query = url.partition("?")
        match = super().match_route(path.replace(";", "%3B") + mark + query)
        captured = {name: unquote(value) for name, value in match.captured.items()}
        return MatchResult(match.route, captured, match.query_params)


def decoding_gateway(app: Chalice, config: Config) -> LocalGateway:
    """Chalice's `LocalGateway` matching routes with a `DecodingRouteMatcher`. It keeps no
    state between requests: one serves every request of a server (building it sorts the
    routes)."""
    gateway = LocalGateway(app, config)
    gateway.event_converter._route_matcher = DecodingRouteMatcher(list(app.routes))
    return gateway


class DicomWebRequestHandler(ChaliceRequestHandler):
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every small answer.
    disable_nagle_algorithm = True
    max_body = Settings.max_request_body
    anonymous_hosts: frozenset[str] | None = None
    """With authentication off, the host names a request may name besides loopback ones
    (`DicomWeb.Host`, `PublicRoot`); None with authentication on."""
    server: DicomWebHTTPServer
    left = b""
    """A part of the next request's head that came with this one's (pipelined): it goes back
    to the head reader with the connection, which waits there for the rest, not in a worker."""
    gateway: LocalGateway
    """The server's `decoding_gateway`, shared by its requests."""

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: Any,
        app_object: Chalice,
        config: Config,
        received: bytes = b"",
    ) -> None:
        """Handle the request whose first bytes, `received`, the server's head reader read;
        and those pipelined after it."""
        # ChaliceRequestHandler.__init__ with the server's gateway, not one built per request;
        # the base class handles the request inside its __init__.
        self.local_gateway = self.gateway
        self.received = received
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    @property
    def timeout(self) -> float:  # type: ignore[override]
        """The server's CONNECTION_TIMEOUT: StreamRequestHandler sets it on the socket."""
        return self.server.connection_timeout

    # Every method a route of the app may have: a request with another one never reaches it.
    ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"

    def setup(self) -> None:
        """StreamRequestHandler's, with the request read through a `DeadlineReader` that gives
        the bytes the head reader took first."""
        super().setup()
        self.rfile.close()
        self.reader = DeadlineReader(self.connection, self.timeout, self.received)
        self.rfile = io.BufferedReader(self.reader)
        self.writer = DeadlineWriter(
            self.connection,
            self.timeout,
            self.server.head_timeout,
            self.server.response_min_rate,
            self.server.pool.crowded,
        )
        self.wfile = self.writer

    def handle(self) -> None:
        """The request, and the next ones while they have already arrived (pipelined): a
        connection then waits for its next request in the server's head reader, not here.
        A client that left before its answer was written is logged in a line, not in
        socketserver's traceback: 800 slowloris connections closing at once printed 800
        tracebacks, which held the other clients for seconds."""
        try:
            self.handle_one_request()
            while not self.close_connection:
                arrived = self._arrived()
                if not arrived and self._next_request_comes():
                    arrived = self._arrived()
                if not head_is_complete(arrived):
                    self.left = self.rfile.read(len(arrived)) + self.reader.take_received()
                    break
                self.handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            log.info(
                "client %s closed the connection before it was answered", self.client_address[0]
            )
            self.close_connection = True

    def _next_request_comes(self) -> bool:
        """Whether bytes of the next request arrive within NEXT_REQUEST_WAIT (a poll, not
        select.select: descriptors pass 1024 with many connections open)."""
        readable = select.poll()
        readable.register(self.connection, select.POLLIN)
        return bool(readable.poll(NEXT_REQUEST_WAIT * 1000))

    def _arrived(self) -> bytes:
        """What came of the next request and is not read yet, read without waiting (the
        reader's buffer, or one read of what the socket has)."""
        self.reader.probing = True
        try:
            return self.rfile.peek(1)  # type: ignore[attr-defined,no-any-return]
        finally:
            self.reader.probing = False

    def handle_one_request(self) -> None:
        """http.server's, the request line and headers read within
        `DicomWeb.RequestHeadTimeout` (the head reader had them whole, unless they were
        pipelined or longer than it holds); its answer taken at `DicomWeb.ResponseMinRate`."""
        self.reader.limit("request head", self.server.head_timeout)
        self.writer.begin()
        super().handle_one_request()

    def log_error(self, format: str, *args: Any) -> None:
        """http.server's line for a request cut off by a timeout ("Request timed out", its one
        use here: `send_error` is ours): its head read too late, or its answer taken too
        slowly (the writer's reason, e.g. DicomWeb.ResponseMinRate, in the line, and the
        connection reset), in the server's log like the other connection events, not on
        stderr."""
        log.info("%s - %s", self.client_address[0], format % args)

    def parse_request(self) -> bool:
        """http.server's, except for two requests it would mishandle.

        An HTTP/0.9 request line (no version) made it wait for headers such a client never
        sends: both sides waited for ever. Headers that end with the connection, before their
        blank line (RFC 9112 §2.1), made it run the request anyway: a client that gave up
        halfway, or hundreds of slowloris connections closing at once, had their requests
        carried out (800 such searches held the server for seconds).
        """
        if len(self.raw_requestline.split()) == 2:
            self.command, self.request_version, self.requestline = "", "HTTP/1.0", ""
            self.close_connection = True
            self._send_json_error(
                BadRequest("the request line has no HTTP version: send HTTP/1.1 requests")
            )
            return False
        rfile = self.rfile
        self.rfile = lines = _LastLine(rfile)  # type: ignore[assignment]
        try:
            if not super().parse_request():
                return False
        finally:
            self.rfile = rfile
        if lines.last == b"":
            self.close_connection = True
            self._send_json_error(
                BadRequest("the connection ended before the blank line that closes the headers")
            )
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line over 65,536 bytes, a header line too long,
        too many headers, bad syntax or version, an unknown method) as JSON errors like the
        app's, instead of its HTML page; an unknown method is 405 with the methods this server
        takes (http.server answers 501)."""
        short, detail = self.responses.get(code, ("Error", ""))
        if code == HTTPStatus.NOT_IMPLEMENTED:
            error: DicomWebError = MethodNotAllowed(
                f"{self.command[:20]!r} is not a method this server takes: "
                f"it takes {self.ALLOWED_METHODS}",
                headers={"Allow": self.ALLOWED_METHODS},
            )
        elif code == HTTPStatus.REQUEST_URI_TOO_LONG:
            error = UriTooLong(
                "the request line is over 65,536 bytes: shorten the URL (split a long UID list)"
            )
        else:
            error = DicomWebError(f"{message or short}: {explain or detail}")
            error.status = code
        if self.request_version == "HTTP/0.9":  # a version it refused: answer in HTTP/1.0
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self._send_json_error(error)

    def _generic_handle(self) -> None:
        """Chalice's handler, with every failure answered (its own closes the connection)."""
        refused = self._unexpected_host()
        if refused:
            self.close_connection = True
            self._send_json_error(Forbidden(refused))
            return
        try:
            self._check_headers()
            self.reader.limit("request body", self.server.head_timeout, self.server.body_min_rate)
            headers, body = self._parse_payload()
        except TimeoutError as late:  # the headers are complete: say why, and run nothing
            self.send_error(HTTPStatus.REQUEST_TIMEOUT, explain=str(late))
            return
        except BodyTooLarge as exc:
            self.close_connection = True
            message = f"{exc}; the limit is {self.max_body} (DicomWeb.MaxRequestBody)"
            self._send_json_error(PayloadTooLarge(message))
            self._linger()
            return
        except BadRequest as error:
            self.close_connection = True  # the body's framing is unknown: read no further
            self._send_json_error(error)
            return
        try:
            response = self.local_gateway.handle_request(
                method=self.command, path=self.path, headers=headers, body=body
            )
        except ForbiddenError:  # Chalice's answer to an unknown path: ours is a JSON 404
            self._send_json_error(NotFound(f"no resource at {self.path.split('?', 1)[0]}"))
            return
        except LocalGatewayException as error:
            self._send_error_response(error)
            return
        except Exception:
            log.exception("local gateway failed on %s %s", self.command, self.path)
            self.close_connection = True
            self._send_json_error(DicomWebError("internal error; the server log has the details"))
            return
        response_headers = {**response["headers"], **response["multiValueHeaders"]}
        body = self._handle_binary(response)["body"]
        if self.command == "HEAD":  # the app set the GET's Content-Length (`http.head_of`)
            self.send_response(response["statusCode"])
            self._send_headers(response_headers)
            return
        if isinstance(body, StreamedBody):
            self._send_streamed(response["statusCode"], response_headers, body)
            return
        self._send_http_response(response["statusCode"], response_headers, body)

    def _send_streamed(self, code: int, headers: dict[str, Any], body: StreamedBody) -> None:
        """Write a streamed body piece by piece: stored files with `sendfile`, parts built one
        at a time. With its size known (no part left to build) it goes out with
        Content-Length, else chunked (RFC 9112 §7.1). A failure once the status line is out
        cannot change the answer: the connection is closed, so that the client sees a
        truncated answer, never a complete-looking one. (TCP_CORK around the answer was
        measured: 1.5-2 ms more server CPU for a 100-slice series, no faster; MSG_MORE on
        each part's framing, `_send_more`, saves 0.4-0.8 ms of it.)"""
        length = body.length
        chunked = length is None and self.request_version != "HTTP/1.0"
        self.send_response(code)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is None:  # an HTTP/1.0 client: the end of the connection ends the body
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self._send_headers(headers)
        if length is None or length >= SEND_BUFFER:
            self.server.send_buffers.enlarge(self.connection)
        try:
            held = b""  # the last bytes given: they leave with what follows, or at the end
            for piece in body.pieces():
                if isinstance(piece, BlobRange):
                    if not piece.length:
                        continue
                    self._send_more(held)
                    if chunked:
                        self._send_more(b"%x\r\n" % piece.length)
                    self._send_blob_range(body.blobs, piece)
                    held = b"\r\n" if chunked else b""
                elif piece:  # an empty chunk would end a chunked body
                    self._send_more(held)
                    held = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            if chunked:
                self._send_more(held)
                held = b"0\r\n\r\n"
            if held:
                self.writer.send(held)
        except (BrokenPipeError, ConnectionResetError):  # the client went away: nothing to fix
            log.info("client closed the connection during %s %s", self.command, self.path)
            self.close_connection = True
        except TimeoutError as late:  # the writer set the connection to reset on close
            log.info("%s during %s %s: connection reset", late, self.command, self.path)
            self.close_connection = True
        except Exception:
            log.exception("streamed answer to %s %s broken off", self.command, self.path)
            self.close_connection = True

    def _send_more(self, data: bytes) -> None:
        """Send with MSG_MORE: a part's framing then leaves in the first segment of the stored
        bytes that follow, not in a segment of its own that the client is woken for (a
        hundred per 100-instance series). The answer's last bytes are sent without it, and
        `sendfile` pushes the end of each file."""
        if data:
            self.writer.send(data, socket.MSG_MORE)

    def _send_blob_range(self, blobs: BlobStore, piece: BlobRange) -> None:
        """The range with `sendfile` from a local file, or in blocks from another stream."""
        with blobs.open(piece.key, piece.start) as source:
            try:
                descriptor = source.fileno()
            except (AttributeError, OSError):  # no file behind it (S3): copy in blocks
                sent = self._send_blocks(source, piece.length)
            else:
                sent = self.writer.sendfile(descriptor, piece.start, piece.length)
        if sent != piece.length:
            raise OSError(f"blob {piece.key} gave {sent} of {piece.length} bytes")

    def _send_blocks(self, source: BinaryIO, length: int) -> int:
        sent = 0
        while sent < length:
            block = source.read(min(_BLOCK, length - sent))
            if not block:
                break
            self.wfile.write(block)
            sent += len(block)
        return sent

    def _send_http_response_with_body(
        self, code: int, headers: dict[str, Any], body: str | bytes
    ) -> None:
        """Chalice's, except that a HEAD answer gets the body's Content-Length and not the body
        (RFC 9110 §9.3.2): the answers this handler makes itself (an unknown path, a
        malformed request) are written here; sending the body left it on the connection,
        where the client read it as the start of the next answer. A 204 has no content, so
        neither Content-Type nor Content-Length (RFC 9110 §15.3.5 and §8.6)."""
        if code == 204:
            self.send_response(code)
            self._send_headers({k: v for k, v in headers.items() if k.lower() != "content-type"})
            return
        if self.command != "HEAD":
            super()._send_http_response_with_body(code, headers, body)
            return
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self._send_headers({"Content-Type": "application/json", **headers})

    def _send_json_error(self, error: DicomWebError) -> None:
        response = error_response(error)
        headers = {
            **SECURITY_HEADERS,
            **response.headers,
            "Content-Type": "application/json",
            "X-Request-Id": uuid.uuid4().hex,
        }
        self._send_http_response(response.status, headers, response.body)

    def _unexpected_host(self) -> str:
        """Why the request's Host is refused, or "". Without authentication a domain name
        is answered only when it is localhost's (or `DicomWeb.Host`'s, `PublicRoot`'s): a web
        page whose domain an attacker's DNS turns into 127.0.0.1 (DNS rebinding) is
        same-origin with this server for the browser, and could read and store as it likes.
        Addresses and names without a dot (`Host: h`) cannot be an attacker's domain."""
        host = self.headers.get("host", "")
        if self.anonymous_hosts is None or not host:
            return ""
        try:
            name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
        except ValueError:
            name = host
        if "." not in name or name.endswith(".localhost") or name in self.anonymous_hosts:
            return ""
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(name)
            return ""
        return (
            f"Host {host[:100]!r}: with AuthenticationEnabled off this server answers no "
            f"domain name but localhost's (or the host of DicomWeb.Host or PublicRoot)"
        )

    def _check_headers(self) -> None:
        """Credentials are ASCII (RFC 9110 §11.4, token68 and auth-param); Chalice's local
        gateway fails on others when it builds its 403 for an unknown path."""
        authorization = self.headers.get("authorization", "")
        if not authorization.isascii():
            raise BadRequest("the Authorization header holds non-ASCII characters")

    def _linger(self) -> None:
        """Read and drop what the client still sends (a few seconds, 64 MB at most) after the
        413, so that closing does not reset the connection before it reads the answer (the
        "lingering close" of HTTP servers)."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(2)
        drained = 0
        with contextlib.suppress(OSError):
            while drained < 64 * 1024 * 1024:
                data = self.connection.recv(65536)
                if not data:
                    break
                drained += len(data)

    # The base class binds its own _generic_handle to these names.
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def _parse_payload(self):  # type: ignore[no-untyped-def]
        # The event's requestContext.identity.sourceIp: the real peer, not chalice's constant
        # 127.0.0.1, so that DicomWeb.TrustedProxies can tell a proxy from anyone else.
        self.local_gateway.event_converter.LOCAL_SOURCE_IP = self.client_address[0]
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            headers["Content-Length"] = str(len(body))
            return self._host_with_port(headers), body
        length = self._content_length()
        if not (length.isascii() and length.isdigit()):
            raise BadRequest(f"Content-Length '{length[:40]}' is not a number of bytes")
        if int(length) > self.max_body:
            raise BodyTooLarge(f"the request body has {length} bytes")
        body = self.rfile.read(int(length)) if int(length) else None
        if body is not None and len(body) < int(length):
            raise BadRequest(f"the body ended after {len(body)} of {length} bytes")
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
        if "content-length" in self.headers:
            headers["Content-Length"] = length
        return self._host_with_port(headers), body

    def _content_length(self) -> str:
        """The one Content-Length of the request, "0" when it has none. Headers or a list that
        give different values leave the body's end unknown: "the recipient MUST treat it as an
        unrecoverable error", RFC 9112 §6.3 (item 5); the same value repeated is that value."""
        values = {
            value.strip()
            for header in self.headers.get_all("content-length", [])
            for value in header.split(",")
        }
        if len(values) > 1:
            shown = ", ".join(sorted(value[:20] for value in values))
            raise BadRequest(f"the request has different Content-Length values ({shown[:80]})")
        return values.pop() if values else "0"

    def _host_with_port(self, headers: dict[str, str]) -> dict[str, str]:
        """Add this server's port to a Host header that lacks it.

        dicomweb-client (0.61, `DICOMwebClient._http_get`) sends `Host: 127.0.0.1` without the
        port on every non-streamed GET, so links built from it (BulkDataURI, RetrieveURL) would
        point at port 80. A Host with a port, or a server on port 80, is left alone.
        """
        port = self.server.server_address[1]
        for name, value in headers.items():
            if name.lower() == "host":
                has_port = "]:" in value if value.startswith("[") else ":" in value
                if port != 80 and value and not has_port:
                    headers[name] = f"{value}:{port}"
                break
        return headers

    def _read_chunked(self) -> bytes:
        """Read a chunked body (RFC 9112 §7.1): size line, data, CRLF, ..., 0, trailers."""
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise BadRequest("chunked body: the connection ended before its last chunk (0)")
            # Hexadecimal digits only (RFC 9112 §7.1: 1*HEXDIG); Python's int() would also
            # take '0x10', '1_0', '+5' or nothing at all.
            digits = line.split(b";", 1)[0].strip()
            if not digits or digits.strip(b"0123456789abcdefABCDEF") or not line.endswith(b"\n"):
                shown = line.strip()[:40].decode("latin-1")
                raise BadRequest(f"chunked body: the chunk size line '{shown}' is not hexadecimal")
            size = int(digits, 16)
            total += size
            if total > self.max_body:
                raise BodyTooLarge(f"the chunked request body passed {total} bytes")
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise BadRequest(f"chunked body: a chunk ended after {len(chunk)} of {size} bytes")
            chunks.append(chunk)
            self.rfile.readline(65537)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ExposedWithoutAuthentication(Exception):
    """The server would listen beyond loopback while anyone may call it."""


def make_server(
    host: str,
    port: int,
    data_dir: Path | None = None,
    timeout: float = CONNECTION_TIMEOUT,
    **changes: Any,
) -> LocalDevServer:
    """The server, not yet serving; `timeout` is its `CONNECTION_TIMEOUT`, `changes` replace
    settings (e.g. `request_head_timeout=2`)."""
    settings = dataclasses.replace(load_settings(), **changes)
    if not settings.authentication_enabled and not is_loopback(host):
        raise ExposedWithoutAuthentication(
            f"refusing to listen on {host} with authentication off: anyone on the network "
            "could read and delete every stored image. Set AuthenticationEnabled and "
            'RegisteredUsers ({"user": "password"}) in DICOMWEB_CONFIG, or listen on '
            "127.0.0.1 (HOST=127.0.0.1)"
        )
    if data_dir is not None:
        settings = dataclasses.replace(settings, data_dir=data_dir)
    started = datetime.now(UTC)
    ctx = build_context(settings)
    app = create_app(lambda: ctx, streams=True)
    app.api.binary_types = []
    config = Config(chalice_stage="dev", user_provided_params={}, config_from_disk={})
    anonymous_hosts = None
    if not settings.authentication_enabled:
        named = (urlsplit(f"//{settings.host}").hostname, urlsplit(settings.public_root).hostname)
        anonymous_hosts = frozenset(filter(None, named))
    handler = type(
        "LimitedRequestHandler",
        (DicomWebRequestHandler,),
        {
            "max_body": settings.max_request_body,
            "anonymous_hosts": anonymous_hosts,
            "gateway": decoding_gateway(app, config),
        },
    )
    server_class = type(
        "ConfiguredHTTPServer",
        (DicomWebHTTPServer,),
        {
            "connection_timeout": timeout,
            "head_timeout": settings.request_head_timeout,
            "body_min_rate": settings.request_body_min_rate,
            "response_min_rate": settings.response_min_rate,
            "workers": settings.http_threads_count,
        },
    )
    server = LocalDevServer(app, config, host, port, handler_cls=handler, server_cls=server_class)
    if settings.sweep_interval:
        server.server.sweep = PeriodicSweep(ctx, settings.sweep_interval, started)
    return server


def _keep_large_buffers() -> None:
    """Let glibc reuse freed buffers of up to 256 MB instead of returning them to the OS.

    A series retrieve builds a body of tens of MB from hundreds of 0.5 MB blob reads; with
    glibc's defaults each of those is a fresh mmap whose pages fault in again on every request
    (the 52 MB join of a 100-slice CT series: ~38 ms → ~17 ms). Peak memory is unchanged;
    memory stays with the process after a large answer. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve DICOMweb locally (chalice local)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    # The app's records (one JSON access line per request, errors) on stderr, as on Lambda.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    _keep_large_buffers()
    # pydicom, with numpy, Pillow and the codec plugins it finds, takes ~0.5 s to import: a
    # server that runs for hours pays it at start, not in its first upload (~0.1 s of work).
    # Before the port is bound, so that a client waiting for the server is refused until it
    # answers. Lambda keeps it lazy (STYLE.md rule 4): a cold start without upload never pays.
    import pydicom  # noqa: F401

    try:
        server = make_server(args.host, args.port, args.data_dir)
    except (ExposedWithoutAuthentication, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: port {args.port} on {args.host} is already in use (a Debian 'orthanc' "
                f"service listens on 8042 by default): stop it or run with PORT=<other port>",
                file=sys.stderr,
            )
            return 2
        raise
    signal.signal(signal.SIGTERM, _stop)
    root = load_settings().root
    print(f"DICOMweb server at http://{args.host}:{args.port}{root}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
