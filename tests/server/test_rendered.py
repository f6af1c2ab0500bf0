"""Rendered and thumbnail resources over HTTP on both backends."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from chalice.test import Client
from PIL import Image
from pydicom.uid import generate_uid

from chalicelib.context import Context
from chalicelib.ingest import IngestResult, store_instance
from chalicelib.server.api import create_app
from chalicelib.server.rendered import thumbnail_keys
from tests.conftest import make_context, testdata
from tests.corpus import undecodable_jpeg
from tests.server.helpers import CountingBlobs, tiny_image

CT = "2020-08-12-Christopher.dcm"
MULTIFRAME = "MultiframeWindowing.dcm"


def _store(context: Context, name: str) -> IngestResult:
    result = store_instance(context, testdata(name).read_bytes())
    assert result.status == "stored", result.message
    return result


def _variant(name: str, series_uid: str | None = None, **attributes: Any) -> bytes:
    """A copy of a test file with a new SOP Instance UID and the given attributes."""
    ds = pydicom.dcmread(testdata(name))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _path(r: IngestResult) -> str:
    return f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_instance_uid}"


def _get(client: Client, path: str, accept: str = "*/*", **headers: str) -> Any:
    return client.http.get(path, headers={"Accept": accept, **headers})


def _image(response: Any) -> Image.Image:
    assert response.status_code == 200, response.body
    return Image.open(io.BytesIO(response.body))


def test_rendered_instance_default_is_jpeg(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _get(client, _path(r) + "/rendered")
    assert response.headers["Content-Type"] == "image/jpeg"
    image = _image(response)
    assert image.format == "JPEG" and image.size == (512, 512)


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        ("image/png", "", "PNG"),
        ("image/gif", "", "GIF"),
        ("image/*", "", "JPEG"),
        ("image/gif;q=0.5, image/png", "", "PNG"),
        ("application/dicom", "?accept=image/png", "PNG"),
    ],
)
def test_rendered_accept(
    client: Client, context: Context, accept: str, query: str, expected: str
) -> None:
    r = _store(context, CT)
    assert _image(_get(client, _path(r) + "/rendered" + query, accept)).format == expected


def test_rendered_not_acceptable(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _get(client, _path(r) + "/rendered", "application/dicom")
    assert response.status_code == 406
    assert response.headers["Content-Type"] == "application/json"
    assert b"image/jpeg" in response.body


def test_rendered_window_and_viewport(client: Client, context: Context) -> None:
    r = _store(context, CT)
    plain = np.asarray(_image(_get(client, _path(r) + "/rendered", "image/png")))
    windowed = _image(_get(client, _path(r) + "/rendered?window=40,80,linear", "image/png"))
    assert not np.array_equal(plain, np.asarray(windowed))
    small = _image(_get(client, _path(r) + "/rendered?viewport=128,64", "image/png"))
    assert small.size == (64, 64)


def test_rendered_frames_per_frame_rescale(client: Client, context: Context) -> None:
    r = _store(context, MULTIFRAME)
    base = _path(r) + "/frames/{}/rendered?window=127,256,linear"
    frames = [np.asarray(_image(_get(client, base.format(n), "image/png"))) for n in (1, 2, 3, 4)]
    # Intercept 0/100 and slope 1/2 per frame: the stored values are the same, the images not.
    assert len({f.tobytes() for f in frames}) == 4
    assert frames[1][0, 0] > frames[0][0, 0]  # intercept 100
    assert _get(client, base.format(5)).status_code == 404
    assert _get(client, _path(r) + "/frames/1,2/rendered").status_code == 400
    # The instance's rendered resource is its first frame.
    first = _image(_get(client, _path(r) + "/rendered?window=127,256,linear", "image/png"))
    assert np.array_equal(np.asarray(first), frames[0])


def test_rendered_color(client: Client, context: Context) -> None:
    r = _store(context, "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm")
    image = _image(_get(client, _path(r) + "/rendered", "image/png"))
    assert image.mode == "RGB" and image.size == (640, 480)


def test_rendered_series_and_study_choose_first_instance(client: Client, context: Context) -> None:
    """The rule: first by SeriesNumber, InstanceNumber, then SOP Instance UID."""
    first = _store(context, CT)
    bright = _variant(CT, InstanceNumber=1, RescaleIntercept=500)
    later = store_instance(context, bright)
    assert later.status == "stored"
    dark = _variant(CT, InstanceNumber=2, RescaleIntercept=-500)
    assert store_instance(context, dark).status == "stored"
    expected = _get(client, _path(later) + "/rendered", "image/png").body
    assert first.sop_instance_uid != later.sop_instance_uid
    study, series = first.study_uid, first.series_uid
    series_body = _get(client, f"/dicom-web/studies/{study}/series/{series}/rendered", "image/png")
    study_body = _get(client, f"/dicom-web/studies/{study}/rendered", "image/png")
    assert series_body.body == expected
    assert study_body.body == expected


def test_rendered_unapplied_parameters_warn(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _get(client, _path(r) + "/rendered?annotation=patient&iccprofile=srgb")
    assert response.status_code == 200
    assert response.headers["Warning"].startswith("299 ")
    assert "annotation" in response.headers["Warning"]
    assert "iccprofile" in response.headers["Warning"]
    assert "Warning" not in _get(client, _path(r) + "/rendered").headers


@pytest.mark.parametrize(
    "query",
    ["window=40", "window=40,0,linear", "window=a,b,linear", "window=40,80,cubic", "viewport=0,10",
     "viewport=1,2,3", "quality=0", "quality=101"],
)  # fmt: skip
def test_rendered_bad_parameters(client: Client, context: Context, query: str) -> None:
    r = _store(context, CT)
    response = _get(client, _path(r) + "/rendered?" + query)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"


def test_rendered_window_without_function_400(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = _get(client, _path(r) + "/rendered?window=40,80")
    assert response.status_code == 400
    assert "three values, PS3.18 §8.3.5.1.4" in json.loads(response.body)["Message"]


def test_rendered_errors(client: Client, context: Context) -> None:
    r = _store(context, CT)
    unknown = f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/instances/1.2.3/rendered"
    assert _get(client, unknown).status_code == 404
    assert _get(client, "/dicom-web/studies/1.2.3/rendered").status_code == 404
    assert _get(client, "/dicom-web/studies/not-a-uid/thumbnail").status_code == 404
    no_pixels = _store(context, "Issue168.dcm")
    response = _get(client, _path(no_pixels) + "/rendered")
    assert response.status_code == 406
    assert b"Pixel Data" in response.body
    undecodable = store_instance(context, undecodable_jpeg())
    response = _get(client, _path(undecodable) + "/rendered")
    assert response.status_code == 406
    assert "cannot be rendered" in json.loads(response.body)["Message"]
    twelve_bit = _store(context, "TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm")
    assert np.asarray(_image(_get(client, _path(twelve_bit) + "/rendered"))).std() > 10


def _palette(bits: int, data: bytes) -> dict[str, Any]:
    return {
        f"{color}PaletteColor{part}": value
        for color in ("Red", "Green", "Blue")
        for part, value in (("LookupTableDescriptor", [256, 0, bits]), ("LookupTableData", data))
    }


def _modality_lut_without_descriptor() -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.ModalityLUTType = "HU"
    return {"ModalityLUTSequence": Sequence([item])}


# Each was a 500 (pydicom's ValueError, TypeError or AttributeError unhandled).
@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"PhotometricInterpretation": "PALETTE COLOR"}, "Palette Color Lookup Table"),
        (
            {"PhotometricInterpretation": "PALETTE COLOR", **_palette(7, bytes(256))},
            "Palette Color Lookup Table",
        ),
        (
            {"PhotometricInterpretation": "PALETTE COLOR", **_palette(16, bytes(6))},
            "Palette Color Lookup Table",
        ),
        (_modality_lut_without_descriptor(), "Modality LUT Sequence (0028,3000)"),
    ],
    ids=["palette-without-lut", "palette-7-bit-lut", "palette-lut-too-short", "modality-lut-empty"],
)
def test_rendered_malformed_lookup_table_406_names_it(
    tmp_path: Path, attributes: dict[str, Any], named: str
) -> None:
    context = make_context("local", tmp_path)
    r = store_instance(context, tiny_image(**attributes))
    assert r.status == "stored", r.message
    client = Client(create_app(lambda: context))
    wado = (
        f"/wado?requestType=WADO&studyUID={r.study_uid}&seriesUID={r.series_uid}"
        f"&objectUID={r.sop_instance_uid}"
    )
    for path in (_path(r) + "/rendered", _path(r) + "/frames/1/rendered", wado):
        response = _get(client, path)
        assert response.status_code == 406, (path, response.body)
        assert named in json.loads(response.body)["Message"]


def test_rendered_head_has_no_body_and_the_get_length(client: Client, context: Context) -> None:
    r = _store(context, CT)
    response = client.http.head(_path(r) + "/rendered", headers={"Accept": "image/png"})
    assert response.status_code == 200 and response.body == b""
    assert response.headers["Content-Type"] == "image/png"
    get = _get(client, _path(r) + "/rendered", "image/png")
    assert response.headers["Content-Length"] == str(len(get.body)) != "0"


def test_thumbnail_every_level(client: Client, context: Context) -> None:
    r = _store(context, CT)
    study = f"/dicom-web/studies/{r.study_uid}"
    series = f"{study}/series/{r.series_uid}"
    for path in (study, series, _path(r), _path(r) + "/frames/1"):
        image = _image(_get(client, path + "/thumbnail"))
        assert image.format == "JPEG" and image.size == (128, 128), path
    sized = _image(_get(client, series + "/thumbnail?viewport=64,32", "image/png"))
    assert sized.format == "PNG" and sized.size == (32, 32)
    blobs = context.blobs
    assert blobs.exists(thumbnail_keys(r.study_uid)[0])
    assert blobs.exists(thumbnail_keys(r.study_uid, r.series_uid)[0])
    assert blobs.exists(thumbnail_keys(r.study_uid, r.series_uid, r.sop_instance_uid)[0])


def test_thumbnail_cache_follows_series_version(client: Client, context: Context) -> None:
    r = _store(context, CT)
    series = f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/thumbnail"
    key = thumbnail_keys(r.study_uid, r.series_uid)[1]  # .png
    first = _get(client, series, "image/png").body
    assert context.blobs.get(key).endswith(first)
    assert _get(client, series, "image/png").body == first  # from the cache
    # Two more instances with another look: the middle one of three is now a new instance,
    # and the version bump makes the cached image stale.
    for number, intercept in ((2, 800), (3, 900)):
        variant = _variant(CT, InstanceNumber=number, RescaleIntercept=intercept)
        assert store_instance(context, variant).status == "stored"
    second = _get(client, series, "image/png").body
    assert second != first
    version = context.index.get_series(r.study_uid, r.series_uid).version
    assert context.blobs.get(key) == b"%d\n" % version + second


def test_thumbnail_etag_and_304(client: Client, context: Context) -> None:
    r = _store(context, CT)
    path = f"/dicom-web/studies/{r.study_uid}/series/{r.series_uid}/thumbnail"
    first = _get(client, path)
    etag = first.headers["ETag"]
    again = _get(client, path, **{"If-None-Match": etag})
    assert (again.status_code, again.body, again.headers["ETag"]) == (304, b"", etag)
    png = _get(client, path, "image/png", **{"If-None-Match": etag})
    assert png.status_code == 200 and png.headers["ETag"] != etag
    sized = _get(client, path + "?viewport=64,64", **{"If-None-Match": etag})
    assert sized.status_code == 200 and sized.headers["ETag"] != etag
    # Delete and store the same instance again: new lifetime, new ETag.
    assert client.http.delete(f"/dicom-web/studies/{r.study_uid}").status_code == 204
    _store(context, CT)
    restored = _get(client, path, **{"If-None-Match": etag})
    assert restored.status_code == 200 and restored.headers["ETag"] != etag


def test_thumbnail_multiframe_middle_frame(client: Client, context: Context) -> None:
    r = _store(context, MULTIFRAME)
    thumbnail = _image(_get(client, _path(r) + "/thumbnail?viewport=2,2", "image/png"))
    middle = _image(_get(client, _path(r) + "/frames/3/rendered", "image/png"))
    assert np.array_equal(np.asarray(thumbnail), np.asarray(middle))


def test_rendered_api_gateway_event_is_base64(context: Context) -> None:
    """The API Gateway path the test client skips: binary answers go out base64-encoded."""
    import base64

    r = _store(context, CT)
    app = create_app(lambda: context)
    path = _path(r) + "/rendered"
    resource = "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered"
    event = {
        "resource": resource,
        "path": path,
        "httpMethod": "GET",
        "headers": {"Accept": "image/png", "Host": "example.test"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {
            "study": r.study_uid,
            "series": r.series_uid,
            "instance": r.sop_instance_uid,
        },
        "stageVariables": None,
        "requestContext": {
            "path": "/api" + path,
            "resourcePath": resource,
            "httpMethod": "GET",
        },
        "body": None,
        "isBase64Encoded": False,
    }
    answer = app(event, None)
    assert answer["statusCode"] == 200
    assert answer["isBase64Encoded"] is True
    image = Image.open(io.BytesIO(base64.b64decode(answer["body"])))
    assert image.format == "PNG"


@pytest.mark.parametrize("name", [MULTIFRAME, "Issue164.dcm"], ids=["native", "jpeg-baseline"])
@pytest.mark.parametrize("wado_uri", [False, True], ids=["rendered", "wado-uri"])
def test_rendered_and_wado_uri_jpeg_read_two_ranges(
    backend: str, tmp_path: Path, wado_uri: bool, name: str
) -> None:
    """A frame is rendered from two range reads, the header up to Pixel Data and the frame's
    bytes (native pixels, or the fragments of a compressed frame), never the whole stored file;
    /rendered and WADO-URI image/jpeg alike."""
    base = make_context(backend, tmp_path)
    r = _store(base, name)
    counting = CountingBlobs(base.blobs)
    context = dataclasses.replace(base, blobs=counting)
    query = f"?requestType=WADO&objectUID={r.sop_instance_uid}&contentType=image/jpeg"
    path = f"/wado{query}&frameNumber=3" if wado_uri else _path(r) + "/frames/3/rendered"
    with Client(create_app(lambda: context)) as client:
        image = _image(_get(client, path, "image/jpeg"))
    assert image.format == "JPEG"
    record = base.index.find_instance(r.sop_instance_uid)
    pixel = record.pixel
    if pixel["encapsulated"]:
        fragments = pixel["frames"][2]
        frame_range = (fragments[0][0], fragments[-1][0] + fragments[-1][1] - fragments[0][0])
    else:
        frame_range = (pixel["offset"] + 2 * pixel["frame_length"], pixel["frame_length"])
    assert counting.gets == []
    assert [(start, length) for _, start, length in counting.ranges] == [
        (0, pixel["offset"]),
        frame_range,
    ]
    assert pixel["offset"] + frame_range[1] < record.size
