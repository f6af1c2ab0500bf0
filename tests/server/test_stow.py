"""STOW-RS over HTTP on both backends: store response, status codes, failures, re-stores."""

from __future__ import annotations

import pytest
from chalice.test import Client

from chalicelib.context import Context
from chalicelib.server.api import create_app
from chalicelib.storage.ports import NotFound
from tests.conftest import make_context, testdata
from tests.server.helpers import BOUNDARY, HOST, json_of, stow, stow_body, values

CT = "2020-08-12-Christopher.dcm"
CT_STUDY = "1.2.840.113704.9.1000.16.0.20190613103939444"
CT_SOP = "1.2.840.113704.9.1000.16.2.20190613104005642000100010001"


def _counts(context: Context, study: str) -> tuple[int, int]:
    record = context.index.get_study(study)
    return record.num_series, record.num_instances


def test_store_instances_one_file_200_with_retrieve_urls(client: Client) -> None:
    response = stow(client, testdata(CT).read_bytes())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    body = json_of(response)
    assert values(body, "00081190") == [f"http://{HOST}/dicom-web/studies/{CT_STUDY}"]
    (item,) = values(body, "00081199")
    assert values(item, "00081150") == ["1.2.840.10008.5.1.4.1.1.2"]
    assert values(item, "00081155") == [CT_SOP]
    assert values(item, "00081190")[0].endswith(f"/instances/{CT_SOP}")
    assert "00081198" not in body


def test_store_instances_restore_changes_no_count(client: Client, context: Context) -> None:
    data = testdata(CT).read_bytes()
    assert stow(client, data).status_code == 200
    before = _counts(context, CT_STUDY)
    again = stow(client, data)
    assert again.status_code == 200
    assert values(json_of(again), "00081199")
    assert _counts(context, CT_STUDY) == before == (1, 1)


@pytest.mark.parametrize("backend", ["local", "aws"], indirect=True)
def test_store_instances_overwrite_replaces_blob(backend: str, tmp_path) -> None:
    import io

    from pydicom import dcmread

    context = make_context(backend, tmp_path, overwrite_instances=True)
    client = Client(create_app(lambda: context))
    original = testdata(CT).read_bytes()
    ds = dcmread(io.BytesIO(original))
    ds.StudyDescription = "changed"
    changed = io.BytesIO()
    ds.save_as(changed)
    assert stow(client, original).status_code == 200
    old_key = context.index.get_instance(CT_STUDY, None, CT_SOP).blob_key
    assert stow(client, changed.getvalue()).status_code == 200
    record = context.index.get_instance(CT_STUDY, None, CT_SOP)
    assert record.blob_key != old_key
    assert context.blobs.get(record.blob_key) == changed.getvalue()
    assert not context.blobs.exists(old_key)
    assert _counts(context, CT_STUDY) == (1, 1)


def test_store_instances_kept_without_overwrite(client: Client, context: Context) -> None:
    import io

    from pydicom import dcmread

    original = testdata(CT).read_bytes()
    ds = dcmread(io.BytesIO(original))
    ds.StudyDescription = "changed"
    changed = io.BytesIO()
    ds.save_as(changed)
    stow(client, original)
    assert stow(client, changed.getvalue()).status_code == 200
    record = context.index.get_instance(CT_STUDY, None, CT_SOP)
    assert context.blobs.get(record.blob_key) == original


def test_store_instances_study_mismatch_409_0110(client: Client, context: Context) -> None:
    response = stow(client, testdata(CT).read_bytes(), study="1.2.3.4")
    assert response.status_code == 409
    (failed,) = values(json_of(response), "00081198")
    assert values(failed, "00081197") == [0x0110]
    assert values(failed, "00081155") == [CT_SOP]
    assert "does not match the study in the URL" in response.headers["Warning"]
    with pytest.raises(NotFound):
        context.index.get_study(CT_STUDY)


@pytest.mark.parametrize("study", ["..", "1.2.3abc", "1.2'OR'1", "9" * 65])
def test_store_instances_invalid_study_in_path_is_a_mismatch(client: Client, study: str) -> None:
    response = stow(client, testdata(CT).read_bytes(), study=study)
    assert response.status_code == 409
    (failed,) = values(json_of(response), "00081198")
    assert values(failed, "00081197") == [0x0110]


def test_store_instances_mixed_202(client: Client) -> None:
    response = stow(client, testdata(CT).read_bytes(), testdata("Issue196.dcm").read_bytes())
    assert response.status_code == 202
    body = json_of(response)
    assert len(values(body, "00081199")) == 1
    (failed,) = values(body, "00081198")
    assert values(failed, "00081197") == [0xC000]


def test_store_instances_only_sop_uids_400_with_failed_item(client: Client) -> None:
    """Issue196.dcm has only SOP Class and SOP Instance UIDs (Orthanc bug 196)."""
    response = stow(client, testdata("Issue196.dcm").read_bytes())
    assert response.status_code == 400
    (failed,) = values(json_of(response), "00081198")
    assert values(failed, "00081197") == [0xC000]
    assert "StudyInstanceUID is missing" in response.headers["Warning"]


def test_store_instances_no_sop_class_400_without_item(client: Client) -> None:
    """Issue111.dcm has no SOP Class UID: no failure item can name it (Orthanc bug 111)."""
    response = stow(client, testdata("Issue111.dcm").read_bytes())
    assert response.status_code == 400
    assert "00081198" not in (json_of(response) or {})
    assert "SOPClassUID is missing" in response.headers["Warning"]


@pytest.mark.parametrize(
    "part",
    [
        pytest.param(b"this is not DICOM at all", id="text"),
        pytest.param(b"", id="empty-part"),
        pytest.param(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI", id="truncated-meta"),
    ],
)
def test_store_instances_unreadable_part_400(client: Client, part: bytes) -> None:
    response = stow(client, part)
    assert response.status_code == 400
    assert "part 1:" in response.headers["Warning"]


def test_store_instances_truncated_pixel_data_400(client: Client, context: Context) -> None:
    data = testdata(CT).read_bytes()
    response = stow(client, data[: len(data) // 2])
    assert response.status_code == 400
    assert "truncated" in response.headers["Warning"]
    assert list(context.index.iter_studies()) == []


def test_store_instances_bad_input_keeps_stored_data(client: Client, context: Context) -> None:
    data = testdata(CT).read_bytes()
    stow(client, data)
    key = context.index.get_instance(CT_STUDY, None, CT_SOP).blob_key
    stow(client, data[:1000])
    stow(client, testdata(CT).read_bytes(), study="1.2.3")
    client.http.post("/dicom-web/studies", headers={"Content-Type": "text/plain"}, body=b"x")
    assert context.blobs.get(key) == data
    assert _counts(context, CT_STUDY) == (1, 1)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "text/plain",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "",
    ],
)
def test_store_instances_wrong_content_type_415(client: Client, content_type: str) -> None:
    headers = {"Accept": "application/dicom+json"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.http.post("/dicom-web/studies", headers=headers, body=b"x")
    assert response.status_code == 415
    assert json_of(response)["Message"]


def test_store_instances_missing_boundary_400(client: Client) -> None:
    response = client.http.post(
        "/dicom-web/studies",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
        body=stow_body(testdata(CT).read_bytes()),
    )
    assert response.status_code == 400
    assert "boundary" in json_of(response)["Message"]


def test_store_instances_empty_body_400(client: Client) -> None:
    response = client.http.post(
        "/dicom-web/studies", headers={"Content-Type": 'multipart/related; boundary="b"'}, body=b""
    )
    assert response.status_code == 400


def test_store_instances_unquoted_type_and_quoted_boundary(client: Client) -> None:
    body = stow_body(testdata(CT).read_bytes())
    content_type = f'multipart/related; boundary="{BOUNDARY}"; type=application/dicom'
    response = client.http.post(
        "/dicom-web/studies",
        headers={"Content-Type": content_type},
        body=body,
    )
    assert response.status_code == 200


def test_store_instances_part_with_transfer_syntax_parameter(client: Client) -> None:
    from chalicelib.dicom.multipart import encode_multipart

    data = testdata(CT).read_bytes()
    body = encode_multipart(
        [({"Content-Type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"}, data)], "b1"
    )
    response = client.http.post(
        "/dicom-web/studies",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b1'},
        body=body,
    )
    assert response.status_code == 200


def test_store_instances_too_large_413(tmp_path) -> None:
    context = make_context("local", tmp_path, max_stow_body=1000)
    client = Client(create_app(lambda: context))
    response = stow(client, testdata(CT).read_bytes())
    assert response.status_code == 413
    assert "several requests" in json_of(response)["Message"]


def test_store_instances_xml_response(client: Client) -> None:
    import xml.etree.ElementTree as ET

    response = stow(client, testdata(CT).read_bytes(), Accept="application/dicom+xml")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+xml"
    root = ET.fromstring(response.body)
    ns = {"n": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    sop = root.find(
        "n:DicomAttribute[@tag='00081199']/n:Item/n:DicomAttribute[@tag='00081155']/n:Value", ns
    )
    assert sop is not None and sop.text == CT_SOP


def test_store_instances_sop_uid_under_other_study_409(client: Client, context: Context) -> None:
    import io

    from pydicom import dcmread

    data = testdata(CT).read_bytes()
    stow(client, data)
    ds = dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = "1.2.3.4.5"
    moved = io.BytesIO()
    ds.save_as(moved)
    response = stow(client, moved.getvalue())
    assert response.status_code == 409
    (failed,) = values(json_of(response), "00081198")
    assert values(failed, "00081197") == [0x0110]
    assert _counts(context, CT_STUDY) == (1, 1)


class _FailingAt:
    """The context's TagIndex, refusing the `fail_at`-th record of a batch with an error no
    adapter translated, as DynamoDB reports one of its per-instance transactions (issue 11:
    an sqlite3.OperationalError turned the whole STOW into a 500), or failing the whole
    batch (`fail_at` 0), as SQLite does when its one transaction cannot commit."""

    def __init__(self, index: object, fail_at: int) -> None:
        self._index, self._fail_at = index, fail_at

    def store_instances(self, records: list, overwrite: bool) -> list:
        error = RuntimeError("disk I/O error at /secret/index.sqlite")
        if not self._fail_at:
            raise error
        others = [r for number, r in enumerate(records, 1) if number != self._fail_at]
        results = self._index.store_instances(others, overwrite)
        results.insert(self._fail_at - 1, error)
        return results

    def __getattr__(self, name: str) -> object:
        return getattr(self._index, name)


def _copies(count: int) -> list[bytes]:
    import io

    from pydicom import dcmread
    from pydicom.uid import generate_uid

    copies = []
    for _ in range(count):
        ds = dcmread(io.BytesIO(testdata("ColorTestImageJ.dcm").read_bytes()))
        ds.SOPInstanceUID = generate_uid()
        out = io.BytesIO()
        ds.save_as(out)
        copies.append(out.getvalue())
    return copies


def test_store_instances_backend_error_fails_one_part(tmp_path, caplog) -> None:
    import dataclasses

    base = make_context("local", tmp_path)
    context = dataclasses.replace(base, index=_FailingAt(base.index, fail_at=2))
    client = Client(create_app(lambda: context))
    parts = _copies(3)
    response = stow(client, *parts)
    assert response.status_code == 202
    body = json_of(response)
    assert len(values(body, "00081199")) == 2
    (failed,) = values(body, "00081198")
    assert values(failed, "00081197") == [0xA700]
    assert "/secret" not in response.headers["Warning"]
    assert "server log" in response.headers["Warning"]
    failed_uid = values(failed, "00081155")[0]
    assert "storing SOP Instance " + failed_uid in caplog.text
    stored = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
    assert not [p for p in stored if failed_uid in str(p)]  # its blob removed
    assert len(stored) == 2  # the others' files (their metadata is in the index)


def test_store_instances_index_commit_failure_fails_every_part(tmp_path, caplog) -> None:
    import dataclasses

    base = make_context("local", tmp_path)
    context = dataclasses.replace(base, index=_FailingAt(base.index, fail_at=0))
    client = Client(create_app(lambda: context))
    response = stow(client, *_copies(3))
    assert response.status_code == 503
    failed = values(json_of(response), "00081198")
    assert [values(item, "00081197") for item in failed] == [[0xA700]] * 3
    assert "/secret" not in response.headers["Warning"]
    assert not [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
    assert list(base.index.iter_studies()) == []


def _oversized() -> bytes:
    """A 2 × 2 instance whose indexed values pass their VR's length (PS3.5 Table 6.2-1) many
    times over, as non-conforming files do: 3,000 characters each."""
    import warnings

    from tests.server.helpers import tiny_image

    with warnings.catch_warnings():  # pydicom warns of the lengths it is told to write
        warnings.simplefilter("ignore")
        return tiny_image(
            PatientID="P" * 3000,
            PatientName="A" * 3000,
            AccessionNumber="9" * 3000,
            Modality="M" * 3000,
        )


# On DynamoDB their index keys passed its limits (1,024 bytes for a sort key, 2,048 for a
# partition key): ValidationException, and the store answered 503.
def test_store_instances_oversized_indexed_values_stored_and_found(client: Client) -> None:
    response = stow(client, _oversized())
    assert response.status_code == 200, response.body
    study = values(json_of(response), "00081190")[0].rsplit("/", 1)[1]
    queries = {
        f"studies?PatientID={'P' * 3000}": [study],
        f"studies?PatientID={'P' * 2999}": [],
        f"studies?PatientName={'A' * 3000}": [study],
        f"studies?PatientName={'A' * 2000}*": [study],
        f"studies?AccessionNumber={'9' * 3000}": [study],
        f"studies?ModalitiesInStudy={'M' * 3000}": [study],
        f"series?Modality={'M' * 3000}": [study],
    }
    for query, expected in queries.items():
        answer = json_of(client.http.get(f"/dicom-web/{query}")) or []
        assert [values(item, "0020000D")[0] for item in answer] == expected, query[:40]
