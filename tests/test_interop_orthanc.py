"""Interop with a real peer: Orthanc 1.10 + its DICOMweb plugin, as client and as reference.

Orthanc's DICOMweb client (`/dicom-web/servers/{name}/stow` and `/retrieve`) talks to our
local server; Orthanc's own identifiers are the reference for ours.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from chalicelib.dicom.ids import orthanc_ids
from tests.corpus import storable
from tests.peers import OrthancPeer, require_orthanc
from tests.server.test_localserver import local_server

pytestmark = pytest.mark.interop

NAMES = ("2020-08-12-Christopher.dcm", "Encodings/DavidClunie/SCSX1", "PrivateTags.dcm")


def _upload(peer: OrthancPeer, data: bytes) -> str:
    answer = requests.post(f"{peer.url}/instances", data=data, timeout=30)
    answer.raise_for_status()
    return answer.json()["ID"]


def test_orthanc_ids_match_orthanc(orthanc: OrthancPeer) -> None:
    items = [f for f in storable() if f.name in NAMES]
    assert sorted(f.name for f in items) == sorted(NAMES)
    for item in items:
        instance_id = _upload(orthanc, item.data)
        info = requests.get(f"{orthanc.url}/instances/{instance_id}", timeout=30).json()
        series = requests.get(f"{orthanc.url}/series/{info['ParentSeries']}", timeout=30).json()
        study = requests.get(f"{orthanc.url}/studies/{series['ParentStudy']}", timeout=30).json()
        patient_id = str(dcmread(io.BytesIO(item.data)).get("PatientID", ""))
        ours = orthanc_ids(patient_id, item.study_uid, item.series_uid, item.sop_uid)
        assert ours == {
            "patient": study["ParentPatient"],
            "study": series["ParentStudy"],
            "series": info["ParentSeries"],
            "instance": instance_id,
        }, item.name


def test_orthanc_stows_to_us_and_retrieves_from_us(tmp_path: Path) -> None:
    """Orthanc as a DICOMweb client of our server: STOW-RS out, WADO-RS back in."""
    require_orthanc()
    items = [f for f in storable() if f.name in NAMES]
    with local_server(tmp_path / "ours") as ours:
        servers = {"ours": {"Url": f"{ours}/dicom-web/", "HasDelete": False}}
        with OrthancPeer(servers=servers) as sender:
            ids = [_upload(sender, item.data) for item in items]
            job = requests.post(
                f"{sender.url}/dicom-web/servers/ours/stow",
                json={"Resources": ids, "Synchronous": True},
                timeout=120,
            )
            assert job.status_code == 200, job.text
        for item in items:
            answer = requests.get(
                f"{ours}/dicom-web/studies/{item.study_uid}/series/{item.series_uid}"
                f"/instances/{item.sop_uid}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
                timeout=30,
            )
            assert answer.status_code == 200
            assert dcmread(io.BytesIO(item.data)).PixelData in answer.content

        with OrthancPeer(servers=servers) as receiver:
            for item in items:
                retrieve = requests.post(
                    f"{receiver.url}/dicom-web/servers/ours/retrieve",
                    json={
                        "Resources": [
                            {
                                "Study": item.study_uid,
                                "Series": item.series_uid,
                                "Instance": item.sop_uid,
                            }
                        ],
                        "Synchronous": True,
                    },
                    timeout=120,
                )
                assert retrieve.status_code == 200, retrieve.text
            stored = requests.get(f"{receiver.url}/instances?expand", timeout=30).json()
            got = {i["MainDicomTags"]["SOPInstanceUID"] for i in stored}
            assert got == {item.sop_uid for item in items}
