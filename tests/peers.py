"""Real DICOMweb peers for interop tests and the benchmark: Orthanc from Debian's packages.

`OrthancPeer` runs its own `/usr/sbin/Orthanc` with a private configuration, storage and index in
a temporary directory, on a free loopback port, never the Debian service. The `orthanc` fixture
wraps it with the project's skip policy: skip when Orthanc is not installed, fail under `CI=true`
(where `apt-get install -y orthanc orthanc-dicomweb` is part of the job).

Orthanc 1.10 cannot choose its listen address (it binds every interface), so the configuration
keeps `"RemoteAccessAllowed": false`: only loopback clients get an answer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests

ORTHANC_PACKAGE = "orthanc"
DICOMWEB_PACKAGE = "orthanc-dicomweb"
INSTALL_HINT = "apt-get install orthanc orthanc-dicomweb"


@functools.cache
def _package_files(package: str) -> tuple[str, ...]:
    """Files installed by a Debian package, empty when dpkg or the package is absent."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line for line in listing.splitlines() if line.strip())


def orthanc_binary() -> Path | None:
    """The Orthanc server executable installed by the `orthanc` package, if any."""
    for name in _package_files(ORTHANC_PACKAGE):
        path = Path(name)
        if path.name == "Orthanc" and path.parent.name in ("sbin", "bin") and path.is_file():
            return path
    return None


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin library installed by `orthanc-dicomweb`, if any."""
    for name in _package_files(DICOMWEB_PACKAGE):
        path = Path(name)
        if path.name.startswith("libOrthancDicomWeb.so") and path.is_file():
            return path.resolve()
    return None


def orthanc_available() -> bool:
    """True when both the Orthanc server and its DICOMweb plugin are installed."""
    return orthanc_binary() is not None and dicomweb_plugin() is not None


def free_port() -> int:
    """A TCP port free on loopback now (another process may still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A loopback port that refuses connections for the rest of the session: bound, never
    listening, and kept so, where a `free_port()` standing for a server that is down may be
    taken by another pytest-xdist worker's (or another checkout's) server meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return int(sock.getsockname()[1])


class OrthancPeer:
    """A private Orthanc process with the DICOMweb plugin, as a context manager.

    `servers` becomes `DicomWeb.Servers` (Orthanc manual: `{"name": {"Url": ..., ...}}` or
    `{"name": ["url"]}`), so this Orthanc can call our server as a remote. `config` is merged
    over the top level of the generated configuration for anything else.
    """

    def __init__(
        self,
        servers: dict[str, Any] | None = None,
        *,
        dicom_server: bool = False,
        config: dict[str, Any] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        binary, plugin = orthanc_binary(), dicomweb_plugin()
        if binary is None or plugin is None:
            raise RuntimeError(f"Orthanc peer missing: {INSTALL_HINT}")
        self.binary = binary
        self.plugin = plugin
        self.servers = servers or {}
        self.dicom_server = dicom_server
        self.extra_config = config or {}
        self.startup_timeout = startup_timeout
        self.port = 0
        self.dicom_port: int | None = None
        self.startup_seconds: float | None = None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of Orthanc's REST API, e.g. `http://127.0.0.1:8042`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root of the plugin, without a trailing slash."""
        return f"{self.url}/dicom-web"

    @property
    def wado_uri_url(self) -> str:
        """WADO-URI endpoint of the plugin (`DicomWeb.WadoRoot`)."""
        return f"{self.url}/wado"

    @property
    def pid(self) -> int:
        """Process id of the running Orthanc."""
        if self._process is None:
            raise RuntimeError("Orthanc is not running")
        return self._process.pid

    @property
    def name(self) -> str:
        """Orthanc's `Name`, unique to this peer (its workdir's): `GET /system` tells it from
        another worker's Orthanc that took the same port."""
        assert self._workdir is not None
        return self._workdir.name

    def running(self) -> bool:
        """True while the Orthanc process is alive."""
        return self._process is not None and self._process.poll() is None

    def configuration(self) -> dict[str, Any]:
        """The Orthanc JSON configuration this peer runs with."""
        assert self._workdir is not None
        config: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self._workdir / "storage"),
            "IndexDirectory": str(self._workdir / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": self.dicom_server,
            "Plugins": [str(self.plugin)],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                "Servers": self.servers,
            },
        }
        if self.dicom_port is not None:
            config["DicomPort"] = self.dicom_port
        config.update(self.extra_config)
        return config

    def start(self) -> OrthancPeer:
        """Write the configuration, start Orthanc and wait until `GET /system` answers."""
        self._workdir = Path(tempfile.mkdtemp(prefix="orthanc-peer-"))
        try:
            for _attempt in range(3):
                self.port = free_port()
                self.dicom_port = free_port() if self.dicom_server else None
                if self._launch():
                    return self
            raise RuntimeError(f"Orthanc did not start:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> bool:
        """Start one Orthanc process; False if it exited early (e.g. a port was taken)."""
        assert self._workdir is not None
        config_path = self._workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.configuration(), indent=2))
        began = time.perf_counter()
        with (self._workdir / "orthanc.log").open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
            )
        deadline = began + self.startup_timeout
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            with contextlib.suppress(requests.RequestException):
                system = requests.get(f"{self.url}/system", timeout=2)
                if system.status_code == 200 and system.json().get("Name") == self.name:
                    self.startup_seconds = time.perf_counter() - began
                    return True
            time.sleep(0.02)
        raise RuntimeError(
            f"Orthanc did not answer GET /system within {self.startup_timeout} s:\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of Orthanc's log, for error messages."""
        if self._workdir is None or not (self._workdir / "orthanc.log").exists():
            return "(no log)"
        text = (self._workdir / "orthanc.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop Orthanc (terminate, then kill after 10 s) and remove the temporary directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> OrthancPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def require_orthanc() -> None:
    """Skip the current test when Orthanc is missing, or fail it when `CI=true`."""
    if orthanc_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Orthanc peer missing: {INSTALL_HINT}")
    pytest.skip(f"Orthanc peer missing: {INSTALL_HINT}")


@pytest.fixture
def orthanc() -> Iterator[OrthancPeer]:
    """A fresh, empty Orthanc with the DICOMweb plugin, stopped after the test."""
    require_orthanc()
    with OrthancPeer() as peer:
        yield peer
