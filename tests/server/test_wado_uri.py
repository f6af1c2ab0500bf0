"""WADO-URI (PS3.18 §9) over HTTP on both backends."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from chalice.test import Client
from PIL import Image

from chalicelib.context import Context
from chalicelib.dicom.encoding import EXPLICIT_VR_LITTLE_ENDIAN
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.api import create_app
from tests.conftest import make_context, testdata
from tests.server.helpers import assert_no_route, json_of

CT = "2020-08-12-Christopher.dcm"
JPEG = "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm"


def _store(context: Context, name: str) -> IngestResult:
    result = store_instance(context, testdata(name).read_bytes())
    assert result.status == "stored", result.message
    return result


def _wado(client: Client, accept: str = "*/*", **params: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.http.get(f"/wado?{query}", headers={"Accept": accept})


def _full(r: IngestResult, **params: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": r.study_uid,
        "seriesUID": r.series_uid,
        "objectUID": r.sop_instance_uid,
        **params,
    }


def _image(response: Any) -> Image.Image:
    assert response.status_code == 200, response.body
    return Image.open(io.BytesIO(response.body))


def test_wado_uri_default_is_jpeg(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r))
    assert response.headers["Content-Type"] == "image/jpeg"
    assert _image(response).size == (512, 512)


def test_wado_uri_object_uid_alone(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _wado(client, requestType="WADO", objectUID=r.sop_instance_uid)
    assert _image(response).format == "JPEG"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/png", "PNG"),
        ("image/gif", "GIF"),
        ("image/png;q=0.5,image/gif", "GIF"),
        ("image/jpeg;q=0.1,image/png;q=0.9", "PNG"),
    ],
)
def test_wado_uri_content_type(
    client: Client, context: Context, content_type: str, expected: str
) -> None:
    r = _store(context, CT)
    image = _image(_wado(client, **_full(r, contentType=content_type)))
    assert image.format == expected


def test_wado_uri_dicom_is_byte_identical_for_ele(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r, contentType="application/dicom"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.body == testdata(CT).read_bytes()
    # Accept alone chooses too.
    assert _wado(client, "application/dicom", **_full(r)).body == testdata(CT).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "TransferSyntaxes/1.2.840.10008.1.2.dcm",
        "TransferSyntaxes/1.2.840.10008.1.2.2.dcm",
        JPEG,
    ],
)
def test_wado_uri_dicom_defaults_to_ele(client: Client, context: Context, name: str) -> None:
    r = _store(context, name)
    response = _wado(client, **_full(r, contentType="application/dicom"))
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert ds.SOPInstanceUID == r.sop_instance_uid
    assert ds.pixel_array.size > 0


def test_wado_uri_transfer_syntax(client: Client, context: Context) -> None:
    r = _store(context, JPEG)
    stored = _wado(
        client,
        **_full(r, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"),
    )
    assert stored.status_code == 200 and stored.body == testdata(JPEG).read_bytes()
    unsupported = _wado(
        client,
        **_full(r, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.91"),
    )
    assert unsupported.status_code == 406
    assert unsupported.headers["Content-Type"] == "application/json"


def test_wado_uri_image_parameters(client: Client, context: Context) -> None:
    r = _store(context, CT)
    assert _image(_wado(client, **_full(r, rows="100"))).size == (100, 100)
    assert _image(_wado(client, **_full(r, columns="64", rows="200"))).size == (64, 64)
    region = _image(_wado(client, **_full(r, region="0.0,0.0,0.5,0.25", contentType="image/png")))
    assert region.size == (256, 128)
    plain = np.asarray(_image(_wado(client, **_full(r, contentType="image/png"))))
    windowed = _wado(
        client, **_full(r, contentType="image/png", windowCenter="40", windowWidth="80")
    )
    assert not np.array_equal(plain, np.asarray(_image(windowed)))
    low = _wado(client, **_full(r, imageQuality="5"))
    high = _wado(client, **_full(r, imageQuality="95"))
    assert len(low.body) < len(high.body)


def test_wado_uri_matches_rendered(client: Client, context: Context) -> None:
    """orthanc-tests compare_wado_uri_and_rs: the same window gives the same image."""
    r = _store(context, CT)
    uri = _wado(
        client, **_full(r, contentType="image/png", windowCenter="200", windowWidth="800")
    ).body
    path = (
        f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/instances/"
        f"{r.sop_instance_uid}/rendered?window=200,800,linear"
    )
    rendered = client.http.get(path, headers={"Accept": "image/png"}).body
    assert np.array_equal(np.asarray(_image_bytes(uri)), np.asarray(_image_bytes(rendered)))


def _image_bytes(body: bytes) -> Image.Image:
    return Image.open(io.BytesIO(body))


def test_wado_uri_frame_number(client: Client, context: Context) -> None:
    r = _store(context, "MultiframeWindowing.dcm")
    frames = [
        _wado(client, **_full(r, contentType="image/png", frameNumber=str(n))).body for n in (1, 2)
    ]
    assert frames[0] != frames[1]
    response = _wado(client, **_full(r, frameNumber="5"))
    assert response.status_code == 400 and b"4 frame" in response.body


def test_wado_uri_no_pixel_data_defaults_to_dicom(client: Client, context: Context) -> None:
    r = _store(context, "Issue168.dcm")
    response = _wado(client, **_full(r))
    assert response.headers["Content-Type"] == "application/dicom"
    assert _wado(client, **_full(r, contentType="image/jpeg")).status_code == 406


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"objectUID": "1.2.3"}, 400, b"requestType"),
        ({"requestType": "WADO"}, 400, b"objectUID"),
        ({"requestType": "WADX", "objectUID": "1.2.3"}, 400, b"WADO"),
        ({"requestType": "WADO", "objectUID": "1.2.3"}, 404, b"1.2.3"),
        ({"requestType": "WADO", "objectUID": "1.2.3", "anonymize": "yes"}, 400, b"anonymize"),
        ({"requestType": "WADO", "objectUID": "not..uid"}, 404, b"UID"),
    ],
)
def test_wado_uri_errors(
    client: Client, context: Context, params: dict[str, str], status: int, words: bytes
) -> None:
    response = _wado(client, **params)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert words in response.body


@pytest.mark.parametrize("name", ["studyUID", "seriesUID"])
def test_wado_uri_mismatched_parent_is_404(client: Client, context: Context, name: str) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r, **{name: "1.2.3"}))
    assert response.status_code == 404
    assert json_of(response)["Message"].endswith(f"is not in the {name} 1.2.3")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rows": "0"}, "rows='0' must be a positive integer"),
        ({"rows": "x"}, "rows='x' must be a positive integer"),
        ({"windowCenter": "40"}, "windowCenter and windowWidth go together"),
        ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth='0' must be at least 1"),
        ({"region": "0.5,0.5,0.1,0.9"}, "xmax > xmin and ymax > ymin"),
        ({"region": "0,0,2,1"}, "must be xmin,ymin,xmax,ymax from 0.0 to 1.0"),
        ({"imageQuality": "0"}, "imageQuality='0' must be an integer from 1 to 100"),
        ({"transferSyntax": "nope"}, "transferSyntax='nope' is not a UID"),
    ],
)
def test_wado_uri_bad_parameters(
    client: Client, context: Context, params: dict[str, str], message: str
) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r, **params))
    assert response.status_code == 400
    assert message in json_of(response)["Message"]


def test_wado_uri_unapplied_parameters_warn(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r, annotation="patient", charset="ISO_IR 192"))
    assert response.status_code == 200
    warning = response.headers["Warning"]
    assert re.fullmatch(
        r'299 \S+ "annotation, charset: accepted but not applied by this server"', warning
    )


def test_wado_uri_disabled(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, enable_wado=False)
    client = Client(create_app(lambda: context))
    assert_no_route(_wado(client, requestType="WADO", objectUID="1.2.3"))


def test_wado_uri_custom_root(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, wado_root="/legacy/wado")
    r = _store(context, CT)
    client = Client(create_app(lambda: context))
    response = client.http.get(
        f"/legacy/wado?requestType=WADO&objectUID={r.sop_instance_uid}",
        headers={"Accept": "*/*"},
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"


# Issue 11: str.isdigit() accepts "²", which int() refuses: these answered 500.
@pytest.mark.parametrize(
    ("name", "value"), [("frameNumber", "%C2%B2"), ("rows", "%C2%B2"), ("columns", "%D9%A3")]
)
def test_wado_uri_integers_are_ascii_digits(
    client: Client, context: Context, name: str, value: str
) -> None:
    r = _store(context, CT)
    response = _wado(client, **_full(r, **{name: value}))
    assert response.status_code == 400
    assert f"WADO-URI parameter {name}=" in json.loads(response.body)["Message"]


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
def test_wado_uri_over_inline_limit_303_to_presigned_url(backend: str, tmp_path: Path) -> None:
    import requests

    context = make_context(backend, tmp_path, inline_limit=1000)
    data = testdata(CT).read_bytes()
    r = store_instance(context, data)
    client = Client(create_app(lambda: context))
    response = _wado(client, **_full(r, contentType="application/dicom"))
    assert response.status_code == 303
    fetched = requests.get(response.headers["Location"], timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(fetched.content)).SOPInstanceUID == r.sop_instance_uid
