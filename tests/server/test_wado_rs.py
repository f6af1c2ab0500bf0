"""WADO-RS retrieve over HTTP on both backends, over the corpus of real files."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import numpy as np
import pytest
from chalice.test import Client
from pydicom import dcmread

from chalicelib.context import Context
from chalicelib.dicom.encoding import EXPLICIT_VR_LITTLE_ENDIAN, NOT_FOR_WEB
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from tests.apigateway import api_gateway_event
from tests.conftest import make_context, testdata
from tests.corpus import CorpusFile, storable, undecodable_jpeg
from tests.server.helpers import HOST, CountingBlobs, json_of, parts_of, stow

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
EXPLICIT = (
    f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'
)
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
CT = "2020-08-12-Christopher.dcm"
J70 = "1.2.840.10008.1.2.4.70"


@pytest.fixture
def stored(context: Context) -> tuple[CorpusFile, ...]:
    corpus = storable()
    for item in corpus:
        assert store_instance(context, item.data).status == "stored", item.name
    return corpus


def _instance_path(item: CorpusFile) -> str:
    return f"/dicom-web/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"


def _web_ready(item: CorpusFile) -> bool:
    return item.has_file_meta and item.transfer_syntax_uid not in NOT_FOR_WEB


def _assert_same_dataset(received: bytes, item: CorpusFile) -> None:
    """The received Explicit VR Little Endian file holds the source's attributes and pixels."""
    back = dcmread(io.BytesIO(received))
    assert back.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    source = dcmread(io.BytesIO(item.data), force=True)
    if "TransferSyntaxUID" not in source.file_meta:
        source.file_meta.TransferSyntaxUID = item.transfer_syntax_uid
    for element in source:
        if element.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
            continue
        if element.tag.element == 0:  # group lengths are retired; pydicom does not write them
            continue
        assert back[element.tag].value == element.value, (item.name, element.tag)
    if "PixelData" in source:
        assert np.array_equal(back.pixel_array, source.pixel_array), item.name


def test_retrieve_instance_any_syntax_over_the_corpus(
    client: Client, stored: tuple[CorpusFile, ...]
) -> None:
    """`transfer-syntax=*`: web-ready files byte-identical, others Explicit VR Little Endian."""
    for item in stored:
        response = client.http.get(_instance_path(item), headers={"Accept": ANY, "Host": HOST})
        assert response.status_code == 200, (item.name, response.body[:300])
        ((headers, body),) = parts_of(response)
        assert headers["content-location"] == f"http://{HOST}{_instance_path(item)}"
        if _web_ready(item):
            assert body == item.data, item.name
            assert headers["content-type"] == (
                f"application/dicom; transfer-syntax={item.transfer_syntax_uid}"
            )
        else:
            _assert_same_dataset(body, item)


@pytest.mark.parametrize(
    "name",
    [
        "TransferSyntaxes/1.2.840.10008.1.2.dcm",
        "TransferSyntaxes/1.2.840.10008.1.2.2.dcm",
        "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm",
        "TransferSyntaxes/1.2.840.10008.1.2.1.dcm",
    ],
)
def test_retrieve_instance_default_is_explicit_little_endian(
    client: Client, context: Context, name: str
) -> None:
    item = next(f for f in storable() if f.name == name)
    store_instance(context, item.data)
    for accept in ('multipart/related; type="application/dicom"', "*/*", None):
        headers = {"Accept": accept} if accept else {}
        response = client.http.get(_instance_path(item), headers=headers)
        assert response.status_code == 200, (accept, response.body[:200])
        ((part_headers, body),) = parts_of(response)
        assert part_headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
        _assert_same_dataset(body, item)


def test_retrieve_instance_whose_dataset_is_not_in_its_file_meta_syntax(
    client: Client, context: Context
) -> None:
    """pydicom's SC_rgb_jpeg.dcm: its File Meta says JPEG Baseline (explicit VR), its dataset is
    Implicit VR. Sent as Explicit VR Little Endian it was a 500: pydicom wrote the elements it
    had not converted yet without a VR ("encoding without a string argument")."""
    item = next(f for f in storable() if f.name == "SC_rgb_jpeg.dcm")
    store_instance(context, item.data)
    response = client.http.get(
        _instance_path(item), headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 200, response.body[:300]
    ((headers, body),) = parts_of(response)
    assert headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
    back, source = dcmread(io.BytesIO(body)), dcmread(io.BytesIO(item.data))
    assert back.ImageType == source.ImageType
    assert back.pixel_array.shape == source.pixel_array.shape


def test_retrieve_instance_with_an_unreadable_element(client: Client, context: Context) -> None:
    """A big-endian file whose AcquisitionTime has a VR pydicom does not know is stored (the
    store reads only the attributes it indexes) and was a 500 on every retrieve that converts
    it. It cannot be converted, and Explicit VR Big Endian is not sent on the web (PS3.18
    §8.7.3, 2025b), not even on `transfer-syntax=*`: 406 naming the element."""
    item = next(f for f in storable() if f.name == "MR_small_bigendian.dcm")
    data = item.data.replace(b"\x00\x08\x00\x32TM", b"\x00\x08\x00\x32T\xb6", 1)
    assert data != item.data
    assert store_instance(context, data).status == "stored"
    for accept in (ANY, 'multipart/related; type="application/dicom"'):
        response = client.http.get(_instance_path(item), headers={"Accept": accept})
        assert response.status_code == 406, (accept, response.body[:300])
        assert "(0008,0032)" in json_of(response)["Message"]


def test_retrieve_compressed_instance_with_an_unreadable_element(
    client: Client, context: Context
) -> None:
    """A JPEG Lossless file with an element of a VR pydicom does not know is decoded and
    written as Explicit VR Little Endian, that element copied as it is: transcoding reads
    every element only once writing has failed (it was a 406 when it read them all first)."""
    item = next(f for f in storable() if f.name == "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm")
    data = item.data.replace(b"\x08\x00\x32\x00TM", b"\x08\x00\x32\x00T\xb6", 1)
    assert data != item.data
    assert store_instance(context, data).status == "stored"
    response = client.http.get(
        _instance_path(item), headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 200, response.body[:300]
    ((headers, body),) = parts_of(response)
    assert headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
    back, source = dcmread(io.BytesIO(body)), dcmread(io.BytesIO(item.data))
    assert back.get_item(0x00080032).value.decode().strip() == source.AcquisitionTime
    assert np.array_equal(back.pixel_array, source.pixel_array)


def test_retrieve_falls_back_to_explicit_little_endian_at_a_lower_q(
    client: Client, context: Context
) -> None:
    """An RLE instance asked as JPEG Baseline (which cannot be made here) or, at q=0.5, as
    Explicit VR Little Endian: the second choice, not a 406 telling the client to ask for
    what it asked for."""
    item = next(f for f in storable() if f.name == "SC_rgb_rle_2frame.dcm")
    store_instance(context, item.data)
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50, '
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'
        "; q=0.5"
    )
    response = client.http.get(_instance_path(item), headers={"Accept": accept})
    assert response.status_code == 200, response.body[:300]
    ((headers, body),) = parts_of(response)
    assert headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
    source = dcmread(io.BytesIO(item.data))
    assert np.array_equal(dcmread(io.BytesIO(body)).pixel_array, source.pixel_array)


def _store_unconvertible_series(context: Context) -> tuple[CorpusFile, str]:
    """MR_small_bigendian.dcm with an unreadable AcquisitionTime, and a sound copy (SOP
    Instance UID 1.2.3.4.5, listed first) in the same series; the sound copy's UID."""
    item = next(f for f in storable() if f.name == "MR_small_bigendian.dcm")
    sound = dcmread(io.BytesIO(item.data))
    sound.SOPInstanceUID = sound.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    out = io.BytesIO()
    sound.save_as(out)
    unreadable = item.data.replace(b"\x00\x08\x00\x32TM", b"\x00\x08\x00\x32T\xb6", 1)
    for data in (unreadable, out.getvalue()):
        assert store_instance(context, data).status == "stored"
    return item, "1.2.3.4.5"


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"',
        EXPLICIT,
        ANY,
        f"{EXPLICIT}, {ANY}; q=0.5",
    ],
)
def test_retrieve_series_with_an_unconvertible_instance(
    client: Client, context: Context, accept: str
) -> None:
    """A series holding that unreadable big-endian instance (listed second) and a sound one:
    the unreadable one is never sent as stored, Explicit VR Big Endian being no transfer
    syntax for the web (PS3.18 §8.7.3, 2025b), whatever the Accept (it was, under each of
    these); it is left out, named in a `Warning: 299` header."""
    item, sound_uid = _store_unconvertible_series(context)
    path = f"/dicom-web/studies/{item.study_uid}/series/{item.series_uid}"
    response = client.http.get(path, headers={"Accept": accept})
    assert response.status_code == 200, response.body[:300]
    ((headers, _),) = parts_of(response)
    assert headers["content-location"].endswith(sound_uid)
    assert headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
    assert response.headers["Warning"].startswith("299 ")
    assert "(0008,0032)" in response.headers["Warning"]


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
def test_retrieve_series_over_the_inline_limit_names_the_left_out_instance(
    backend: str, tmp_path: Path
) -> None:
    """Over `InlineLimit` on Lambda the answer is a 303 to a copy: the redirect carries the
    `Warning` naming the instance left out of the copy (it was dropped with the body)."""
    context = make_context(backend, tmp_path, inline_limit=1000)
    client = Client(create_app(lambda: context))
    item, _ = _store_unconvertible_series(context)
    path = f"/dicom-web/studies/{item.study_uid}/series/{item.series_uid}"
    response = client.http.get(path, headers={"Accept": EXPLICIT})
    assert response.status_code == 303, response.body[:300]
    assert "(0008,0032)" in response.headers["Warning"]


def test_retrieve_series_as_rle_with_an_unconvertible_instance_streamed(tmp_path: Path) -> None:
    """The same series asked as RLE Lossless from the local server, which streams: the
    unreadable instance (the second part) is left out and the answer ends well; it broke off
    after its status line. Its first part (the unreadable one alone) is a 406."""
    import requests

    from tests.server.test_localserver import in_process_server

    local = make_context("local", tmp_path)
    item, sound_uid = _store_unconvertible_series(local)
    rle = f'multipart/related; type="application/dicom"; transfer-syntax={RLE_LOSSLESS}'
    with in_process_server(tmp_path / "data", 30.0) as url:
        series = f"{url}/dicom-web/studies/{item.study_uid}/series/{item.series_uid}"
        answer = requests.get(series, headers={"Accept": rle}, timeout=60)
        assert answer.status_code == 200, answer.text[:300]
        joined = SimpleNamespace(headers=answer.headers, body=answer.content)
        ((headers, body),) = parts_of(joined)
        assert headers["content-location"].endswith(sound_uid)
        assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == RLE_LOSSLESS
        alone = requests.get(
            f"{series}/instances/{item.sop_uid}", headers={"Accept": rle}, timeout=60
        )
        assert alone.status_code == 406, alone.text[:300]
        assert "(0008,0032)" in alone.json()["Message"]


def test_retrieve_instance_lossy_source_as_stored_when_undecodable(
    client: Client, context: Context
) -> None:
    """A lossy source no plugin decodes is sent as stored (§8.7.3.4 Note 2)."""
    data = undecodable_jpeg()
    result = store_instance(context, data)
    path = (
        f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}"
    )
    ((headers, body),) = parts_of(client.http.get(path, headers={"Accept": "*/*"}))
    assert body == data
    assert headers["content-type"].endswith("1.2.840.10008.1.2.4.50")


def test_retrieve_instance_as_stored_when_accepted_at_a_lower_q(
    client: Client, context: Context
) -> None:
    """Asked as RLE Lossless first and `*` at a lower q, an instance that cannot be converted
    goes as stored (the Accept allows it); asked as RLE Lossless alone, 406."""
    data = undecodable_jpeg()
    result = store_instance(context, data)
    path = (
        f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}"
    )
    rle = f'multipart/related; type="application/dicom"; transfer-syntax={RLE_LOSSLESS}'
    answer = client.http.get(path, headers={"Accept": f"{rle}, {ANY}; q=0.2"})
    ((headers, body),) = parts_of(answer)
    assert body == data
    assert headers["content-type"].endswith("1.2.840.10008.1.2.4.50")
    assert client.http.get(path, headers={"Accept": rle}).status_code == 406


def test_retrieve_instance_stored_in_an_unknown_syntax(client: Client, context: Context) -> None:
    """A file whose Transfer Syntax UID names no transfer syntax (here 1.2.840.10008.9.9.9,
    the same length as Explicit VR Little Endian's): pydicom raised ValueError on it and the
    retrieve answered 500. It is 406 unless asked as stored, and then the stored bytes."""
    from tests.server.helpers import tiny_image

    data = tiny_image().replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.9.9.9\0")
    result = store_instance(context, data)
    assert result.status == "stored", result.message
    path = (
        f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}"
    )
    response = client.http.get(
        path, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    assert response.status_code == 406
    assert "1.2.840.10008.9.9.9 is not one this server knows" in json_of(response)["Message"]
    as_stored = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    ((_, body),) = parts_of(client.http.get(path, headers={"Accept": as_stored}))
    assert body == data


def test_retrieve_instance_12_bit_jpeg_extended_decoded(client: Client, context: Context) -> None:
    """JPEG Extended 12-bit, which pylibjpeg rejects, decodes through GDCM to Explicit VR
    Little Endian (the default transfer syntax)."""
    item = next(f for f in storable() if f.name == "TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm")
    store_instance(context, item.data)
    ((headers, body),) = parts_of(client.http.get(_instance_path(item), headers={"Accept": "*/*"}))
    assert headers["content-type"].endswith(EXPLICIT_VR_LITTLE_ENDIAN)
    pixels = dcmread(io.BytesIO(body)).pixel_array
    assert pixels.shape == (512, 512) and 3000 < int(pixels.max()) < 4096


def test_retrieve_study_and_series_hold_every_instance(client: Client, context: Context) -> None:
    names = [f"Encodings/DavidClunie/{n}" for n in ("SCSFREN", "SCSGERM", "SCSGREEK")]
    items = [f for f in storable() if f.name in names]
    for item in items:
        store_instance(context, item.data)
    for item in items:
        study = f"/dicom-web/studies/{item.study_uid}"
        parts = parts_of(client.http.get(study, headers={"Accept": ANY}))
        expected = [f.data for f in items if f.study_uid == item.study_uid]
        assert sorted(body for _, body in parts) == sorted(expected)
        series = f"{study}/series/{item.series_uid}"
        parts = parts_of(client.http.get(series, headers={"Accept": ANY}))
        assert item.data in [body for _, body in parts]


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/studies/1.2.3",
        "/dicom-web/studies/1.2.3/series/4.5",
        "/dicom-web/studies/1.2.3/series/4.5/instances/6.7",
        "/dicom-web/studies/..",
        "/dicom-web/studies/1.2.3%00",
        "/dicom-web/studies/" + "1" * 70,
        "/dicom-web/studies/1.2.3'OR'1=1",
    ],
)
def test_retrieve_unknown_or_hostile_uid_404(client: Client, path: str) -> None:
    response = client.http.get(path, headers={"Accept": ANY})
    assert response.status_code == 404
    assert json_of(response)["Message"]


def test_retrieve_instance_under_wrong_parent_404(client: Client, context: Context) -> None:
    stow(client, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    wrong_series = f"/dicom-web/studies/{item.study_uid}/series/1.2.3/instances/{item.sop_uid}"
    wrong_study = f"/dicom-web/studies/1.2.3/series/{item.series_uid}/instances/{item.sop_uid}"
    for path in (wrong_series, wrong_study, f"/dicom-web/studies/1.2.3/series/{item.series_uid}"):
        assert client.http.get(path, headers={"Accept": ANY}).status_code == 404


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4.5',
        'multipart/related; type="application/dicom"; q=0',
    ],
)
def test_retrieve_instance_not_acceptable_406(
    client: Client, context: Context, accept: str
) -> None:
    stow(client, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    response = client.http.get(_instance_path(item), headers={"Accept": accept})
    assert response.status_code == 406
    assert json_of(response)["Message"]


def _resource_paths(item: CorpusFile) -> list[str]:
    study = f"/dicom-web/studies/{item.study_uid}"
    series = f"{study}/series/{item.series_uid}"
    return [study, series, _instance_path(item)]


@pytest.mark.parametrize(
    "accept", ["image/jpeg", "video/mp4, image/png; q=0.5", 'multipart/related; type="image/jpeg"']
)
def test_retrieve_rendered_types_only_406(client: Client, context: Context, accept: str) -> None:
    """A study, series or instance has no rendered representation: 406 pointing to /rendered
    (was 400, which PS3.18 §8.7.5 keeps for DICOM and rendered types mixed)."""
    stow(client, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    for path in _resource_paths(item):
        response = client.http.get(path, headers={"Accept": accept})
        assert response.status_code == 406, path
        assert "/rendered" in json_of(response)["Message"]


@pytest.mark.parametrize(
    "accept",
    [
        f"{ANY}, image/jpeg",
        "application/dicom, text/html; q=0.1",
        f'multipart/related; type="image/jpeg", {ANY}; q=0.5',
    ],
)
def test_retrieve_dicom_and_rendered_types_mixed_400(
    client: Client, context: Context, accept: str
) -> None:
    stow(client, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    for path in _resource_paths(item):
        response = client.http.get(path, headers={"Accept": accept})
        assert response.status_code == 400, path
        assert "§8.7.5" in json_of(response)["Message"]


@pytest.mark.parametrize("accept", [f"{ANY}, image/jpeg; q=0", "image/jpeg, */*"])
def test_retrieve_rendered_type_excluded_or_with_wildcard_200(
    client: Client, context: Context, accept: str
) -> None:
    stow(client, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    response = client.http.get(_instance_path(item), headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/related")


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        ("multipart/*", EXPLICIT_VR_LITTLE_ENDIAN),
        ('multipart/*; type="application/dicom"; transfer-syntax=*', J70),
        ('multipart/*; type="application/dicom"; transfer-syntax=1.2.3.4.5', None),
    ],
)
def test_retrieve_multipart_wildcard_is_multipart_related(
    client: Client, context: Context, accept: str, syntax: str | None
) -> None:
    """`multipart/*` includes multipart/related (RFC 9110 §12.5.1): the default type, as for
    `*/*`, and its parameters as on multipart/related (a transfer syntax not offered is 406).
    It was 406 on a study, series and instance."""
    item = next(f for f in storable() if f.name == f"TransferSyntaxes/{J70}.dcm")
    store_instance(context, item.data)
    for path in _resource_paths(item):
        response = client.http.get(path, headers={"Accept": accept})
        if syntax is None:
            assert response.status_code == 406, path
            continue
        assert response.status_code == 200, (path, response.body[:200])
        ((headers, _),) = parts_of(response)
        assert headers["content-type"] == f"application/dicom; transfer-syntax={syntax}", path


def test_retrieve_highest_q_wins(client: Client, context: Context) -> None:
    item = next(f for f in storable() if f.name == "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm")
    store_instance(context, item.data)
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; q=0.5, '
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.9'
    )
    ((_, body),) = parts_of(client.http.get(_instance_path(item), headers={"Accept": accept}))
    assert body == item.data


def test_retrieve_accept_query_parameter_replaces_header(client: Client, context: Context) -> None:
    """PS3.18 §8.3.3.1: the `accept` query parameter replaces the Accept header."""
    item = next(f for f in storable() if f.name == "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm")
    store_instance(context, item.data)
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    path = _instance_path(item) + "?accept=" + quote(ANY)
    ((part_headers, body),) = parts_of(client.http.get(path, headers=headers))
    assert body == item.data
    assert part_headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.70")
    path = _instance_path(item) + "?accept=image/png"
    response = client.http.get(path, headers=headers)
    assert response.status_code == 406
    assert "rendered media types only" in json_of(response)["Message"]


def test_strict_accept_query_parameter_is_enough(tmp_path) -> None:
    context = make_context("local", tmp_path, strict_accept=True)
    client = Client(create_app(lambda: context))
    store_instance(context, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    response = client.http.get(_instance_path(item) + "?accept=" + quote(ANY))
    assert response.status_code == 200


def test_wrong_method_405_with_allow(client: Client) -> None:
    response = client.http.delete("/dicom-web/studies", headers={"Accept": "*/*"})
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    response = client.http.put("/dicom-web/studies/1.2.3/series/4.5", headers={"Accept": "*/*"})
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_strict_accept_406_without_accept(tmp_path) -> None:
    context = make_context("local", tmp_path, strict_accept=True)
    client = Client(create_app(lambda: context))
    store_instance(context, testdata(CT).read_bytes())
    item = next(f for f in storable() if f.name == CT)
    assert client.http.get(_instance_path(item)).status_code == 406
    assert client.http.get(_instance_path(item), headers={"Accept": "*/*"}).status_code == 200


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
def test_retrieve_large_answer_303_to_presigned_url(backend: str, tmp_path) -> None:
    import requests

    context = make_context(backend, tmp_path, inline_limit=1000)
    client = Client(create_app(lambda: context))
    data = testdata(CT).read_bytes()
    store_instance(context, data)
    item = next(f for f in storable() if f.name == CT)
    response = client.http.get(_instance_path(item), headers={"Accept": ANY})
    assert response.status_code == 303
    location = response.headers["Location"]
    fetched = requests.get(location, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"].startswith("multipart/related")

    fetched.body = fetched.content
    ((_, body),) = parts_of(fetched)
    assert body == data


@pytest.mark.parametrize("backend", ["aws"], indirect=True)
@pytest.mark.parametrize("inline_limit", [None, 1000])
def test_head_of_a_series_on_lambda_reads_no_blob(
    backend: str, tmp_path, inline_limit: int | None
) -> None:
    """Through API Gateway events (bodies joined in `deliver`), a HEAD of a series answers the
    GET's Content-Length without reading a blob; where the GET is a 303 to a copy under
    `tmp/` (over `InlineLimit`), the HEAD is a 200 and writes no copy (RFC 9110 §9.3.2)."""
    import boto3
    import requests

    options = {"inline_limit": inline_limit} if inline_limit else {}
    base = make_context(backend, tmp_path, **options)
    stored = store_instance(base, testdata(CT).read_bytes())
    counting = CountingBlobs(base.blobs)
    app = create_app(lambda: dataclasses.replace(base, blobs=counting))
    path = f"/dicom-web/studies/{stored.study_uid}/series/{stored.series_uid}"
    resource = "/dicom-web/studies/{study}/series/{series}"
    params = {"study": stored.study_uid, "series": stored.series_uid}
    headers = {"Host": HOST, "Accept": ANY}
    s3 = boto3.client("s3", region_name="us-east-1")

    def copies() -> int:
        return s3.list_objects_v2(Bucket="dicomweb-test", Prefix="tmp/")["KeyCount"]

    head = app(api_gateway_event("HEAD", path, resource, params, headers, None), None)
    assert head["statusCode"] == 200
    assert not head["body"]
    assert (counting.gets, counting.ranges, counting.opened) == ([], [], [])
    assert copies() == 0

    get = app(api_gateway_event("GET", path, resource, params, headers, None), None)
    if inline_limit:
        assert get["statusCode"] == 303 and copies() == 1
        body = requests.get(get["headers"]["Location"], timeout=30).content
    else:
        assert get["statusCode"] == 200
        body = base64.b64decode(get["body"])
    assert counting.ranges  # the counter sees the GET's reads
    assert head["headers"]["Content-Length"] == str(len(body))
    assert head["headers"]["Content-Type"].startswith('multipart/related; type="application/dicom"')
