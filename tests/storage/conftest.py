"""Fixtures of the storage contract suite: every port on every adapter, `local` (files and
SQLite under tmp_path) and `aws` (S3 and DynamoDB on moto, in `aws_env` of tests/conftest.py;
never real AWS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.storage.dynamo import DynamoConfigStore, DynamoTagIndex, create_table
from chalicelib.storage.local import LocalBlobStore, SqliteConfigStore, SqliteTagIndex
from chalicelib.storage.ports import BlobStore, ConfigStore, InstanceRecord, TagIndex
from chalicelib.storage.s3 import S3BlobStore

REGION = "us-east-1"
BUCKET = "dicomweb-test"
TABLE = "dicomweb-index"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY = "1.2.3"
SERIES = "1.2.3.1"
SOP = "1.2.3.1.1"


def build_record(
    study: str = STUDY,
    series: str = SERIES,
    sop: str = SOP,
    *,
    modality: str = "CT",
    sop_class: str = CT_IMAGE,
    blob_key: str | None = None,
    metadata_key: str | None = None,
    comments: str = "",
) -> InstanceRecord:
    """An InstanceRecord with plain DICOM JSON tags; `comments` pads the instance tags."""
    instance_tags: dict[str, Any] = {
        "00080016": {"vr": "UI", "Value": [sop_class]},
        "00080018": {"vr": "UI", "Value": [sop]},
    }
    if comments:
        instance_tags["00204000"] = {"vr": "LT", "Value": [comments]}
    return InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        blob_key=blob_key or f"{study}/{series}/{sop}/0123456789abcdef.dcm",
        size=1024,
        sha256="0" * 64,
        study_tags={
            "0020000D": {"vr": "UI", "Value": [study]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00100020": {"vr": "LO", "Value": ["PAT-1"]},
            "00080020": {"vr": "DA", "Value": ["20240102"]},
            "00080050": {"vr": "SH", "Value": ["ACC-1"]},
        },
        series_tags={
            "0020000E": {"vr": "UI", "Value": [series]},
            "00080060": {"vr": "CS", "Value": [modality]},
        },
        instance_tags=instance_tags,
        orthanc_ids={
            "patient": "patient-id",
            "study": f"study-{study}",
            "series": f"series-{series}",
            "instance": f"instance-{sop}",
        },
        metadata_key=metadata_key,
    )


@pytest.fixture
def make_record() -> Callable[..., InstanceRecord]:
    return build_record


@pytest.fixture
def dynamodb(aws_env: None) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    create_table(client, TABLE)
    return client


@pytest.fixture(params=["local", "aws"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def blob_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if backend == "local":
        return LocalBlobStore(tmp_path / "blobs")
    request.getfixturevalue("aws_env")
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return S3BlobStore(client, BUCKET, prefix="blobs/")


@pytest.fixture
def tag_index(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TagIndex]:
    if backend == "local":
        index = SqliteTagIndex(tmp_path / "index.sqlite")
        yield index
        index.close()
    else:
        yield DynamoTagIndex(request.getfixturevalue("dynamodb"), TABLE)


@pytest.fixture
def config_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ConfigStore]:
    """The config store, sharing the index's database file or table."""
    if backend == "local":
        store = SqliteConfigStore(tmp_path / "index.sqlite")
        yield store
        store.close()
    else:
        yield DynamoConfigStore(request.getfixturevalue("dynamodb"), TABLE)
