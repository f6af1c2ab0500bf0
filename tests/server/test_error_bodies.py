"""No stack trace or path on disk in an error body, whatever fails."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from chalice.test import Client

from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from tests.conftest import make_context, testdata


def test_internal_error_body_names_the_request_not_the_code(tmp_path: Path) -> None:
    context = make_context("local", tmp_path)
    result = store_instance(context, testdata("2020-08-12-Christopher.dcm").read_bytes())
    assert result.status == "stored"
    # Damage the stored metadata document: reading it fails in a way no handler expects.
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "index.sqlite")) as db, db:
        assert db.execute("UPDATE instances SET metadata = x'00'").rowcount == 1
    client = Client(create_app(lambda: context))
    path = (
        f"/dicom-web/studies/{result.study_uid}/series/{result.series_uid}"
        f"/instances/{result.sop_instance_uid}/metadata"
    )
    response = client.http.get(path, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 500
    body = response.body.decode()
    assert json.loads(body)["RequestId"] == response.headers["X-Request-Id"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for leak in ("Traceback", str(tmp_path), 'File "', ".py", "gzip"):
        assert leak not in body
