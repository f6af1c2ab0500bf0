"""`make run-moto` for real: the local server on the AWS adapters against in-process moto."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import testdata
from tests.server.test_localserver import local_server

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=B'


def _instance(template: bytes, study: str, series: str) -> bytes:
    ds = dcmread(io.BytesIO(template))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_concurrent_stows_into_one_study(tmp_path: Path) -> None:
    """moto's in-process backends are not thread-safe (a DynamoDB TransactWriteItems deep-copies
    the table while another request changes it: RuntimeError, a 503 or 500), and the server
    answers requests on many threads: 8 clients storing into one study at once must all be
    stored and counted."""
    template = testdata("TransferSyntaxes/1.2.840.10008.1.2.1.dcm").read_bytes()
    study = generate_uid()
    bodies = [
        b"".join(
            b"--B\r\nContent-Type: application/dicom\r\n\r\n"
            + _instance(template, study, series)
            + b"\r\n"
            for series in [generate_uid()] * 3
        )
        + b"--B--\r\n"
        for _ in range(32)
    ]
    with local_server(tmp_path, module="chalicelib.server.motoserver") as url:
        root = f"{url}/dicom-web"

        def store(body: bytes) -> int:
            answer = requests.post(
                f"{root}/studies", data=body, headers={"Content-Type": STOW_TYPE}, timeout=120
            )
            return answer.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(store, bodies))
        found = requests.get(f"{root}/studies?StudyInstanceUID={study}", timeout=60)
        listed = requests.get(f"{root}/studies/{study}/instances", timeout=60)
    assert statuses == [200] * len(bodies)
    assert found.json()[0]["00201208"]["Value"] == [3 * len(bodies)]
    assert len(listed.json()) == 3 * len(bodies)
