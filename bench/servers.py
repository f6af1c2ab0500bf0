"""The servers under test: Orthanc (Debian packages, via `tests.peers`) and ours (local mode).

Each runs as its own process on a free loopback port with temporary storage, so the benchmark
can read its peak resident set size (VmHWM) from /proc.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import requests

from tests.peers import INSTALL_HINT, OrthancPeer, free_port, orthanc_available

SERVER_NAMES = ("orthanc", "ours")
OUR_MODULE = "chalicelib.server.localserver"
REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchServer(Protocol):
    """What the benchmark needs from a running server."""

    name: str
    dicomweb_url: str
    wado_uri_url: str
    pid: int
    startup_seconds: float

    def running(self) -> bool:
        """True while the server process is alive."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the result file (version, startup time, ...)."""
        ...

    def stop(self) -> None:
        """Stop the process and remove its storage."""
        ...


def unavailable_reason(name: str) -> str | None:
    """Why server `name` cannot run here, or None when it can."""
    if name not in SERVER_NAMES:
        return f"unknown server {name!r}; choose from {', '.join(SERVER_NAMES)}"
    if name == "orthanc" and not orthanc_available():
        return f"Orthanc is not installed: {INSTALL_HINT}"
    if name == "ours" and importlib.util.find_spec(OUR_MODULE) is None:
        return f"{OUR_MODULE} does not exist yet"
    return None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM in /proc/PID/status) in MiB, None if unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


class OrthancServer:
    """Orthanc with the DICOMweb plugin, default settings otherwise."""

    name = "orthanc"

    def __init__(self) -> None:
        self.peer = OrthancPeer().start()
        self.dicomweb_url = self.peer.dicomweb_url
        self.wado_uri_url = self.peer.wado_uri_url
        self.pid = self.peer.pid
        self.startup_seconds = self.peer.startup_seconds or 0.0

    def running(self) -> bool:
        return self.peer.running()

    def describe(self) -> dict[str, Any]:
        system = requests.get(f"{self.peer.url}/system", timeout=10).json()
        return {
            "version": system.get("Version"),
            "plugin": str(self.peer.plugin),
            "startup_s": self.startup_seconds,
        }

    def stop(self) -> None:
        self.peer.stop()


class OurServer:
    """Our server in local mode: `python -m chalicelib.server.localserver --port --data-dir`."""

    name = "ours"

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-ours-"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.dicomweb_url = f"{url}/dicom-web"
        self.wado_uri_url = f"{url}/wado"
        command = [sys.executable, "-m", OUR_MODULE, "--port", str(port)]
        command += ["--data-dir", str(self.workdir / "data")]
        began = time.perf_counter()
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.pid = self.process.pid
        try:
            self._wait_until_listening(began + startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began

    def _wait_until_listening(self, deadline: float) -> None:
        """Wait until any HTTP answer comes back (a 404 or 501 still means it is up)."""
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"our server exited with {self.process.returncode}:\n{self._log()}"
                )
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.dicomweb_url}/studies", timeout=2)
                return
            time.sleep(0.05)
        raise RuntimeError(f"our server did not answer in time:\n{self._log()}")

    def _log(self, lines: int = 20) -> str:
        text = (self.workdir / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> dict[str, Any]:
        return {"module": OUR_MODULE, "startup_s": self.startup_seconds}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_server(name: str) -> BenchServer:
    """Start server `name` (see `SERVER_NAMES`); `unavailable_reason` says if it can run."""
    return OrthancServer() if name == "orthanc" else OurServer()
