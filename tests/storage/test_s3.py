"""S3BlobStore behaviour that only S3 has: answers shaped by the caller's IAM permissions,
DeleteObjects' batches."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.storage.s3 import DELETE_BATCH, S3BlobStore
from tests.storage.conftest import BUCKET, REGION


@pytest.mark.usefixtures("aws_env")
def test_exists_is_false_when_s3_answers_403() -> None:
    """HeadObject answers 403, not 404, to a caller that may not list the bucket."""
    from moto.core import set_initial_no_auth_action_count

    @set_initial_no_auth_action_count(4)
    def run() -> bool:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", region_name=REGION)
        iam.create_user(UserName="reader")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="reader", PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        client = boto3.client(
            "s3",
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        return S3BlobStore(client, BUCKET).exists("missing/key")

    assert run() is False


class CountingS3:
    """An S3 client that counts its DeleteObjects calls and the keys of each."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def delete_objects(self, **kwargs: Any) -> Any:
        self.batches.append(len(kwargs["Delete"]["Objects"]))
        return self._client.delete_objects(**kwargs)


@pytest.mark.usefixtures("aws_env")
def test_delete_many_sends_a_thousand_keys_per_call() -> None:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    counting = CountingS3(client)
    store = S3BlobStore(counting, BUCKET, prefix="blobs/")
    keys = [f"1.2.3/1.2.3.1/{n}.dcm" for n in range(DELETE_BATCH + 1)]
    for key in keys[::100]:
        store.put(key, b"x")
    assert store.delete_many(keys) == {}
    assert counting.batches == [DELETE_BATCH, 1]
    assert not any(store.exists(key) for key in keys[::100])
