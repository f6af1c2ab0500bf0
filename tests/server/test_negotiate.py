"""Tests of the Accept header rules (chalicelib/server/negotiate.py), PS3.18 §8.7 (2025b)."""

from __future__ import annotations

import pytest

from chalicelib.errors import BadRequest
from chalicelib.server.negotiate import accept_category, media_category, parse_accept


@pytest.mark.parametrize(
    ("member", "bulkdata", "category"),
    [
        ('multipart/related; type="application/dicom"', False, "dicom"),
        ("application/dicom+json", False, "dicom"),
        ('multipart/related; type="application/dicom+xml"', False, "dicom"),
        ('multipart/related; type="application/octet-stream"', False, "dicom"),
        ("application/octet-stream", True, "dicom"),
        ("image/jpeg", False, "rendered"),
        ('multipart/related; type="image/jpeg"', False, "rendered"),
        ("video/H265", False, "rendered"),
        ("image/jpeg", True, "dicom"),
        ('multipart/related; type="image/jp2"', True, "dicom"),
        ("video/mp4", True, "dicom"),
        ("image/png", True, "rendered"),
        ("text/html", False, "rendered"),
        ("application/pdf", True, "rendered"),
        ("*/*", False, None),
        ("image/*", True, None),
        ('multipart/related; type="image/*"', True, None),
        ("multipart/related", False, None),
        ("application/json", False, None),
    ],
)
def test_media_category_by_resource(member: str, bulkdata: bool, category: str | None) -> None:
    [entry] = parse_accept(member)
    assert media_category(entry.media, bulkdata) == category


@pytest.mark.parametrize(
    ("header", "bulkdata", "category"),
    [
        ('multipart/related; type="application/dicom", */*', False, "dicom"),
        ("image/jpeg, image/*, */*", False, "rendered"),
        ('image/jpeg, multipart/related; type="application/octet-stream"', True, "dicom"),
        ('multipart/related; type="application/dicom", image/jpeg; q=0', False, "dicom"),
        ("*/*", False, None),
        ("", True, None),
    ],
)
def test_accept_category_one_kind(header: str, bulkdata: bool, category: str | None) -> None:
    assert accept_category(parse_accept(header), bulkdata) == category


@pytest.mark.parametrize(
    ("header", "bulkdata"),
    [
        ('multipart/related; type="application/dicom", image/jpeg', False),
        ("application/dicom+json, text/html; q=0.1", False),
        ('multipart/related; type="image/jpeg", application/dicom', False),
        ("image/jpeg, image/png", True),
        ("application/octet-stream, text/plain", True),
    ],
)
def test_accept_category_mixed_is_400(header: str, bulkdata: bool) -> None:
    with pytest.raises(BadRequest, match=r"§8\.7\.5"):
        accept_category(parse_accept(header), bulkdata)
