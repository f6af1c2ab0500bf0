"""The job API in Orthanc's shape (`GET /jobs`, `/jobs/{id}`, `POST /jobs/{id}/cancel|pause|
resume|resubmit`), served under the DICOMweb root: `{root}/jobs/{id}`. Orthanc serves it at
its REST root; the `Path` our asynchronous calls answer (`.././../jobs/{id}`, Orthanc's string)
resolves to ours. Every route is `admin`."""

from __future__ import annotations

from chalicelib import jobs
from chalicelib.errors import NotFound
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response
from chalicelib.storage import ports

service = Service("jobs")


def _job(request: WebRequest, job_id: str) -> ports.JobRecord:
    try:
        return request.context.jobs.get(job_id)
    except ports.NotFound:
        raise NotFound(f"no job {job_id!r} (see GET jobs)") from None


@service.route("/jobs", "GET", scope="admin")
def list_jobs(request: WebRequest) -> WebResponse:
    records = request.context.jobs.list()
    if request.query_values("expand"):
        return json_response([jobs.orthanc_view(request.context, job) for job in records])
    return json_response([job.id for job in records])


@service.route("/jobs/{job_id}", "GET", scope="admin")
def get_job(request: WebRequest, job_id: str) -> WebResponse:
    return json_response(jobs.orthanc_view(request.context, _job(request, job_id)))


def _control(action: str):  # type: ignore[no-untyped-def]
    change = getattr(jobs, action)

    @service.route(f"/jobs/{{job_id}}/{action}", "POST", scope="admin")
    def control(request: WebRequest, job_id: str) -> WebResponse:
        _job(request, job_id)
        change(request.context, job_id)
        return json_response({})

    control.__name__ = f"{action}_job"
    return control


cancel_job, pause_job, resume_job, resubmit_job = (
    _control(action) for action in ("cancel", "pause", "resume", "resubmit")
)
