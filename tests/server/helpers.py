"""Small HTTP helpers for the server tests (chalice.test.Client on a context)."""

from __future__ import annotations

import json
from typing import Any

from chalice.test import Client

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
