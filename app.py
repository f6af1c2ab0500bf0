"""Chalice entry point: the DICOMweb server (see chalicelib/server/api.py) and the jobs worker
Lambda that `infra/jobs.asl.json` loops over (see chalicelib/jobs.py)."""

from typing import Any

from chalicelib.context import default_context
from chalicelib.server.api import create_app

app = create_app()


@app.lambda_function(name="jobs_worker")
def jobs_worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.jobs import handle_worker_event

    return handle_worker_event(default_context(), event)
