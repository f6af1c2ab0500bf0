"""The Orthanc peer harness: start a private Orthanc, store one file with STOW-RS, find it.

The `orthanc` fixture comes from `tests.peers`, which tests/conftest.py loads as a plugin.
"""

from __future__ import annotations

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests import conftest
from tests.peers import OrthancPeer

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
    assert requests.get(f"{orthanc.url}/system", timeout=5).json()["Name"] == "orthanc-peer"
