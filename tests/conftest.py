"""Shared fixtures: test data, contexts on every backend, the HTTP test client."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from chalicelib.config import Settings
from chalicelib.context import Context, build_context

if TYPE_CHECKING:
    from chalice.test import Client

pytest_plugins = ["tests.peers"]

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
TESTDATA = SHARED / "testdata" / "orthanc-tests"


def testdata(name: str) -> Path:
    path = TESTDATA / name
    if not path.exists():
        pytest.fail(f"test data {path} is missing (set SHARED_DIR to the shared/ folder)")
    return path


testdata.__test__ = False  # a helper, not a test, whatever pytest thinks of its name


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no endpoint or profile, so that nothing can reach real AWS."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@functools.cache
def _botocore_loader() -> Any:
    """One botocore loader for the whole run: it caches the service models it parses."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def fresh_boto3_session() -> None:
    """A new default boto3 session (as `mock_aws` gives each test: own credentials, events and
    clients) that reads botocore's models through the run's one loader. A new session parses
    endpoints.json and each service model again, 0.1 to 0.3 s, most of an aws test's set-up."""
    import boto3
    import botocore.session

    session = botocore.session.get_session()
    session.register_component("data_loader", _botocore_loader())
    boto3.setup_default_session(botocore_session=session)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process, under fake credentials."""
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        fresh_boto3_session()
        yield


def deny_s3_deletes(bucket: str, resource: str) -> None:
    """A bucket policy (on moto) that refuses s3:DeleteObject on `resource` (a key or a
    `prefix*`): DeleteObjects then answers 200 and names those keys in its Errors."""
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject"}
    statement = {**deny, "Resource": f"arn:aws:s3:::{bucket}/{resource}"}
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    boto3.client("s3", region_name="us-east-1").put_bucket_policy(
        Bucket=bucket, Policy=json.dumps(policy)
    )


def make_context(backend: str, tmp_path: Path, **options: object) -> Context:
    """A context on `backend` (aws needs the aws_env fixture active)."""
    if backend == "aws":
        import boto3

        from chalicelib.storage.dynamo import create_table

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="dicomweb-test")
        create_table(boto3.client("dynamodb", region_name="us-east-1"), "dicomweb-test")
        settings = Settings(backend="aws", bucket="dicomweb-test", table="dicomweb-test", **options)
    else:
        settings = Settings(backend="local", data_dir=tmp_path / "data", **options)
    return build_context(settings)


@pytest.fixture(params=["local", "aws"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "aws":
        request.getfixturevalue("aws_env")
    return request.param


@pytest.fixture
def context(backend: str, tmp_path: Path) -> Context:
    return make_context(backend, tmp_path)


@pytest.fixture
def client(context: Context) -> Client:
    """The HTTP test client on the app served from `context`."""
    from chalice.test import Client

    from chalicelib.server.api import create_app

    return Client(create_app(lambda: context))
