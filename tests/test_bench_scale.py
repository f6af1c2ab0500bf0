"""The scale benchmark (`bench/scale.py`) on a few studies, both backends, one request per row.

No timing assertions: every row answers on every size, with reads counted, and the DynamoDB
loader still writes the items the adapter's own store writes (it stops otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale
from tests.conftest import fake_aws_credentials

ROWS = ["studies", "studies_patient_name", "studies_study_date", "studies_patient_id"]
ROWS += ["studies_accession_number", "studies_modalities", "series_of_study", "series_metadata"]


def test_scale_main_tiny(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_aws_credentials(monkeypatch)
    out = tmp_path / "scale.json"
    args = ["--sizes", "4,8", "--moto-sizes", "3,6", "--repeats", "1", "--warmup", "0"]
    assert scale.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [(r["backend"], r["studies"]) for r in runs] == [
        ("local", 4),
        ("local", 8),
        ("moto", 3),
        ("moto", 6),
    ]
    for run in runs:
        assert [r["id"] for r in run["requests"]] == ROWS
        for request in run["requests"]:
            assert request["status"] in (200, 204), request  # 204: no SMI* among 8 studies
            assert request["samples"] == 1
        studies = run["requests"][0]
        assert studies["results"] == run["studies"]
        if run["backend"] == "moto":
            assert studies["reads"]["items_read"] >= run["studies"]
            assert studies["reads"]["rcu_estimate"] > 0
        else:
            assert studies["reads"]["rows"] >= run["studies"]
    assert {(g["backend"], g["id"]) for g in result["growth"]} == {
        (backend, row) for backend in ("local", "moto") for row in ROWS
    }
    table = capsys.readouterr().out
    assert "| local | `studies` |" in table and "| moto | `series_metadata` |" in table


def test_dynamo_items_match_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast loader's items for a study of three instances are those of three stores
    through `DynamoTagIndex.store_instance` (fails when the adapter changes its items)."""
    import boto3

    fake_aws_credentials(monkeypatch)
    with scale.moto_backend() as backend:
        records = scale.ingest_records(backend.context, [scale.StudySpec(1, 3, seed=5)], set())
        assert len(records) == 3
        scale.check_dynamo_items(boto3.client("dynamodb", region_name=scale.REGION), records)
