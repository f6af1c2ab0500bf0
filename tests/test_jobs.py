"""The job engine (chalicelib/jobs.py) against a loopback STOW-RS remote that holds its
answer until released: a pause that lands while a step runs wins, that step's result is
dropped, and the batch is sent again on resume."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import jobs
from chalicelib.client import retrieve
from chalicelib.context import Context
from chalicelib.ingest import store_instance
from chalicelib.storage.ports import JobRecord
from tests.client.test_two_servers import large_study
from tests.conftest import REPO, make_context
from tests.stow_remote import HeldStowRemote, held_stow_remote


@pytest.fixture
def remote() -> Iterator[HeldStowRemote]:
    with held_stow_remote() as server:
        yield server


def _stow_job_to_held_remote(
    tmp_path: Path, remote: HeldStowRemote
) -> tuple[Context, list[Any], JobRecord]:
    """A stored 3-instance study and a STOW job sending it to `remote`, 2 instances a batch."""
    servers = {"held": {"Url": remote.url, "ChunkedTransfers": False}}
    ctx = make_context("local", tmp_path, servers=servers, stow_max_instances=2)
    study = large_study(3)
    for instance in study:
        assert store_instance(ctx, instance.data).status == "stored"
    job = jobs.new_job(jobs.STOW, "held", {"Resources": [[study[0].study]]}, {}, 0)
    ctx.jobs.create(job)
    return ctx, study, job


def test_pause_during_a_step_drops_its_result_and_resume_resends_the_batch(
    tmp_path: Path, remote: HeldStowRemote
) -> None:
    ctx, study, job = _stow_job_to_held_remote(tmp_path, remote)

    step = threading.Thread(target=jobs.advance, args=(ctx, job.id))
    step.start()
    assert remote.held_arrived.wait(30)
    jobs.pause(ctx, job.id)
    remote.release.set()
    step.join(30)
    paused = ctx.jobs.get(job.id)
    assert paused.state == "Paused" and paused.cursor == {}  # the step's result was dropped

    jobs.resume(ctx, job.id)
    deadline = time.monotonic() + 60
    while (done := ctx.jobs.get(job.id)).state != "Success":
        assert done.state in ("Pending", "Running") and time.monotonic() < deadline, done
        time.sleep(0.05)
    assert done.content["InstancesCount"] == "3"
    first, *rest = remote.received
    assert rest[0] == first  # the dropped batch, sent again
    assert sorted(u for batch in rest for u in batch) == sorted(i.sop for i in study)


def test_fail_abandoned_fails_running_jobs_whose_execution_ended(
    aws_env: None, tmp_path: Path
) -> None:
    """A Running job whose execution ended without recording it (stopped from the console:
    no MarkFailed ran) is marked Failure and can be resubmitted; a Running job with a running
    execution and a Paused one are left alone. moto starts executions without running them."""
    definition = (REPO / "infra" / "jobs.asl.json").read_text()
    worker = "arn:aws:lambda:us-east-1:123456789012:function:jobs_worker"
    states = boto3.client("stepfunctions", region_name="us-east-1")
    machine = states.create_state_machine(
        name="jobs",
        definition=definition.replace("${JobsWorkerArn}", worker),
        roleArn="arn:aws:iam::123456789012:role/jobs",
    )["stateMachineArn"]
    ctx = make_context("aws", tmp_path, jobs_state_machine_arn=machine)

    def running() -> JobRecord:
        job = jobs.submit(ctx, jobs.new_job(jobs.STOW, "remote", {"Resources": []}, {}, 0))
        job.state = "Running"  # what its execution's first step saves
        return ctx.jobs.save(job)

    abandoned, alive, paused = running(), running(), running()
    jobs.pause(ctx, paused.id)  # its execution stopped too
    states.stop_execution(executionArn=abandoned.execution, cause="from the console")

    assert jobs.fail_abandoned(ctx) == [abandoned.id]
    failed = ctx.jobs.get(abandoned.id)
    assert failed.state == "Failure" and "resubmit" in failed.error_description
    assert ctx.jobs.get(alive.id).state == "Running"
    assert ctx.jobs.get(paused.id).state == "Paused"
    assert jobs.fail_abandoned(ctx) == []
    jobs.resubmit(ctx, abandoned.id)
    assert ctx.jobs.get(abandoned.id).state == "Pending"


def test_job_whose_execution_cannot_start_is_failure_with_the_reason(
    aws_env: None, tmp_path: Path
) -> None:
    """StartExecution refused (here no such state machine): the caller gets the error, and
    the job says Failure with the reason instead of staying Pending for ever; resubmitting
    it gets the same."""
    missing = "arn:aws:states:us-east-1:123456789012:stateMachine:missing"
    ctx = make_context("aws", tmp_path, jobs_state_machine_arn=missing)
    job = jobs.new_job(jobs.STOW, "remote", {"Resources": []}, {}, 0)
    with pytest.raises(ClientError, match="StateMachineDoesNotExist"):
        jobs.submit(ctx, job)
    failed = ctx.jobs.get(job.id)
    assert (failed.state, failed.error_code) == ("Failure", jobs.INTERNAL_ERROR)
    assert "could not be started" in failed.error_description
    assert "StateMachineDoesNotExist" in failed.error_description
    assert failed.completion_time and not failed.execution
    with pytest.raises(ClientError, match="StateMachineDoesNotExist"):
        jobs.resubmit(ctx, job.id)
    assert ctx.jobs.get(job.id).state == "Failure"


def test_step_racing_the_record_of_its_execution_runs_again(
    tmp_path: Path, remote: HeldStowRemote
) -> None:
    """A continuation's first step can read the job before `_start` records the execution
    that runs it: that step's save then conflicts with a job still Running. Its result is
    dropped and the execution runs the step again, instead of ending with the job Running and
    nothing running it (it did before: `advance` answered done)."""
    ctx, study, job = _stow_job_to_held_remote(tmp_path, remote)

    answers: list[bool] = []
    step = threading.Thread(target=lambda: answers.append(jobs.advance(ctx, job.id)))
    step.start()
    assert remote.held_arrived.wait(30)
    recorded = ctx.jobs.get(job.id)  # what `_start` saves once StartExecution answered
    recorded.execution, recorded.execution_steps = "second-execution", 0
    ctx.jobs.save(recorded)
    remote.release.set()
    step.join(30)
    assert answers == [False]
    again = ctx.jobs.get(job.id)
    assert (again.state, again.cursor, again.execution) == ("Running", {}, "second-execution")

    done = jobs.run_inline(ctx, job.id)
    assert (done.state, done.content["InstancesCount"]) == ("Success", "3")
    first, *rest = remote.received
    assert rest[0] == first  # the dropped batch, sent again
    assert sorted(u for batch in rest for u in batch) == sorted(i.sop for i in study)


def test_job_whose_server_was_removed_fails_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job whose server was removed while it waited (paused, queued) ended Failure with
    'internal error: ...' and a traceback in the log, as a defect does."""
    ctx = make_context("local", tmp_path)
    job = jobs.new_job(jobs.RETRIEVE, "removed", {"Uri": "/studies"}, {}, 0)
    ctx.jobs.create(job)
    ended = jobs.run_inline(ctx, job.id)
    assert ended.state == "Failure"
    assert ended.error_description.startswith("no remote DICOMweb server named 'removed'")
    assert ended.error_code == jobs.INEXISTENT_ITEM
    assert "step failed" not in caplog.text


def test_retrieve_job_past_a_dynamodb_item_keeps_its_instances_and_stays_readable(
    context: Context, client: Client
) -> None:
    """A retrieve job's Instances (45 bytes each) passed DynamoDB's 400 KB item at about 8,000
    instances: the step's save failed (ValidationException). Here 10 steps of 1,000 synthetic
    Orthanc ids (450 KB), one step run twice (its ids answered once): the saves pass on both
    backends, the record stays small, and GET jobs/{id} answers every id in order."""
    ids = [f"{n:08x}-{n:08x}-{n:08x}-{n:08x}-{n:08x}" for n in range(10_000)]
    job = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": []}, {}, 0)
    context.jobs.create(job)
    steps = [ids[n : n + 1000] for n in range(0, len(ids), 1000)]
    for batch in [*steps[:3], steps[2], *steps[3:]]:
        job = context.jobs.get(job.id)
        cursor = dict(job.cursor)
        retrieve.record_instances(context, job, cursor, batch)
        job.cursor = cursor
        context.jobs.save(job)

    record = context.jobs.get(job.id)
    assert len(json.dumps([record.content, record.cursor])) < 1000
    response = client.http.get(f"/dicom-web/jobs/{job.id}")
    assert response.status_code == 200
    assert json.loads(response.body)["Content"]["Instances"] == ids
    listed = json.loads(client.http.get("/dicom-web/jobs?expand").body)
    assert [view["Content"]["Instances"] for view in listed] == [ids]
