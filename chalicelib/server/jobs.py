"""The job API in Orthanc's shape (`GET /jobs`, `/jobs/{id}`, `POST /jobs/{id}/cancel|pause|
resume|resubmit`, `DELETE /jobs/{id}`) and a retrieve job's list (`GET /jobs/{id}/instances`),
served under the DICOMweb root: `{root}/jobs/{id}`. Orthanc serves it at its REST root; the
`Path` our asynchronous calls answer (`.././../jobs/{id}`, Orthanc's string) resolves to ours.
Every route is `admin`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chalicelib import jobs
from chalicelib.dicom.query import UNSIGNED_INT
from chalicelib.errors import BadRequest, NotFound
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response
from chalicelib.storage.ports import JobRecord

service = Service("jobs")


@service.route("/jobs", "GET", scope="admin")
def list_jobs(request: WebRequest) -> WebResponse:
    """Orthanc's job list: the ids, or with `expand` each job's view; a job deleted (DELETE,
    retention) between the list and its view's read of its blobs is gone, and left out."""
    records = request.context.jobs.list()
    if request.query_values("expand"):
        return json_response(list(_views(request, records)))
    return json_response([job.id for job in records])


def _views(request: WebRequest, records: list[JobRecord]) -> Iterator[dict[str, Any]]:
    for job in records:
        try:
            yield jobs.orthanc_view(request.context, job)
        except NotFound:
            continue


@service.route("/jobs/{job_id}", "GET", scope="admin")
def get_job(request: WebRequest, job_id: str) -> WebResponse:
    return json_response(jobs.orthanc_view(request.context, jobs.read(request.context, job_id)))


@service.route("/jobs/{job_id}", "DELETE", scope="admin")
def delete_job(request: WebRequest, job_id: str) -> WebResponse:
    """Orthanc's "Delete a job from history" (1.12.2): a finished job (Success or Failure)
    and its instance list, answering an empty body; 400 for one that has not ended (cancel it
    first). The instances it stored stay."""
    jobs.delete(request.context, job_id)
    return WebResponse(200, b"", {}, "text/plain")


MAX_INSTANCES_PAGE = 10_000
"""Ids one page of a retrieve job's list may hold (450 KB)."""


def _count(request: WebRequest, name: str, default: int, maximum: int) -> int:
    values = request.query_values(name)
    if not values:
        return default
    if not UNSIGNED_INT.fullmatch(values[-1]) or int(values[-1]) > maximum:
        raise BadRequest(f"{name} must be a whole number up to {maximum}, not {values[-1]!r}")
    return int(values[-1])


@service.route("/jobs/{job_id}/instances", "GET", scope="admin")
def job_instances(request: WebRequest, job_id: str) -> WebResponse:
    """A page of the Orthanc ids a retrieve job stored, in the order stored: `offset` (0) and
    `limit` (up to MAX_INSTANCES_PAGE, the default). Past `retrieve.INLINE_INSTANCES` the job's
    Content gives `InstancesCount` and `InstancesPath` (this route) in place of `Instances`."""
    job = jobs.read(request.context, job_id)
    if job.type != jobs.RETRIEVE:
        raise BadRequest(f"job {job_id} is a {job.type} job: only a retrieve lists instances")
    from chalicelib.client import retrieve  # loads `requests`: not at a cold start

    offset = _count(request, "offset", 0, 10**12)
    limit = _count(request, "limit", MAX_INSTANCES_PAGE, MAX_INSTANCES_PAGE)
    return json_response(retrieve.instances_page(request.context, job, offset, limit))


def _control(action: str):  # type: ignore[no-untyped-def]
    change = getattr(jobs, action)

    @service.route(f"/jobs/{{job_id}}/{action}", "POST", scope="admin")
    def control(request: WebRequest, job_id: str) -> WebResponse:
        change(request.context, job_id)
        return json_response({})

    control.__name__ = f"{action}_job"
    return control


cancel_job, pause_job, resume_job, resubmit_job = (
    _control(action) for action in ("cancel", "pause", "resume", "resubmit")
)
