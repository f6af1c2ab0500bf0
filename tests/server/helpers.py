"""Small HTTP helpers for the server tests (chalice.test.Client on a context)."""

from __future__ import annotations

import io
import json
from typing import Any

from chalice.test import Client
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chalicelib.dicom.multipart import encode_multipart, parse_media_type, split_multipart

BOUNDARY = "TestBoundary7d3a"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
HOST = "dicomweb.test"


def stow_body(*instances: bytes) -> bytes:
    parts = [({"Content-Type": "application/dicom"}, d) for d in instances]
    return encode_multipart(parts, BOUNDARY)


def stow(client: Client, *instances: bytes, study: str | None = None, **headers: str) -> Any:
    path = "/dicom-web/studies" + (f"/{study}" if study else "")
    all_headers = {
        "Content-Type": STOW_CONTENT_TYPE,
        "Accept": "application/dicom+json",
        "Host": HOST,
        **headers,
    }
    return client.http.post(path, headers=all_headers, body=stow_body(*instances))


def json_of(response: Any) -> Any:
    return json.loads(response.body) if response.body else None


def parts_of(response: Any) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, body) of each part of a multipart/related answer."""
    media = parse_media_type(response.headers["Content-Type"])
    assert media.type == "multipart/related", response.headers["Content-Type"]
    return [(p.headers, p.body) for p in split_multipart(response.body, media.params["boundary"])]


def values(dataset: dict, tag: str) -> list:
    return dataset.get(tag, {}).get("Value", [])


def assert_no_route(response: Any) -> None:
    """The path has no route: the test client answers as API Gateway does, 403 "Missing
    Authentication Token" (infra maps it to 404; the local server answers our JSON 404)."""
    assert response.status_code == 403
    assert json.loads(response.body) == {"message": "Missing Authentication Token"}


def tiny_image(**attributes: Any) -> bytes:
    """A 2 × 2 8-bit MONOCHROME2 instance built from scratch, with `attributes` set on it."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in "123")
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 2, 2, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes([0, 1, 2, 3])
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class CountingBlobs:
    """A BlobStore that records what is read (injected, not patched)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gets: list[str] = []
        self.ranges: list[tuple[str, int, int]] = []
        self.opened: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.ranges.append((key, start, length))
        return self.inner.get_range(key, start, length)

    def open(self, key: str, start: int = 0) -> Any:
        self.opened.append((key, start))
        return self.inner.open(key, start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
