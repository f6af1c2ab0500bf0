"""The local server's edge for real: Basic authentication with real clients, refusal to listen
beyond loopback without it, the body limit before reading."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from chalicelib.server.localserver import is_loopback
from tests.conftest import REPO
from tests.corpus import storable
from tests.server.test_localserver import local_server

USERS = {"viewer": "viewer-secret", "admin": "admin-secret"}
CONFIG = {
    "AuthenticationEnabled": True,
    "RegisteredUsers": USERS,
    "DicomWeb": {"UserScopes": {"viewer": ["read"]}, "MaxRequestBody": 2_000_000},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with local_server(tmp_path_factory.mktemp("authserver"), config=CONFIG) as url:
        yield url


def test_dicomweb_client_with_basic_credentials(server: str) -> None:
    files = [f for f in storable() if len(f.data) < 1_000_000][:2]
    assert files
    datasets = [dcmread(io.BytesIO(f.data)) for f in files]
    admin = requests.Session()
    admin.auth = ("admin", USERS["admin"])
    DICOMwebClient(url=f"{server}/dicom-web", session=admin).store_instances(datasets)

    viewer = requests.Session()
    viewer.auth = ("viewer", USERS["viewer"])
    client = DICOMwebClient(url=f"{server}/dicom-web", session=viewer)
    found = {d["0020000D"]["Value"][0] for d in client.search_for_studies()}
    assert str(datasets[0].StudyInstanceUID) in found
    with pytest.raises(requests.HTTPError) as raised:
        client.store_instances(datasets[:1])
    assert raised.value.response.status_code == 403

    anonymous = requests.get(f"{server}/dicom-web/studies", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")


def test_body_over_the_limit_is_413_before_reading(server: str) -> None:
    response = requests.post(
        f"{server}/dicom-web/studies",
        data=b"\0" * 2_000_001,
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
        auth=("admin", USERS["admin"]),
        timeout=30,
    )
    assert response.status_code == 413
    assert "DicomWeb.MaxRequestBody" in response.json()["Message"]

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield b"\0" * 1_000_000

    response = requests.post(
        f"{server}/dicom-web/studies",
        data=chunks(),
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
        auth=("admin", USERS["admin"]),
        timeout=30,
    )
    assert response.status_code == 413


def test_refuses_other_address_without_authentication(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("DICOMWEB_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chalicelib.server.localserver",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 with authentication off" in result.stderr
    assert "AuthenticationEnabled" in result.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
