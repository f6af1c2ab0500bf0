"""The Orthanc peer harness: start a private Orthanc, store one file with STOW-RS, find it.

The `orthanc` fixture comes from `tests.peers`, which tests/conftest.py loads as a plugin.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests import conftest
from tests.client.loopback import answer, loopback_server
from tests.peers import OrthancPeer, refused_port, require_orthanc

CHRISTOPHER = "2020-08-12-Christopher.dcm"


@pytest.mark.interop
def test_orthanc_store_and_search(orthanc: OrthancPeer) -> None:
    dataset = pydicom.dcmread(conftest.testdata(CHRISTOPHER))
    client = DICOMwebClient(url=orthanc.dicomweb_url)

    answer = client.store_instances([dataset])

    assert orthanc.startup_seconds is not None and orthanc.startup_seconds < 30
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    found = client.search_for_instances(
        study_instance_uid=dataset.StudyInstanceUID,
        search_filters={"SOPInstanceUID": dataset.SOPInstanceUID},
    )
    assert [item["00080018"]["Value"][0] for item in found] == [dataset.SOPInstanceUID]
    assert requests.get(f"{orthanc.url}/system", timeout=5).json()["Name"] == orthanc.name


@pytest.mark.interop
def test_another_server_on_the_chosen_port_is_not_taken_for_the_peer(tmp_path: Path) -> None:
    """Under pytest-xdist another worker's server may bind the port a peer chose: the peer
    took any 200 on /system as its own. Only its own Name is; its Orthanc, finding the port
    taken, exits and `start` tries another port."""
    require_orthanc()
    other = b'{"Name": "orthanc-peer-of-another-worker"}'
    with loopback_server(lambda handler: answer(handler, 200, other, "application/json")) as origin:
        peer = OrthancPeer()
        peer._workdir, peer.port = tmp_path, urlsplit(origin).port
        try:
            assert peer._launch() is False
        finally:
            peer._workdir = None  # tmp_path is pytest's to remove
            peer.stop()


def test_refused_port_refuses_and_cannot_be_taken() -> None:
    port = refused_port()
    with socket.socket() as caller, pytest.raises(ConnectionRefusedError):
        caller.connect(("127.0.0.1", port))
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))
