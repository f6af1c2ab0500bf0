"""The job engine (chalicelib/jobs.py) against a loopback STOW-RS remote that holds its
answer until released: a pause that lands while a step runs wins, that step's result is
dropped, and the batch is sent again on resume."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chalicelib import jobs
from chalicelib.dicom.multipart import parse_media_type, split_multipart
from chalicelib.dicom.parse import parse_instance
from chalicelib.ingest import store_instance
from tests.client.test_two_servers import large_study
from tests.conftest import make_context


class HeldStowRemote(ThreadingHTTPServer):
    """Answers STOW-RS with every instance stored; the first POST waits for `release`. It
    reads Content-Length bodies: the server entry has ChunkedTransfers false."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[list[str]] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web/"


class _Handler(BaseHTTPRequestHandler):
    server: HeldStowRemote

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        boundary = parse_media_type(self.headers["Content-Type"]).params["boundary"]
        uids = [parse_instance(p.body).sop_instance_uid for p in split_multipart(body, boundary)]
        self.server.received.append(uids)
        if len(self.server.received) == 1:
            self.server.first_arrived.set()
            self.server.release.wait(30)
        answer = {
            "00081199": {
                "vr": "SQ",
                "Value": [{"00081155": {"vr": "UI", "Value": [u]}} for u in uids],
            }
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[HeldStowRemote]:
    server = HeldStowRemote()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_pause_during_a_step_drops_its_result_and_resume_resends_the_batch(
    tmp_path: Path, remote: HeldStowRemote
) -> None:
    servers = {"held": {"Url": remote.url, "ChunkedTransfers": False}}
    ctx = make_context("local", tmp_path, servers=servers, stow_max_instances=2)
    study = large_study(3)
    for instance in study:
        assert store_instance(ctx, instance.data).status == "stored"
    job = jobs.new_job(jobs.STOW, "held", {"Resources": [[study[0].study]]}, {}, 0)
    ctx.jobs.create(job)

    step = threading.Thread(target=jobs.advance, args=(ctx, job.id))
    step.start()
    assert remote.first_arrived.wait(30)
    jobs.pause(ctx, job.id)
    remote.release.set()
    step.join(30)
    paused = ctx.jobs.get(job.id)
    assert paused.state == "Paused" and paused.cursor == {}  # the step's result was dropped

    jobs.resume(ctx, job.id)
    deadline = time.monotonic() + 60
    while (done := ctx.jobs.get(job.id)).state != "Success":
        assert done.state in ("Pending", "Running") and time.monotonic() < deadline, done
        time.sleep(0.05)
    assert done.content["InstancesCount"] == "3"
    first, *rest = remote.received
    assert rest[0] == first  # the dropped batch, sent again
    assert sorted(u for batch in rest for u in batch) == sorted(i.sop for i in study)
