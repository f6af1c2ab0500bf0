"""The benchmark (`bench/`) on a tiny data set, against whichever servers run here.

No timing assertions: only that every row is there, with figures or an explicit n/a.
"""

from __future__ import annotations

import json
import os
import select
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from bench import chart, run, scale
from bench.dataset import DatasetSpec, generate
from bench.servers import SERVER_NAMES, unavailable_reason
from tests.peers import require_orthanc

TINY = ["--studies", "1", "--series-per-study", "1", "--instances-per-series", "3"]
TINY += ["--multiframe-frames", "3", "--jpeg-instances", "2"]
ONCE = ["--repeats", "1", "--warmup", "0", "--rounds", "1"]
ORTHANC_1_10_UNSUPPORTED = {"thumbnail"}
ROWS = [
    "stow_rs",
    "qido_studies",
    "qido_studies_patient_name",
    "qido_studies_study_date",
    "qido_studies_paging",
    "qido_series_of_study",
    "qido_instances_of_series",
    "qido_instances_of_study",
    "qido_instances_paging",
    "wado_rs_series",
    "wado_rs_instance",
    "wado_rs_frame",
    "metadata_series",
    "metadata_study",
    "rendered_jpeg",
    "rendered_png",
    "thumbnail",
    "wado_uri_dicom",
    "wado_uri_jpeg",
    "wado_rs_frames_multiframe",
    "rendered_frame_multiframe",
    "wado_rs_frame_jpeg_baseline",
    "rendered_jpeg_baseline",
    "peak_rss",
]


def available_servers() -> list[str]:
    """The servers this machine can run; skips (or fails under CI=true) without Orthanc."""
    names = [name for name in SERVER_NAMES if unavailable_reason(name) is None]
    if "orthanc" not in names and (os.environ.get("CI") == "true" or not names):
        require_orthanc()
    return names


@pytest.mark.interop
def test_main_tiny_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = available_servers()
    out = tmp_path / "result.json"
    scale_out = tmp_path / "scale.json"
    tiny_scale = ["--backends", "local", "--sizes", "2,4", "--repeats", "1", "--warmup", "0"]
    assert scale.main([*tiny_scale, "--out", str(scale_out)]) == 0
    args = [*TINY, *ONCE, "--servers", ",".join(names), "--out", str(out)]
    args += ["--scale", str(scale_out)]

    assert run.main([*args, "--cache", str(tmp_path / "cache")]) == 0

    result = json.loads(out.read_text())
    rows = {row["id"]: row for row in result["rows"]}
    assert list(rows) == ROWS
    assert set(result["servers"]) == set(names)
    for row in rows.values():
        for name in names:
            figures = row["results"][name]
            if figures.get("na"):
                assert "status" in figures
            elif row["id"] == "peak_rss":
                assert figures["value"] > 0
            else:
                assert figures["samples"] == 1
                assert 0 < figures["median_ms"] <= figures["p95_ms"]
    if "orthanc" in names:
        missing = {key for key, row in rows.items() if row["results"]["orthanc"].get("na")}
        assert missing == ORTHANC_1_10_UNSUPPORTED
        assert rows["stow_rs"]["results"]["orthanc"]["instances_per_s"] > 0
        assert rows["qido_studies"]["results"]["orthanc"]["items"] == 1
        assert rows["qido_instances_of_series"]["results"]["orthanc"]["items"] == 3
    if set(names) == {"orthanc", "ours"}:
        qido = rows["qido_studies"]["results"]
        speedup = qido["orthanc"]["median_ms"] / qido["ours"]["median_ms"]
        assert rows["qido_studies"]["speedup"] == pytest.approx(speedup)
    assert "| Row |" in capsys.readouterr().out
    assert chart.main([str(out), "--out", str(tmp_path / "speedups.png")]) == 0
    with (
        Image.open(out.with_suffix(".png")) as drawn,
        Image.open(tmp_path / "speedups.png") as bare,
    ):
        assert drawn.format == bare.format == "PNG"
        assert drawn.height > bare.height  # the scale curves are drawn below the speed-ups


def test_generate_is_deterministic(tmp_path: Path) -> None:
    spec = DatasetSpec(2, 1, 2, multiframe_frames=2, jpeg_instances=1)

    first = generate(spec, tmp_path / "a")
    second = generate(spec, tmp_path / "b")

    assert len(first.instances) == 2 * 2 + 1 + 1
    for one, other in zip(first.instances, second.instances, strict=True):
        assert first.path(one).read_bytes() == second.path(other).read_bytes()
    assert len({item.study for item in first.instances}) == 2


def test_main_unknown_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--servers", "dcm4chee"]) == 2
    assert "unknown server 'dcm4chee'" in capsys.readouterr().err


class _Answers(BaseHTTPRequestHandler):
    """`/items`: a JSON list; `/short`: announces 100 bytes, sends 50 and closes; `/hang-up`:
    answers, then closes the keep-alive connection without saying so. `encodings` holds each
    request's Accept-Encoding."""

    protocol_version = "HTTP/1.1"
    encodings: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.encodings.append(self.headers["Accept-Encoding"])
        body = b"[1, 2]" if self.path != "/short" else b"x" * 50
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100" if self.path == "/short" else str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = self.path in ("/short", "/hang-up")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Running:
    name = "stub"

    def running(self) -> bool:
        return True


@pytest.fixture
def answers() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_send_checks_the_body_and_reuses_or_reopens_the_connection(answers: str) -> None:
    """The client reads answers into its buffer: a body shorter than its Content-Length is an
    error (no status), a keep-alive connection serves the next request, and a connection the
    server closed, said or not, is opened anew. Every request asks for no content coding."""
    bench = run.Bench(None, {"stub": _Running()}, run.Settings())  # type: ignore[arg-type]
    _Answers.encodings.clear()

    first = bench.send("stub", "GET", f"{answers}/items", {}, count_items=True)
    assert (first.status, first.nbytes, first.items) == (200, 6, 2)
    kept_alive = bench.connections["stub"].sock
    assert kept_alive is not None
    assert bench.send("stub", "GET", f"{answers}/items", {}).status == 200
    assert bench.connections["stub"].sock is kept_alive
    short = bench.send("stub", "GET", f"{answers}/short", {})
    assert short.status is None and "50 bytes short, after 50" in short.error
    assert bench.send("stub", "GET", f"{answers}/hang-up", {}).status == 200
    hung_up = bench.connections["stub"].sock
    assert hung_up is not None and select.select([hung_up], [], [], 30)[0]  # closed by now
    again = bench.send("stub", "GET", f"{answers}/items?x=1", {}, count_items=True)
    assert (again.status, again.items) == (200, 2)
    assert bench.connections["stub"].sock not in (None, hung_up)
    assert _Answers.encodings == ["identity"] * 5
