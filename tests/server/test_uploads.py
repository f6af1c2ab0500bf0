"""Uploads: POST /uploads, a PUT per file (local route or presigned S3 + the S3 event), then
GET /uploads/{id} answers the STOW-RS store response."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from chalice.test import Client

from chalicelib.context import Context
from chalicelib.server.uploads import ingest_s3_event
from tests.conftest import testdata
from tests.server.helpers import HOST, json_of, values

CT = "2020-08-12-Christopher.dcm"
CT_STUDY = "1.2.840.113704.9.1000.16.0.20190613103939444"
CT_SOP = "1.2.840.113704.9.1000.16.2.20190613104005642000100010001"
HEADERS = {"Host": HOST, "Accept": "application/dicom+json"}


def _create(client: Client, document: dict[str, Any]) -> Any:
    return client.http.post(
        "/dicom-web/uploads",
        headers={**HEADERS, "Content-Type": "application/json"},
        body=json.dumps(document).encode(),
    )


def _put(client: Client, context: Context, url: str, data: bytes) -> None:
    """PUT a file where the upload says: this server's route, or a presigned S3 URL followed
    by the S3 event that the bucket sends the ingest Lambda on AWS."""
    import requests

    if url.startswith(f"http://{HOST}/"):
        path = urlsplit(url).path
        response = client.http.put(
            path, headers={**HEADERS, "Content-Type": "application/dicom"}, body=data
        )
        assert response.status_code == 204, response.body
        return
    response = requests.put(
        url, data=data, headers={"Content-Type": "application/dicom"}, timeout=30
    )
    assert response.status_code == 200, response.text
    key = urlsplit(url).path.removeprefix("/")  # virtual-hosted style: the bucket is the host
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}]}
    (outcome,) = ingest_s3_event(context, event)
    assert outcome["Key"] == key and not outcome["Status"].startswith("ignored")
    assert not context.blobs.exists(key)  # the incoming object is gone once ingested


def test_upload_two_files_answers_the_store_response(client: Client, context: Context) -> None:
    created = _create(client, {"Files": 2})
    assert created.status_code == 201
    upload = json_of(created)
    assert created.headers["Location"] == upload["Path"]
    assert len(upload["Files"]) == 2
    pending = client.http.get(urlsplit(upload["Path"]).path, headers=HEADERS)
    assert pending.status_code == 202
    assert json_of(pending)["Status"] == "Pending" and pending.headers["Retry-After"]

    first, second = upload["Files"]
    _put(client, context, first["Url"], testdata(CT).read_bytes())
    assert json_of(client.http.get(urlsplit(upload["Path"]).path, headers=HEADERS))["Stored"] == 1
    _put(client, context, second["Url"], b"not a DICOM file")

    done = client.http.get(urlsplit(upload["Path"]).path, headers=HEADERS)
    assert done.status_code == 202  # one stored, one failed: PS3.18 Table 10.5.3-1
    body = json_of(done)
    (item,) = values(body, "00081199")
    assert values(item, "00081155") == [CT_SOP]
    assert "part 2:" in done.headers["Warning"]
    assert context.index.get_study(CT_STUDY).num_instances == 1


def test_upload_restricted_to_a_study_fails_other_studies(client: Client, context: Context) -> None:
    other_study = "1.2.3.4"
    upload = json_of(_create(client, {"Files": 1, "StudyInstanceUID": other_study}))
    _put(client, context, upload["Files"][0]["Url"], testdata(CT).read_bytes())
    done = client.http.get(urlsplit(upload["Path"]).path, headers=HEADERS)
    assert done.status_code == 409
    (failed,) = values(json_of(done), "00081198")
    assert values(failed, "00081155") == [CT_SOP]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "Files=None must be a whole number"),
        ({"Files": 0}, "from 1 to"),
        ({"Files": 1, "StudyInstanceUID": "x.y"}, "not a valid UID"),
    ],
)
def test_create_upload_rejects_bad_requests(client: Client, document: dict, message: str) -> None:
    response = _create(client, document)
    assert response.status_code == 400
    assert message in json_of(response)["Message"]


@pytest.mark.parametrize("number", ["²", "x", "-1", "%2B1"])
def test_upload_file_number_not_ascii_digits_is_404(client: Client, number: str) -> None:
    """A file number of other than ASCII digits: "²" passed `str.isdigit` and was a 500."""
    upload = json_of(_create(client, {"Files": 1}))
    response = client.http.put(
        f"/dicom-web/uploads/{upload['ID']}/files/{number}",
        headers={**HEADERS, "Content-Type": "application/dicom"},
        body=testdata(CT).read_bytes(),
    )
    assert response.status_code == 404, response.body[:300]
    assert "is not a number" in json_of(response)["Message"]


def test_retrieve_upload_unknown_is_404(client: Client) -> None:
    response = client.http.get("/dicom-web/uploads/" + "0" * 32, headers=HEADERS)
    assert response.status_code == 404
    assert client.http.get("/dicom-web/uploads/nope", headers=HEADERS).status_code == 404


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
def test_create_upload_on_aws_presigns_sigv4_puts(client: Client) -> None:
    upload = json_of(_create(client, {"Files": 1}))
    (file,) = upload["Files"]
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in file["Url"]
    assert f"/incoming/{upload['ID']}/1?" in file["Url"]
    assert file["Headers"] == {"Content-Type": "application/dicom"}


def test_ingest_s3_event_ignores_keys_outside_uploads(context: Context) -> None:
    event = {"Records": [{"s3": {"object": {"key": "incoming/readme.txt"}}}]}
    assert ingest_s3_event(context, event)[0]["Status"].startswith("ignored")
