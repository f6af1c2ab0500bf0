"""`infra/jobs.asl.json` executed by moto's Step Functions interpreter, on the AWS adapters
(moto), against a local server of ours as the remote.

moto runs Lambda code only in Docker, so the state machine's Lambda task is dispatched to the
worker handler in process: botocore's `before-call.lambda.Invoke` event (its documented
extension point, the one moto itself uses) answers the interpreter's Invoke with what
`app.jobs_worker` would return, or with the Lambda error it would raise.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from chalicelib import errors, jobs
from chalicelib.context import Context, build_context
from chalicelib.ingest import store_instance
from tests.client.test_two_servers import Instance, instance_count, large_study
from tests.conftest import REPO, fake_aws_credentials, fresh_boto3_session, make_context
from tests.peers import free_port
from tests.server.test_localserver import local_server

WORKER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:jobs_worker"


class WorkerDispatch:
    """Answers the interpreter's Lambda Invoke with the worker handler, in process;
    `inject` holds exceptions raised instead of running the next invocations."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.inject: list[Exception] = []
        self.events: list[dict[str, Any]] = []
        self.answers: list[Any] = []
        """What each invocation answered, the worker's payload or its Lambda error."""
        self.hold: threading.Event | None = None
        self.hold_at = 1
        """When `hold` is set, invocation number `hold_at` waits for it; `held` says so."""
        self.held = threading.Event()

    def __call__(self, params: dict[str, Any], **kwargs: Any) -> tuple[AWSResponse, dict]:
        event = json.loads(params["body"] or b"{}")
        self.events.append(event)
        parsed: dict[str, Any] = {"StatusCode": 200}
        try:
            if self.inject and "Error" not in event:
                raise self.inject.pop(0)
            if self.hold is not None and len(self.events) == self.hold_at:
                hold, self.hold = self.hold, None
                self.held.set()
                assert hold.wait(60)
            assert self.ctx is not None
            payload: Any = jobs.handle_worker_event(self.ctx, event)
        except Exception as exc:
            payload = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            parsed["FunctionError"] = "Unhandled"
        self.answers.append(payload)
        parsed["Payload"] = io.BytesIO(json.dumps(payload).encode())
        return AWSResponse(WORKER_ARN, 200, {}, None), parsed


@pytest.fixture
def dispatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerDispatch]:
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    worker = WorkerDispatch()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        fresh_boto3_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register("before-call.lambda.Invoke", worker)
        yield worker
        boto3.DEFAULT_SESSION.events.unregister("before-call.lambda.Invoke", worker)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[str]:
    with local_server(tmp_path / "remote", free_port()) as url:
        yield url


def state_machine(definition: str = "", name: str = "dicomweb-jobs") -> str:
    definition = definition or (REPO / "infra" / "jobs.asl.json").read_text()
    response = boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
        name=name,
        definition=definition.replace("${JobsWorkerArn}", WORKER_ARN),
        roleArn="arn:aws:iam::123456789012:role/jobs",
    )
    return response["stateMachineArn"]


def aws_context(tmp_path: Path, remote: str, dispatch: WorkerDispatch) -> Context:
    servers = {"remote": [f"{remote}/dicom-web/"], "wrong-path": [f"{remote}/nowhere/"]}
    ctx = make_context(
        "aws",
        tmp_path,
        servers=servers,
        jobs_state_machine_arn=state_machine(),
        stow_max_instances=3,
    )
    dispatch.ctx = ctx
    return ctx


def start_stow(ctx: Context, study: list[Instance], server: str = "remote") -> str:
    for instance in study:
        assert store_instance(ctx, instance.data).status == "stored"
    job = jobs.new_job(
        jobs.STOW,
        server,
        {"Resources": [[study[0].study]], "HttpHeaders": {}, "InstancesTotal": len(study)},
        {"Server": server},
        0,
    )
    return jobs.submit(ctx, job).id


def finished(ctx: Context, job_id: str) -> tuple[Any, dict[str, Any]]:
    """The job record and its execution's description once the execution ended."""
    client = boto3.client("stepfunctions", region_name="us-east-1")
    deadline = time.monotonic() + 120
    while True:
        job = ctx.jobs.get(job_id)
        execution = client.describe_execution(executionArn=job.execution)
        if execution["status"] != "RUNNING":
            return ctx.jobs.get(job_id), execution
        assert time.monotonic() < deadline, (job, execution)
        time.sleep(0.1)


def test_execution_runs_the_job_in_batches(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    ctx = aws_context(tmp_path, remote, dispatch)
    study = large_study(7)
    job, execution = finished(ctx, start_stow(ctx, study))
    assert execution["status"] == "SUCCEEDED"
    assert (job.state, job.progress, job.content["InstancesCount"]) == ("Success", 100, "7")
    assert len(dispatch.events) == 3  # batches of 3: one invocation each, no per-instance state
    assert all(set(event) == {"JobId", "Execution"} for event in dispatch.events)
    assert {event["Execution"] for event in dispatch.events} == {job.execution}
    assert instance_count(remote, study[0].study) == 7


def test_transient_failure_is_retried(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    ctx = aws_context(tmp_path, remote, dispatch)
    dispatch.inject.append(jobs.TransientJobError("remote answered 503 (injected)"))
    study = large_study(4)
    job, execution = finished(ctx, start_stow(ctx, study))
    assert execution["status"] == "SUCCEEDED"
    assert job.state == "Success" and job.content["InstancesCount"] == "4"
    assert len(dispatch.events) == 3  # the failed invocation, then two batches
    assert instance_count(remote, study[0].study) == 4


def test_permanent_remote_failure_fails_the_job(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    ctx = aws_context(tmp_path, remote, dispatch)
    study = large_study(2)
    job, execution = finished(ctx, start_stow(ctx, study, server="wrong-path"))
    assert job.state == "Failure"
    assert "404" in job.error_description and "wrong-path" in job.error_description
    assert instance_count(remote, study[0].study) == 0
    assert execution["status"] == "SUCCEEDED"  # the worker recorded the failure itself


def test_unexpected_worker_error_is_caught_and_recorded(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    ctx = aws_context(tmp_path, remote, dispatch)
    dispatch.inject.append(KeyError("injected defect"))
    study = large_study(2)
    job, execution = finished(ctx, start_stow(ctx, study))
    assert execution["status"] == "FAILED"
    assert job.state == "Failure"
    assert "KeyError" in job.error_description and "injected defect" in job.error_description
    assert dispatch.events[-1]["Error"] == "KeyError"
    assert instance_count(remote, study[0].study) == 0


def test_pause_stops_the_execution_and_resume_goes_on_from_the_cursor(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    """Pause between two steps: the execution is stopped where it is, the job keeps its cursor,
    and resume starts a new execution that sends the rest."""
    ctx = aws_context(tmp_path, remote, dispatch)
    release = threading.Event()
    dispatch.hold, dispatch.hold_at = release, 2
    study = large_study(5)
    job_id = start_stow(ctx, study)
    assert dispatch.held.wait(60)
    first_execution = ctx.jobs.get(job_id).execution
    jobs.pause(ctx, job_id)
    release.set()
    client = boto3.client("stepfunctions", region_name="us-east-1")
    deadline = time.monotonic() + 60
    while client.describe_execution(executionArn=first_execution)["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.describe_execution(executionArn=first_execution)["status"] == "ABORTED"
    paused = ctx.jobs.get(job_id)
    assert paused.state == "Paused" and paused.cursor["sent"] == 3  # the first batch
    jobs.resume(ctx, job_id)
    job, execution = finished(ctx, job_id)
    assert execution["executionArn"] != first_execution and execution["status"] == "SUCCEEDED"
    assert job.state == "Success" and job.content["InstancesCount"] == "5"
    assert instance_count(remote, study[0].study) == 5
    assert len(dispatch.events) == 3  # batch 1, the held invocation (paused: no step), batch 2


def test_long_job_goes_on_in_a_new_execution(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    """After JobsStepsPerExecution steps (2 here) the worker starts a fresh execution of the
    same job and its own ends; the job record follows the new execution, so the sweep's
    `is_running` asks about the one that runs. The worker has no JOBS_STATE_MACHINE_ARN, as
    on AWS: it starts the machine of the execution that invoked it."""
    ctx = aws_context(tmp_path, remote, dispatch)
    worker_settings = replace(ctx.settings, jobs_steps_per_execution=2, jobs_state_machine_arn="")
    dispatch.ctx = build_context(worker_settings)
    study = large_study(7)  # batches of 3: three steps
    job_id = start_stow(ctx, study)
    first = None
    client = boto3.client("stepfunctions", region_name="us-east-1")
    deadline = time.monotonic() + 120
    while True:  # the first execution ends when the second has been recorded
        job = ctx.jobs.get(job_id)
        first = first or job.execution
        if job.execution != first:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    job, second = finished(ctx, job_id)
    assert (job.state, job.content["InstancesCount"]) == ("Success", "7")
    assert instance_count(remote, study[0].study) == 7
    ended = client.describe_execution(executionArn=first)
    assert (ended["status"], json.loads(ended["output"])["Continued"]) == ("SUCCEEDED", True)
    assert second["status"] == "SUCCEEDED" and second["executionArn"] != first
    machine = ended["stateMachineArn"]
    assert second["stateMachineArn"] == machine
    executions = client.list_executions(stateMachineArn=machine)["executions"]
    assert {e["executionArn"] for e in executions} == {first, second["executionArn"]}
    assert [e["Execution"] for e in dispatch.events] == [first, first, second["executionArn"]]
    assert job.execution == second["executionArn"] and job.execution_steps == 1


def definition_before_continuations() -> str:
    """`infra/jobs.asl.json` as it was before jobs continued as new (61dc56d): RunStep passes
    the job id only and keeps Done only of the worker's answer, looping back on not Done."""
    asl = json.loads((REPO / "infra" / "jobs.asl.json").read_text())
    run_step, is_done = asl["States"]["RunStep"], asl["States"]["IsDone"]
    del run_step["Parameters"]["Execution.$"], run_step["ResultSelector"]["Continued.$"]
    is_done["Choices"] = [c for c in is_done["Choices"] if c["Variable"] == "$.Done"]
    del asl["States"]["ContinuedAsNew"]
    return json.dumps(asl)


def test_execution_started_before_continuations_runs_the_job_alone(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    """An execution started before the deploy that brought continuations keeps its old
    definition, which would not end on Continued: the new worker runs the job in it to the
    end, past JobsStepsPerExecution, and starts no second execution stepping the same job
    beside it (it did before: the job's recorded execution stood in for the missing one)."""
    ctx = aws_context(tmp_path, remote, dispatch)
    before = state_machine(definition_before_continuations(), "dicomweb-jobs-before")
    settings = replace(ctx.settings, jobs_state_machine_arn=before, jobs_steps_per_execution=2)
    dispatch.ctx = build_context(settings)
    study = large_study(7)  # batches of 3: three steps
    job_id = start_stow(dispatch.ctx, study)
    job, execution = finished(ctx, job_id)
    assert (job.state, job.content["InstancesCount"]) == ("Success", "7")
    assert execution["status"] == "SUCCEEDED" and job.execution_steps == 3
    assert [set(event) for event in dispatch.events] == [{"JobId"}] * 3
    client = boto3.client("stepfunctions", region_name="us-east-1")
    executions = client.list_executions(stateMachineArn=before)["executions"]
    assert [e["executionArn"] for e in executions] == [job.execution]
    assert instance_count(remote, study[0].study) == 7


def test_refused_new_execution_leaves_the_job_going_on_in_its_own(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    """StartExecution refused when the job is due to go on in a new execution (here the
    worker's state machine does not exist): the job goes on in the execution it has, trying
    again after each step, and ends Success (before: it was marked Failure, and the worker's
    error went to MarkFailed)."""
    ctx = aws_context(tmp_path, remote, dispatch)
    missing = "arn:aws:states:us-east-1:123456789012:stateMachine:missing"
    settings = replace(ctx.settings, jobs_state_machine_arn=missing, jobs_steps_per_execution=1)
    dispatch.ctx = build_context(settings)
    study = large_study(7)  # batches of 3: three steps
    job_id = start_stow(ctx, study)
    first = ctx.jobs.get(job_id).execution
    job, execution = finished(ctx, job_id)
    assert (job.state, job.content["InstancesCount"]) == ("Success", "7")
    assert (job.execution, job.execution_steps) == (first, 3)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["Continued"] is False
    assert [set(event) for event in dispatch.events] == [{"JobId", "Execution"}] * 3
    assert instance_count(remote, study[0].study) == 7


def test_synchronous_call_whose_job_is_deleted_meanwhile_is_404_and_its_step_ends_quietly(
    tmp_path: Path, remote: str, dispatch: WorkerDispatch
) -> None:
    """A synchronous call polls its job until it ends; the job canceled and deleted meanwhile
    (or deleted by retention once ended) was ports.NotFound, a 500. It is a 404 naming the
    job, and the held step, finding no job, ends the execution's run without a Lambda error
    (which sent it to MarkFailed, NotFound again)."""
    ctx = aws_context(tmp_path, remote, dispatch)
    release = threading.Event()
    dispatch.hold, dispatch.hold_at = release, 1
    study = large_study(2)
    for instance in study:
        assert store_instance(ctx, instance.data).status == "stored"
    job = jobs.new_job(jobs.STOW, "remote", {"Resources": [[study[0].study]]}, {}, 0)
    raised: list[Exception] = []

    def call() -> None:
        try:
            jobs.run_synchronously(ctx, job)
        except Exception as exc:
            raised.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert dispatch.held.wait(60)
    jobs.cancel(ctx, job.id)
    jobs.delete(ctx, job.id)
    caller.join(60)
    assert len(raised) == 1 and isinstance(raised[0], errors.NotFound), raised
    assert job.id in raised[0].message
    release.set()
    deadline = time.monotonic() + 60
    while not dispatch.answers:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert dispatch.answers[0] == {"JobId": job.id, "Done": True, "Continued": False}
