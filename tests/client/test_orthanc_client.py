"""Our client against a real Orthanc with its DICOMweb plugin, and Orthanc's client against
us: STOW and retrieve jobs both ways, byte-identical under transfer-syntax=*."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.client.test_two_servers import (
    Instance,
    instance_count,
    multi_series_study,
    post,
    store,
    stored_bytes,
)
from tests.peers import OrthancPeer, free_port, require_orthanc
from tests.server.test_localserver import local_server


def unchanged(study: list[Instance]) -> list[Instance]:
    """Instances whose bytes every WADO-RS of ours returns as stored (DESIGN.md: never
    Implicit VR LE or Explicit VR BE)."""
    return [
        i
        for i in study
        if b"1.2.840.10008.1.2\x00" not in i.data[:400]
        and b"1.2.840.10008.1.2.2\x00" not in i.data[:400]
    ]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[str, OrthancPeer]]:
    """Our server knowing Orthanc as "orthanc", Orthanc knowing us as "ours"."""
    require_orthanc()
    port = free_port()
    ours = f"http://127.0.0.1:{port}"
    with OrthancPeer({"ours": [f"{ours}/dicom-web/"]}) as orthanc:
        config = {"DicomWeb": {"Servers": {"orthanc": [f"{orthanc.dicomweb_url}/"]}}}
        with local_server(tmp_path / "ours", port, config):
            yield ours, orthanc


def test_our_jobs_with_orthanc(peers: tuple[str, OrthancPeer]) -> None:
    ours, orthanc = peers
    study = multi_series_study()
    store(ours, study)
    uid = study[0].study
    response = post(ours, "/servers/orthanc/stow", {"Resources": [{"Study": uid}]})
    assert response.status_code == 200, response.text
    assert response.json()["InstancesCount"] == str(len(study))
    assert len(requests.get(f"{orthanc.url}/instances", timeout=10).json()) == len(study)
    # Delete here, retrieve back from Orthanc: the same bytes.
    assert requests.delete(f"{ours}/dicom-web/studies/{uid}", timeout=10).status_code == 204
    response = post(ours, "/servers/orthanc/retrieve", {"Resources": [{"Study": uid}]})
    assert response.status_code == 200, response.text
    assert response.json()["ReceivedInstancesCount"] == str(len(study))
    assert instance_count(ours, uid) == len(study)
    assert len(unchanged(study)) >= 3
    for instance in unchanged(study):
        assert stored_bytes(ours, instance) == instance.data, instance.sop

    answer = post(
        ours, "/servers/orthanc/qido", {"Uri": "/studies", "Arguments": {"StudyInstanceUID": uid}}
    )
    assert answer.status_code == 200
    (found,) = answer.json()
    assert found["0020000D"] == {
        "Group": 0x20,
        "Element": 0x0D,
        "Name": "StudyInstanceUID",
        "vr": "UI",
        "Value": uid,
    }
    # A comma in Arguments reaches Orthanc unencoded: it answers 400 to `viewport=64%2C64`.
    rendered = post(
        ours,
        "/servers/orthanc/get",
        {"Uri": f"/studies/{uid}/rendered", "Arguments": {"viewport": "64,64"}},
    )
    assert rendered.status_code == 200, rendered.text
    assert rendered.headers["Content-Type"].startswith("image/")


def test_orthanc_client_against_us(peers: tuple[str, OrthancPeer]) -> None:
    ours, orthanc = peers
    study = multi_series_study()
    uid = study[0].study
    for instance in study:
        assert requests.post(f"{orthanc.url}/instances", data=instance.data, timeout=30).ok
    orthanc_study = requests.post(f"{orthanc.url}/tools/lookup", data=uid, timeout=10).json()[0][
        "ID"
    ]
    client = f"{orthanc.dicomweb_url}/servers/ours"
    response = requests.post(f"{client}/stow", json={"Resources": [orthanc_study]}, timeout=120)
    assert response.status_code == 200, response.text
    assert instance_count(ours, uid) == len(study)
    for instance in unchanged(study):
        assert stored_bytes(ours, instance) == instance.data, instance.sop

    response = requests.post(f"{client}/qido", json={"Uri": "/studies"}, timeout=30)
    assert response.status_code == 200 and uid in response.text
    response = requests.post(f"{client}/get", json={"Uri": f"/studies/{uid}/series"}, timeout=30)
    assert response.status_code == 200 and len(response.json()) == len(study)

    assert requests.delete(f"{orthanc.url}/studies/{orthanc_study}", timeout=10).ok
    response = requests.post(
        f"{client}/retrieve", json={"Resources": [{"Study": uid}]}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert len(requests.get(f"{orthanc.url}/instances", timeout=10).json()) == len(study)
