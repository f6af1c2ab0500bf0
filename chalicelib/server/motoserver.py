"""`make run-moto`: the local server on the AWS adapters (S3 + DynamoDB), against moto.

moto runs in process (`mock_aws`), so nothing leaves the machine; the data lives as long as
the process. This exercises the cloud code path by hand.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

BUCKET = "dicomweb-local"
TABLE = "dicomweb-local"


def main(argv: list[str] | None = None) -> int:
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "moto",
        "AWS_SECRET_ACCESS_KEY": "moto",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BACKEND": "aws",
        "BUCKET": BUCKET,
        "TABLE": TABLE,
    }.items():
        os.environ[name] = value
    # In-process moto's presigned URLs are not reachable by outside clients: answer inline.
    os.environ.setdefault("DICOMWEB_CONFIG", '{"DicomWeb": {"InlineLimit": 0}}')
    with mock_aws():
        _serialize_moto()
        import boto3

        from chalicelib.server import localserver
        from chalicelib.storage.dynamo import create_table

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        create_table(boto3.client("dynamodb", region_name="us-east-1"), TABLE)
        return localserver.main(argv)


def _serialize_moto() -> None:
    """Let moto answer one AWS call at a time. Its in-process backends are not thread-safe
    (moto 5: TransactWriteItems deep-copies the table while another request changes it and
    raises RuntimeError; counters updated at once lose increments), while the server answers
    requests on many threads: 8 clients storing into one study got 503s and wrong counts.
    DynamoDB and S3 make each call atomic; so does this lock."""
    from moto.core.models import botocore_stubber

    lock = threading.RLock()  # re-entrant: a call that makes another one cannot deadlock
    process_request = botocore_stubber.process_request

    def one_at_a_time(request: Any) -> Any:  # moto's AWSPreparedRequest and its answer
        with lock:
            return process_request(request)

    botocore_stubber.process_request = one_at_a_time


if __name__ == "__main__":
    sys.exit(main())
