"""Side-by-side DICOMweb benchmark of our server and Orthanc; see bench/README.md.

    .venv/bin/python -m bench.run --servers orthanc,ours --repeats 10 --warmup 2

Both servers get the same bytes: STOW-RS bodies are built once per batch and sent to each, every
request carries `Accept-Encoding: identity` (http.client's default), and the servers alternate
in time (per batch for ingest, per round for the other rows). A row a server does not support
is recorded as n/a with its status code. The result goes to `bench/results/<UTC timestamp>.json`,
its chart beside it (`.png`, bench/chart.py), and the table to stdout (Markdown).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import select
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.chart import draw
from bench.dataset import DatasetSpec, Instance, Manifest, load_or_generate
from bench.report import markdown
from bench.rows import JSON, Row, read_rows
from bench.servers import BenchServer, peak_rss_mb, start_server, unavailable_reason

BENCH_DIR = Path(__file__).resolve().parent
BOUNDARY = "bench-boundary-5f0c3a7e9d1b"
READ_BLOCK = 1 << 20
"""Answers are read into one reused buffer of this size and counted, not kept (but for errors
and item counts). With requests' `iter_content` (a fresh bytes object per block, through
urllib3's decoder buffers) this client spent 11-15 ms of CPU on a 52.6 MB series, on the
cores the server shares; `readinto` of a reused buffer spends 8-9."""
MB = 1e6
SPEEDUP_NOTE = (
    "orthanc/ours: Orthanc's median time per request (peak RSS: MiB) divided by ours;"
    " above 1 means ours is faster/smaller"
)


@dataclass(frozen=True)
class Settings:
    """How many times to measure, and how ingest is batched."""

    repeats: int = 10
    warmup: int = 2
    rounds: int = 3
    batch_size: int = 20
    timeout: float = 300.0


@dataclass
class Sample:
    """The outcome of one timed request."""

    status: int | None
    seconds: float
    nbytes: int = 0
    content_type: str = ""
    items: int | None = None
    error: str = ""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (with few samples, p95 is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(seconds: list[float]) -> dict[str, Any]:
    """Median, p95 and minimum in milliseconds."""
    return {
        "median_ms": statistics.median(seconds) * 1000,
        "p95_ms": percentile(seconds, 0.95) * 1000,
        "min_ms": min(seconds) * 1000,
        "samples": len(seconds),
    }


def not_available(sample: Sample) -> dict[str, Any]:
    """The result of a row the server does not support (or failed)."""
    return {"na": True, "status": sample.status, "error": sample.error}


def row_result(row_id: str, title: str, unit: str, results: dict[str, Any]) -> dict[str, Any]:
    """A row of the result file, with the speed-up orthanc/ours when both have a figure."""
    speedup = None
    ours, orthanc = results.get("ours", {}), results.get("orthanc", {})
    key = "value" if unit == "MiB" else "median_ms"
    if key in ours and key in orthanc and ours[key]:
        speedup = orthanc[key] / ours[key]
    return {"id": row_id, "title": title, "unit": unit, "results": results, "speedup": speedup}


def alternate(names: list[str], turn: int) -> list[str]:
    """Server order for turn `turn`: as given on even turns, reversed on odd ones."""
    return names if turn % 2 == 0 else names[::-1]


def multipart_body(files: Iterable[bytes]) -> bytes:
    """A multipart/related body of application/dicom parts (PS3.18 §10.5, Store Transaction)."""
    chunks: list[bytes] = []
    for data in files:
        if BOUNDARY.encode() in data:
            raise ValueError(f"boundary {BOUNDARY!r} occurs in an instance; change BOUNDARY")
        chunks += [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data]
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def batched(items: list[Instance], size: int) -> Iterator[list[Instance]]:
    """Consecutive slices of `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Bench:
    """Runs every row against every server and collects the results."""

    def __init__(
        self, manifest: Manifest, servers: dict[str, BenchServer], settings: Settings
    ) -> None:
        self.manifest = manifest
        self.servers = servers
        self.names = list(servers)
        self.settings = settings
        self.connections: dict[str, http.client.HTTPConnection] = {}
        self.buffer = memoryview(bytearray(READ_BLOCK))

    def connection(self, name: str, url: str) -> http.client.HTTPConnection:
        """The keep-alive connection to server `name`, opened anew if the server closed it
        while it was idle (what requests' pool checks before reusing one)."""
        connection = self.connections.get(name)
        if connection is None:
            connection = http.client.HTTPConnection(
                urlsplit(url).netloc, timeout=self.settings.timeout
            )
            self.connections[name] = connection
        elif connection.sock is not None and select.select([connection.sock], [], [], 0)[0]:
            connection.close()  # readable while idle: the server closed it (http.client reopens)
        return connection

    def send(
        self,
        name: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        count_items: bool = False,
    ) -> Sample:
        """Time one request to server `name`, including reading the whole answer (into
        `buffer`: counted, kept only to count items or show an error)."""
        began = time.perf_counter()
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        connection = self.connection(name, url)
        try:
            connection.request(method, target, body, headers)
            response = connection.getresponse()
            keep = count_items or response.status != 200
            size, kept = 0, []
            while count := response.readinto(self.buffer):
                size += count
                if keep:
                    kept.append(bytes(self.buffer[:count]))
            if response.length:  # readinto ends quietly where a body is shorter than announced
                missing = f"the body ended {response.length} bytes short, after {size}"
                raise http.client.HTTPException(missing)
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            alive = "" if self.servers[name].running() else " (server exited)"
            return Sample(None, time.perf_counter() - began, error=f"{error}{alive}")
        seconds = time.perf_counter() - began
        content = b"".join(kept)
        sample = Sample(response.status, seconds, size, response.getheader("Content-Type", ""))
        if response.status != 200:
            sample.error = content[:200].decode("utf-8", "replace")
        elif count_items:
            sample.items = len(json.loads(content))
        return sample

    def ingest(self) -> dict[str, Any]:
        """STOW-RS every instance in batches; the two servers alternate batch by batch."""
        times: dict[str, list[float]] = {name: [] for name in self.names}
        failed: dict[str, Sample] = {}
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Accept": JSON,
        }
        for name in self.names:  # open the keep-alive connections before timing
            self.send(name, "GET", f"{self.servers[name].dicomweb_url}/studies", {"Accept": JSON})
        batches = batched(self.manifest.instances, self.settings.batch_size)
        for turn, batch in enumerate(batches):
            body = multipart_body(self.manifest.path(item).read_bytes() for item in batch)
            for name in alternate(self.names, turn):
                if name in failed:
                    continue
                url = f"{self.servers[name].dicomweb_url}/studies"
                sample = self.send(name, "POST", url, headers, body)
                if sample.status == 200:
                    times[name].append(sample.seconds)
                else:
                    failed[name] = sample
        results: dict[str, Any] = {}
        for name in self.names:
            if name in failed:
                results[name] = not_available(failed[name])
                continue
            total = sum(times[name])
            results[name] = summarize(times[name]) | {
                "status": 200,
                "instances_per_s": len(self.manifest.instances) / total,
                "mb_per_s": self.manifest.total_bytes / total / MB,
                "total_s": total,
            }
        count = len(self.manifest.instances)
        title = f"STOW-RS ingest, {self.settings.batch_size} per request ({count} instances)"
        return row_result("stow_rs", title, "ms per request", results)

    def measure(self, row: Row) -> dict[str, Any]:
        """Rounds of warm-up + repeats per server, alternating; each side keeps its best median."""
        best: dict[str, dict[str, Any]] = {}
        missing: dict[str, dict[str, Any]] = {}
        counters = dict.fromkeys(self.names, 0)
        for turn in range(self.settings.rounds):
            for name in alternate(self.names, turn):
                if name in missing:
                    continue
                round_result = self.measure_round(name, row, counters)
                if round_result.get("na"):
                    missing[name] = round_result
                elif name not in best or round_result["median_ms"] < best[name]["median_ms"]:
                    best[name] = round_result
        results = {name: missing.get(name) or best[name] for name in self.names}
        return row_result(row.id, row.title, "ms per request", results)

    def measure_round(self, name: str, row: Row, counters: dict[str, int]) -> dict[str, Any]:
        """One round of `row` on server `name`: warm-up requests, then timed repeats."""
        seconds: list[float] = []
        last = Sample(None, 0.0)
        for index in range(self.settings.warmup + self.settings.repeats):
            call = row.call(counters[name])
            counters[name] += 1
            server = self.servers[name]
            base = server.wado_uri_url if call.wado_uri else server.dicomweb_url
            last = self.send(
                name, "GET", base + call.path, {"Accept": call.accept}, None, row.count_items
            )
            if last.status != 200:
                return not_available(last)
            if index >= self.settings.warmup:
                seconds.append(last.seconds)
        result = summarize(seconds) | {
            "status": last.status,
            "bytes": last.nbytes,
            "content_type": last.content_type,
        }
        if row.throughput:
            result["mb_per_s"] = last.nbytes / (result["median_ms"] / 1000) / MB
        if row.count_items:
            result["items"] = last.items
        return result

    def peak_rss(self) -> dict[str, Any]:
        """Peak resident set size of each server process over the whole run."""
        results: dict[str, Any] = {}
        for name, server in self.servers.items():
            value = peak_rss_mb(server.pid)
            results[name] = (
                {"na": True, "status": None, "error": "no /proc"}
                if value is None
                else {"value": value}
            )
        return row_result("peak_rss", "Peak RSS of the server process (VmHWM)", "MiB", results)

    def run(self, progress: Callable[[str], None]) -> list[dict[str, Any]]:
        """All rows in order: ingest, reads, then peak RSS."""
        progress("stow_rs")
        rows = [self.ingest()]
        for row in read_rows(self.manifest):
            progress(row.id)
            rows.append(self.measure(row))
        rows.append(self.peak_rss())
        return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see bench/README.md."""
    spec = DatasetSpec()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=spec.studies)
    parser.add_argument("--series-per-study", type=int, default=spec.series_per_study)
    parser.add_argument("--instances-per-series", type=int, default=spec.instances_per_series)
    parser.add_argument("--multiframe-frames", type=int, default=spec.multiframe_frames)
    parser.add_argument("--jpeg-instances", type=int, default=spec.jpeg_instances)
    parser.add_argument("--seed", type=int, default=spec.seed)
    parser.add_argument("--repeats", type=int, default=Settings.repeats, help="timed per round")
    parser.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed per round")
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--servers", default="orthanc,ours", help="comma-separated: orthanc,ours")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/<UTC>.json)")
    parser.add_argument("--cache", type=Path, default=BENCH_DIR / ".cache", help="data sets")
    parser.add_argument(
        "--scale",
        type=Path,
        default=max((BENCH_DIR / "results").glob("scale-*.json"), default=None),
        help="a bench.scale result whose curves the chart shows (default: the newest)",
    )
    args = parser.parse_args(argv)
    if min(args.studies, args.series_per_study, args.instances_per_series, args.repeats) < 1:
        parser.error("--studies, --series-per-study, --instances-per-series, --repeats must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 when a requested server cannot run here."""
    args = parse_args(argv)
    names = [name.strip() for name in args.servers.split(",") if name.strip()]
    problems = [f"{name}: {reason}" for name in names if (reason := unavailable_reason(name))]
    if problems or not names:
        print("cannot run:", *problems or ["no server given"], sep="\n  ", file=sys.stderr)
        return 2
    spec = DatasetSpec(
        studies=args.studies,
        series_per_study=args.series_per_study,
        instances_per_series=args.instances_per_series,
        multiframe_frames=args.multiframe_frames,
        jpeg_instances=args.jpeg_instances,
        seed=args.seed,
    )
    settings = Settings(args.repeats, args.warmup, args.rounds, args.batch_size)
    started = datetime.datetime.now(datetime.UTC)
    manifest = load_or_generate(spec, args.cache)
    print(f"data set: {len(manifest.instances)} instances in {manifest.directory}", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        servers: dict[str, BenchServer] = {}
        for name in names:
            servers[name] = start_server(name)
            stack.callback(servers[name].stop)
        rows = Bench(manifest, servers, settings).run(
            lambda row_id: print(f"  {row_id}", file=sys.stderr, flush=True)
        )
        described = {name: server.describe() for name, server in servers.items()}
    result = {
        "started_utc": started.isoformat(timespec="seconds"),
        "duration_s": (datetime.datetime.now(datetime.UTC) - started).total_seconds(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "settings": asdict(settings),
        "dataset": asdict(spec)
        | {"instances": len(manifest.instances), "bytes": manifest.total_bytes},
        "servers": described,
        "speedup": SPEEDUP_NOTE,
        "rows": rows,
    }
    out = args.out or BENCH_DIR / "results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    scale = json.loads(args.scale.read_text()) if args.scale else None
    chart = draw(result, out.with_suffix(".png"), scale)
    print(markdown(result))
    curves = f" (scale curves: {args.scale})" if args.scale else ""
    print(f"\nwritten to {out} and {chart}{curves}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
