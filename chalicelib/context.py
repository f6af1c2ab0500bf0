"""Builds the ports for the configured backend, once per process (per Lambda container)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from chalicelib.client.registry import ServerRegistry
from chalicelib.config import ConfigError, Settings, load_settings
from chalicelib.storage.ports import BlobStore, ConfigStore, JobRunner, JobStore, TagIndex


@dataclass
class Context:
    settings: Settings
    blobs: BlobStore
    index: TagIndex
    config_store: ConfigStore
    jobs: JobStore
    job_runner: JobRunner
    servers: ServerRegistry


def build_context(settings: Settings) -> Context:
    """The ports of `settings.backend`: `local` (files + SQLite, jobs in threads) or `aws`
    (S3 + DynamoDB, jobs on Step Functions)."""
    if settings.backend == "aws":
        # Checked here, not when settings are read: `chalice package` imports the app with
        # the stage's environment, where the stack fills BUCKET and TABLE in only at deploy.
        if not (settings.bucket and settings.table):
            raise ConfigError("BACKEND=aws needs BUCKET and TABLE (the stack's bucket and table)")
        import boto3
        from botocore.config import Config

        from chalicelib.storage.dynamo import DynamoConfigStore, DynamoTagIndex
        from chalicelib.storage.jobs_aws import DynamoJobStore, StepFunctionsJobRunner
        from chalicelib.storage.s3 import S3BlobStore
        from chalicelib.storage.secrets import SecretsManagerStore

        dynamodb = boto3.client("dynamodb", region_name=settings.region)
        # SigV4 for presigned URLs (boto3 presigns S3 with SigV2 unless told otherwise).
        s3 = boto3.client(
            "s3", region_name=settings.region, config=Config(signature_version="s3v4")
        )
        config_store = DynamoConfigStore(dynamodb, settings.table)
        secrets = SecretsManagerStore(
            boto3.client("secretsmanager", region_name=settings.region), f"{settings.table}/"
        )
        return Context(
            settings,
            S3BlobStore(s3, settings.bucket),
            DynamoTagIndex(dynamodb, settings.table),
            config_store,
            DynamoJobStore(dynamodb, settings.table),
            StepFunctionsJobRunner(settings.region, settings.jobs_state_machine_arn),
            ServerRegistry(settings.servers, config_store, settings.servers_in_database, secrets),
        )
    from chalicelib import jobs
    from chalicelib.ingest import remove_interrupted_writes
    from chalicelib.server.delete import finish_pending_deletes
    from chalicelib.storage.jobs_local import SqliteJobStore, ThreadJobRunner
    from chalicelib.storage.local import LocalBlobStore, SqliteConfigStore, SqliteTagIndex
    from chalicelib.storage.local.files import make_folders
    from chalicelib.storage.secrets import FileSecretStore

    data_dir = settings.data_dir
    make_folders(data_dir)  # for its owner only: patient data
    config_store = SqliteConfigStore(data_dir / "index.sqlite")
    job_store = SqliteJobStore(data_dir / "index.sqlite")
    runner = ThreadJobRunner(lambda job_id: jobs.run_step_with_retries(ctx, job_id))
    ctx = Context(
        settings,
        LocalBlobStore(data_dir / "blobs"),
        SqliteTagIndex(data_dir / "index.sqlite"),
        config_store,
        job_store,
        runner,
        ServerRegistry(
            settings.servers,
            config_store,
            settings.servers_in_database,
            FileSecretStore(data_dir / "secrets.json"),
        ),
    )
    finish_pending_deletes(ctx.index, ctx.blobs)
    remove_interrupted_writes(ctx.index, ctx.blobs)
    runner.resume(job_store.list())
    return ctx


@functools.cache
def default_settings() -> Settings:
    return load_settings()


@functools.cache
def default_context() -> Context:
    """The context of this process, built on the first request (not at import: a cold start
    pays for boto3 clients inside the first invocation's budget, and packaging needs none)."""
    return build_context(default_settings())
