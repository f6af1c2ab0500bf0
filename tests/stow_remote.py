"""A STOW-RS remote on loopback that holds one POST until the test releases it: a job step is
then under way for as long as the test needs (a pause, a server stop), with no race against
the job and no sleep.

It records the SOP Instance UIDs of every POST as it arrives. It answers every instance
stored, or, given `forward` (the root URL of a real server), relays each POST there and
returns that server's answer; the held POST goes on once released, whether or not its sender
is still waiting.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from chalicelib.dicom.multipart import parse_media_type, split_multipart
from chalicelib.dicom.parse import parse_instance

HOLD_LIMIT = 120
"""Seconds a held POST waits at most for `release` (a failed test never sets it)."""


class HeldStowRemote(ThreadingHTTPServer):
    def __init__(self, held: int, forward: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.held = held
        self.forward = forward
        self.received: list[list[str]] = []
        self.held_arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web/"

    def arrived(self, uids: list[str]) -> bool:
        """Record a POST's instances; True when it is the one to hold."""
        with self._lock:
            self.received.append(uids)
            return len(self.received) == self.held


class _Handler(BaseHTTPRequestHandler):
    server: HeldStowRemote

    def do_POST(self) -> None:
        body = self._body()
        content_type = self.headers["Content-Type"]
        boundary = parse_media_type(content_type).params["boundary"]
        uids = [parse_instance(p.body).sop_instance_uid for p in split_multipart(body, boundary)]
        if self.server.arrived(uids):
            self.server.held_arrived.set()
            self.server.release.wait(HOLD_LIMIT)
        if self.server.forward is None:
            status, answer = 200, json.dumps(_stored(uids)).encode()
        else:
            response = requests.post(
                self.server.forward.rstrip("/") + self.path,
                data=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=HOLD_LIMIT,
            )
            status, answer = response.status_code, response.content
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender of a held POST stopped meanwhile

    def _body(self) -> bytes:
        """The request body, sent with Content-Length or chunked (ChunkedTransfers)."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers["Content-Length"]))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()  # the CRLF after the last chunk (no trailers are sent)
        return b"".join(chunks)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _stored(uids: list[str]) -> dict:
    """A Store Instances Response naming every instance in ReferencedSOPSequence."""
    items = [{"00081155": {"vr": "UI", "Value": [uid]}} for uid in uids]
    return {"00081199": {"vr": "SQ", "Value": items}}


@contextmanager
def held_stow_remote(held: int = 1, forward: str | None = None) -> Iterator[HeldStowRemote]:
    """The remote, serving on a free loopback port; its `held`-th POST (1-based) waits for
    `release`."""
    server = HeldStowRemote(held, forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
