"""The job routes through chalice.test.Client on both backends: listing, Orthanc's shape,
state changes and their refusals, a remote that is down, the synchronous deadline on AWS."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import jobs
from chalicelib.context import Context
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from tests.conftest import REPO, make_context, testdata
from tests.peers import refused_port

PASSWORD = "pa55-w0rd-job"
JOB_KEYS = {
    "ID",
    "Type",
    "State",
    "Progress",
    "Priority",
    "CreationTime",
    "EffectiveRuntime",
    "ErrorCode",
    "ErrorDescription",
    "ErrorDetails",
    "Timestamp",
    "Content",
}


def jobs_context(backend: str, tmp_path: Path, **options: Any) -> Context:
    """A context whose server `down` has nothing listening; on AWS a state machine exists (moto
    records executions without running them, so jobs stay where the routes put them)."""
    servers = {"down": [f"http://127.0.0.1:{refused_port()}/dicom-web/", "user", PASSWORD]}
    if backend == "aws":
        definition = (
            (REPO / "infra" / "jobs.asl.json")
            .read_text()
            .replace(
                "${JobsWorkerArn}", "arn:aws:lambda:us-east-1:123456789012:function:jobs_worker"
            )
        )
        options["jobs_state_machine_arn"] = boto3.client(
            "stepfunctions", region_name="us-east-1"
        ).create_state_machine(
            name="jobs", definition=definition, roleArn="arn:aws:iam::123456789012:role/jobs"
        )["stateMachineArn"]
    return make_context(backend, tmp_path, servers=servers, http_timeout=5, **options)


def call(client: Client, method: str, path: str, body: Any = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    response = client.http.request(method, path, body=data)
    assert PASSWORD.encode() not in response.body
    return response


def stored_study(ctx: Context) -> str:
    result = store_instance(ctx, testdata("2020-08-12-Christopher.dcm").read_bytes())
    assert result.status == "stored"
    return result.study_uid


def paused_job(ctx: Context) -> str:
    job = jobs.new_job(jobs.STOW, "down", {"Resources": [], "HttpHeaders": {}}, {}, 4)
    ctx.jobs.create(job)
    return job.id


def test_job_controls_follow_orthanc_states(backend: str, tmp_path: Path) -> None:
    ctx = jobs_context(backend, tmp_path)
    client = Client(create_app(lambda: ctx))
    job_id = paused_job(ctx)
    assert json.loads(call(client, "GET", "/dicom-web/jobs").body) == [job_id]
    view = json.loads(call(client, "GET", f"/dicom-web/jobs/{job_id}").body)
    assert set(view) == JOB_KEYS
    assert (view["Type"], view["State"], view["Priority"]) == ("DicomWebStowClient", "Pending", 4)

    refused = call(client, "POST", f"/dicom-web/jobs/{job_id}/resume")
    assert refused.status_code == 400 and "Pending" in json.loads(refused.body)["Message"]
    assert json.loads(call(client, "POST", f"/dicom-web/jobs/{job_id}/pause").body) == {}
    assert ctx.jobs.get(job_id).state == "Paused"
    assert call(client, "POST", f"/dicom-web/jobs/{job_id}/resubmit").status_code == 400
    assert json.loads(call(client, "POST", f"/dicom-web/jobs/{job_id}/cancel").body) == {}
    canceled = json.loads(call(client, "GET", f"/dicom-web/jobs/{job_id}").body)
    assert (canceled["State"], canceled["ErrorCode"]) == ("Failure", jobs.CANCELED_JOB)
    assert "CompletionTime" in canceled
    assert call(client, "POST", f"/dicom-web/jobs/{job_id}/cancel").status_code == 400
    assert json.loads(call(client, "POST", f"/dicom-web/jobs/{job_id}/resubmit").body) == {}
    assert ctx.jobs.get(job_id).state in ("Pending", "Running", "Failure", "Success")
    if backend == "aws":  # resubmit started an execution of the state machine
        assert ctx.jobs.get(job_id).execution.startswith("arn:aws:states:")
    expanded = json.loads(call(client, "GET", "/dicom-web/jobs?expand").body)
    assert [j["ID"] for j in expanded] == [job_id]


def test_remote_down_fails_the_job_with_a_clear_message(tmp_path: Path) -> None:
    ctx = jobs_context("local", tmp_path)
    client = Client(create_app(lambda: ctx))
    body = {"Resources": [{"Study": stored_study(ctx)}]}
    response = call(client, "POST", "/dicom-web/servers/down/stow", body)
    assert response.status_code == 502
    assert "cannot connect" in json.loads(response.body)["Message"]
    (job,) = json.loads(call(client, "GET", "/dicom-web/jobs?expand").body)
    assert (job["State"], job["ErrorCode"]) == ("Failure", jobs.NETWORK_PROTOCOL)
    assert "cannot connect" in job["ErrorDescription"] and "'down'" in job["ErrorDescription"]


def test_remote_that_never_answers_fails_the_job_after_its_timeout(tmp_path: Path) -> None:
    """A remote that accepts the connection and never answers: every attempt ends at
    HttpTimeout, and the job fails saying so (no hang)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        ctx = make_context(
            "local",
            tmp_path,
            servers={"silent": [f"http://127.0.0.1:{port}/dicom-web/"]},
            http_timeout=1,
        )
        client = Client(create_app(lambda: ctx))
        body = {"Resources": [{"Study": stored_study(ctx)}]}
        response = call(client, "POST", "/dicom-web/servers/silent/stow", body)
    assert response.status_code == 502
    assert "no answer within 1 s" in json.loads(response.body)["Message"]
    (job,) = ctx.jobs.list()
    assert job.state == "Failure" and "'silent'" in job.error_description


def test_asynchronous_stow_answers_id_and_path(backend: str, tmp_path: Path) -> None:
    ctx = jobs_context(backend, tmp_path)
    client = Client(create_app(lambda: ctx))
    body = {"Resources": [{"Study": stored_study(ctx)}], "Synchronous": False}
    response = call(client, "POST", "/dicom-web/servers/down/stow", body)
    assert response.status_code == 200
    answer = json.loads(response.body)
    assert answer["Path"] == f".././../jobs/{answer['ID']}"
    assert ctx.jobs.get(answer["ID"]).type == jobs.STOW


def test_synchronous_call_on_aws_answers_202_after_the_deadline(
    aws_env: None, tmp_path: Path
) -> None:
    ctx = jobs_context("aws", tmp_path, jobs_synchronous_deadline=0)
    client = Client(create_app(lambda: ctx))
    body = {"Resources": [{"Study": stored_study(ctx)}]}
    response = call(client, "POST", "/dicom-web/servers/down/stow", body)
    assert response.status_code == 202
    answer = json.loads(response.body)
    assert answer["Path"] == f".././../jobs/{answer['ID']}"
    assert "goes on" in response.headers["Warning"]
    assert ctx.jobs.get(answer["ID"]).execution.startswith("arn:aws:states:")


@pytest.mark.parametrize("deadline", [-1, 29])
def test_synchronous_deadline_is_bounded(deadline: int) -> None:
    from chalicelib.config import ConfigError, load_settings

    document = json.dumps({"DicomWeb": {"JobsSynchronousDeadline": deadline}})
    with pytest.raises(ConfigError, match="JobsSynchronousDeadline"):
        load_settings({"DICOMWEB_CONFIG": document})


def _longest_uids(count: int) -> list[dict[str, str]]:
    """`count` resources, each three UIDs of the most characters (64)."""
    prefix = "1.2.3." + "9" * 50

    def uid(level: int, n: int) -> str:
        return f"{prefix}.{level}{n:06d}"

    return [{"Study": uid(1, n), "Series": uid(2, n), "Instance": uid(3, n)} for n in range(count)]


def test_job_holds_at_most_max_job_resources(backend: str, tmp_path: Path) -> None:
    """On AWS a job record is one DynamoDB item (400 KB): 3,000 resources made the call a 500.
    The most a job holds fits; one more is a 413 on both backends."""
    from chalicelib.client.resources import MAX_JOB_RESOURCES

    ctx = jobs_context(backend, tmp_path)
    client = Client(create_app(lambda: ctx))
    resources = _longest_uids(MAX_JOB_RESOURCES + 1)
    assert all(len(uid) == 64 for uid in resources[-1].values())
    for operation in ("retrieve", "stow"):
        body = {"Resources": resources, "Synchronous": False}
        response = call(client, "POST", f"/dicom-web/servers/down/{operation}", body)
        assert response.status_code == 413, (operation, response.body)
        message = json.loads(response.body)["Message"]
        assert f"{MAX_JOB_RESOURCES + 1} resources" in message, message
    body = {"Resources": resources[:MAX_JOB_RESOURCES], "Synchronous": False}
    response = call(client, "POST", "/dicom-web/servers/down/retrieve", body)
    assert response.status_code == 200, response.body
    assert ctx.jobs.get(json.loads(response.body)["ID"]).params["Resources"][-1]["Study"]


@pytest.mark.parametrize(
    "body",
    [
        {"Uri": "/studies/" + "1" * 300_000},
        {"Uri": "/studies", "HttpHeaders": {"X-Big": "v" * 300_000}},
        {"Uri": "/studies", "Arguments": {"PatientID": "v" * 300_000}},
    ],
    ids=["Uri", "HttpHeaders", "Arguments"],
)
def test_job_request_over_max_job_request_bytes_is_413(
    backend: str, tmp_path: Path, body: dict[str, Any]
) -> None:
    """A 500 KB Uri made the job record larger than a DynamoDB item: a 500 on AWS."""
    from chalicelib.server.servers import MAX_JOB_REQUEST_BYTES

    ctx = jobs_context(backend, tmp_path)
    client = Client(create_app(lambda: ctx))
    response = call(client, "POST", "/dicom-web/servers/down/wado", {**body, "Synchronous": False})
    assert response.status_code == 413, response.body
    assert f"at most {MAX_JOB_REQUEST_BYTES}" in json.loads(response.body)["Message"]
    assert ctx.jobs.list() == []
