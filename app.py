"""Chalice entry point: the DICOMweb server (see chalicelib/server/api.py) and its Lambdas:
the jobs worker that `infra/jobs.asl.json` loops over (chalicelib/jobs.py), the upload ingest
that S3 events under `incoming/` run (chalicelib/server/uploads.py), and the sweep that a
schedule of the stack runs (infra/stack.py).

Importing it loads no pydicom, numpy or Pillow and builds no AWS client: a Lambda cold start
pays only for what the first request needs (tests/test_cold_start.py).
"""

from typing import Any

from chalicelib.context import default_context, default_settings
from chalicelib.server.api import create_app
from chalicelib.server.uploads import ingest_s3_event

app = create_app(default_context, settings=default_settings())


@app.lambda_function(name="jobs_worker")
def jobs_worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.jobs import handle_worker_event

    return handle_worker_event(default_context(), event)


@app.lambda_function(name="ingest_upload")
def ingest_upload(event: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    """S3 ObjectCreated under `incoming/`: store each uploaded file as STOW-RS would."""
    return ingest_s3_event(default_context(), event)


@app.lambda_function(name="sweep")
def sweep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge's scheduled event (`SWEEP_SCHEDULE` in infra/stack.py): remove the blobs of
    deletes interrupted between their index commit and their blob removal, and the derived
    documents of deleted resources (`delete.finish_pending_deletes`); the blobs of stores
    stopped between their blob writes and their index commit (`ingest.
    remove_interrupted_writes`); and fail the jobs whose execution ended without saying so
    (`jobs.fail_abandoned`), and delete the finished jobs past `JobsHistorySize` that the
    grace of `jobs.RECENTLY_ENDED_SECONDS` kept (`jobs.forget_old_jobs`). Locally the server
    does the same, and resumes jobs, at start-up; on AWS nothing restarts, and DELETE (which
    also finishes deletes) is off on `prod`. Its timeout is 15 minutes (.chalice/config.json);
    a run cut short keeps what it confirmed."""
    from chalicelib.ingest import remove_interrupted_writes
    from chalicelib.jobs import fail_abandoned, forget_old_jobs
    from chalicelib.server.delete import finish_pending_deletes

    ctx = default_context()
    return {
        "BlobsDeleted": finish_pending_deletes(ctx.index, ctx.blobs),
        "InterruptedBlobsDeleted": remove_interrupted_writes(ctx.index, ctx.blobs),
        "JobsFailed": fail_abandoned(ctx),
        "JobsForgotten": forget_old_jobs(ctx),
    }
