"""Builds the ports for the configured backend, once per process (per Lambda container)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from chalicelib.config import Settings, load_settings
from chalicelib.storage.ports import BlobStore, ConfigStore, TagIndex


@dataclass
class Context:
    settings: Settings
    blobs: BlobStore
    index: TagIndex
    config_store: ConfigStore


def build_context(settings: Settings) -> Context:
    """The ports of `settings.backend`: `local` (files + SQLite) or `aws` (S3 + DynamoDB)."""
    if settings.backend == "aws":
        import boto3

        from chalicelib.storage.dynamo import DynamoConfigStore, DynamoTagIndex
        from chalicelib.storage.s3 import S3BlobStore

        dynamodb = boto3.client("dynamodb", region_name=settings.region)
        s3 = boto3.client("s3", region_name=settings.region)
        return Context(
            settings,
            S3BlobStore(s3, settings.bucket),
            DynamoTagIndex(dynamodb, settings.table),
            DynamoConfigStore(dynamodb, settings.table),
        )
    from chalicelib.storage.local import LocalBlobStore, SqliteConfigStore, SqliteTagIndex

    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    return Context(
        settings,
        LocalBlobStore(data_dir / "blobs"),
        SqliteTagIndex(data_dir / "index.sqlite"),
        SqliteConfigStore(data_dir / "index.sqlite"),
    )


@functools.cache
def default_context() -> Context:
    return build_context(load_settings())
