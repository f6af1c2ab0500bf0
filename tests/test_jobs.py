"""The job engine (chalicelib/jobs.py) against a loopback STOW-RS remote that holds its
answer until released: a pause that lands while a step runs wins, that step's result is
dropped, and the batch is sent again on resume."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import errors, jobs
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
    tmp_path: Path, remote: HeldStowRemote, backend: str = "local"
) -> tuple[Context, list[Any], JobRecord]:
    """A stored 3-instance study and a STOW job sending it to `remote`, 2 instances a batch."""
    servers = {"held": {"Url": remote.url, "ChunkedTransfers": False}}
    ctx = make_context(backend, tmp_path, servers=servers, stow_max_instances=2)
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


def test_job_deleted_while_its_step_runs_ends_quietly_with_its_blobs(
    backend: str, tmp_path: Path, remote: HeldStowRemote, caplog: pytest.LogCaptureFixture
) -> None:
    """Canceled then deleted (or deleted by retention) while a step runs: the step's save
    found no job and raised NotFound (a traceback locally; on AWS a Lambda error, then
    MarkFailed's NotFound again), and what the step wrote under jobs/{id}/ stayed. Now the
    step ends the job's run, deletes its blobs, and marking it failed finds nothing to do."""
    ctx, _, job = _stow_job_to_held_remote(tmp_path, remote, backend)
    ended: list[bool] = []
    step = threading.Thread(target=lambda: ended.append(jobs.advance(ctx, job.id)))
    step.start()
    assert remote.held_arrived.wait(30)
    jobs.cancel(ctx, job.id)
    jobs.delete(ctx, job.id)
    written = f"jobs/{job.id}/list/0.json"  # as a retrieve step writes its list meanwhile
    ctx.blobs.put(written, b"[]", "application/json")
    remote.release.set()
    step.join(30)
    assert ended == [True]
    assert not ctx.blobs.exists(written)
    jobs.fail(ctx, job.id, "the state machine gave up")
    assert jobs.run_step_with_retries(ctx, job.id)
    assert "step failed" not in caplog.text


def test_actions_on_a_job_deleted_meanwhile_are_404(context: Context) -> None:
    """The job API's actions read the job again after the route did: a job deleted between
    (DELETE, retention) was ports.NotFound there, an answer 500; now 404 naming it."""
    for action in (jobs.cancel, jobs.pause, jobs.resume, jobs.resubmit, jobs.delete, jobs.read):
        with pytest.raises(errors.NotFound, match="no job 'gone'"):
            action(context, "gone")


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


def _ids(first: int, count: int) -> list[str]:
    """`count` synthetic Orthanc instance ids (45 bytes each)."""
    return [f"{n:08x}-{n:08x}-{n:08x}-{n:08x}-{n:08x}" for n in range(first, first + count)]


def _record_steps(context: Context, job: JobRecord, steps: list[list[str]]) -> JobRecord:
    """Each step's ids recorded as a retrieve step records them, and saved."""
    for batch in steps:
        job = context.jobs.get(job.id)
        cursor = dict(job.cursor)
        retrieve.record_instances(context, job, cursor, batch)
        job.cursor = cursor
        context.jobs.save(job)
    return context.jobs.get(job.id)


def _get(client: Client, path: str) -> Any:
    response = client.http.get(f"/dicom-web/{path}")
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def test_retrieve_job_past_inline_instances_lists_them_in_pages_and_its_view_reads_no_chunk(
    context: Context, client: Client
) -> None:
    """10,500 instances in steps of 700 (the list passed DynamoDB's 400 KB item at about 8,000,
    and GET jobs/{id} read one blob per step: past ~130,000 ids its answer passes Lambda's 6 MB):
    the record stays small, the view gives the count and the path of the list, which answers
    any page, and the view and the job list read no chunk (they answer with the chunks gone).
    A step whose result was dropped wrote its ids, which the step run again writes over."""
    ids = _ids(0, 10_500)
    steps = [ids[n : n + 700] for n in range(0, len(ids), 700)]
    job = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": []}, {"Server": "remote"}, 0)
    context.jobs.create(job)
    job = _record_steps(context, job, steps[:4])
    dropped = context.jobs.get(job.id)
    retrieve.record_instances(context, dropped, dict(dropped.cursor), _ids(50_000, 900))
    job = _record_steps(context, job, steps[4:])

    assert len(json.dumps([job.content, job.cursor])) < 1000
    content = _get(client, f"jobs/{job.id}")["Content"]
    assert "Instances" not in content
    assert content["InstancesCount"] == "10500"
    assert content["InstancesPath"] == f"jobs/{job.id}/instances"
    assert _get(client, content["InstancesPath"]) == ids[:10_000]
    assert _get(client, f"{content['InstancesPath']}?offset=10000") == ids[10_000:]
    assert _get(client, f"jobs/{job.id}/instances?offset=1999&limit=2002") == ids[1999:4001]
    assert _get(client, f"jobs/{job.id}/instances?offset=10500") == []
    for query in ("limit=10001", "offset=-1", "limit=x", "limit=%C2%B2", "offset=%D9%A3"):
        response = client.http.get(f"/dicom-web/jobs/{job.id}/instances?{query}")
        assert response.status_code == 400, query

    context.blobs.delete_prefix(f"jobs/{job.id}/")
    assert _get(client, f"jobs/{job.id}")["Content"] == content
    assert [view["Content"] for view in _get(client, "jobs?expand")] == [content]


def test_retrieve_job_of_ordinary_size_keeps_its_instances_in_the_record(
    context: Context, client: Client
) -> None:
    """Up to INLINE_INSTANCES the view answers `Instances` as it did (the web app and a
    synchronous retrieve read it), each id once, with no blob written; the page route serves
    the same list."""
    ids = _ids(0, retrieve.INLINE_INSTANCES)
    half = len(ids) // 2
    job = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": []}, {}, 0)
    context.jobs.create(job)
    job = _record_steps(context, job, [ids[:half], ids[:10], ids[half:]])
    assert _get(client, f"jobs/{job.id}")["Content"]["Instances"] == ids
    assert _get(client, f"jobs/{job.id}/instances?offset=5&limit=3") == ids[5:8]
    assert not context.blobs.exists(f"jobs/{job.id}/list/0.json")

    job = _record_steps(context, job, [_ids(len(ids), 1)])
    assert job.content["InstancesCount"] == str(len(ids) + 1)
    assert _get(client, f"jobs/{job.id}/instances?offset={len(ids) - 1}") == _ids(len(ids) - 1, 2)


def _recorded_before(context: Context, inline: list[str], chunks: list[list[str]]) -> JobRecord:
    """A retrieve job as 42dbdc3 recorded it: `inline` ids in its `Instances`, then a chunk
    per step (`jobs/{id}/instances/{n}.json`, counted by its cursor's `chunks`)."""
    job = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": []}, {"Instances": inline}, 0)
    job.cursor = {"chunks": len(chunks)}
    context.jobs.create(job)
    for chunk, ids in enumerate(chunks):
        key = f"jobs/{job.id}/instances/{chunk}.json"
        context.blobs.put(key, json.dumps(ids).encode(), "application/json")
    return job


def test_retrieve_job_recorded_before_keeps_its_list(context: Context, client: Client) -> None:
    """A record from before lists its `Instances` then a chunk per step (`chunks` in its
    cursor): the view answers them; its next step moves them to the record's list. One
    deleted (DELETE, retention: the oldest finished first, these after the upgrade) between
    the read of its record and of its chunks was a 500, and failed the whole `jobs?expand`:
    its view is 404, and the list leaves it out."""
    job = _recorded_before(context, _ids(0, 2), [_ids(2, 3), _ids(4, 2)])
    assert _get(client, f"jobs/{job.id}")["Content"]["Instances"] == _ids(0, 6)
    job = _record_steps(context, job, [_ids(6, 1)])
    assert "chunks" not in job.cursor and job.content["Instances"] == _ids(0, 7)

    gone = jobs.new_job(jobs.RETRIEVE, "remote", {"Resources": []}, {}, 0)
    gone.cursor = {"chunks": 1}
    context.jobs.create(gone)  # its chunk deleted, its record read before it was
    response = client.http.get(f"/dicom-web/jobs/{gone.id}")
    assert response.status_code == 404
    assert "deleted" in json.loads(response.body)["Message"]
    assert client.http.get(f"/dicom-web/jobs/{gone.id}/instances").status_code == 404
    assert [view["ID"] for view in _get(client, "jobs?expand")] == [job.id]


def test_retrieve_job_recorded_before_past_inline_instances_moves_its_list_to_chunks(
    context: Context, client: Client
) -> None:
    """A record from before with more than INLINE_INSTANCES ids whose next step stores
    nothing: its list went inline whole (9,000 ids: 432 KB, past DynamoDB's 400 KB item, the
    job failing every resubmit); it goes to chunks. A page whose chunk is gone (the job
    deleted while it was read) is 404, not 500."""
    job = _recorded_before(context, _ids(0, 1500), [_ids(1500, 1000), _ids(2500, 500)])
    job = _record_steps(context, job, [[]])
    assert "chunks" not in job.cursor and "Instances" not in job.content
    assert job.content["InstancesCount"] == "3000"
    assert _get(client, f"jobs/{job.id}/instances") == _ids(0, 3000)

    context.blobs.delete_prefix(f"jobs/{job.id}/list/")
    response = client.http.get(f"/dicom-web/jobs/{job.id}/instances")
    assert response.status_code == 404
    assert "deleted" in json.loads(response.body)["Message"]


def test_stow_job_lists_no_instances(context: Context, client: Client) -> None:
    job = jobs.new_job(jobs.STOW, "remote", {"Resources": []}, {}, 0)
    context.jobs.create(job)
    response = client.http.get(f"/dicom-web/jobs/{job.id}/instances")
    assert response.status_code == 400
    assert "only a retrieve" in json.loads(response.body)["Message"]


def _failed_job(ctx: Context) -> JobRecord:
    """A retrieve job run to its end: Failure, its server is unknown; with a blob of its list."""
    job = jobs.new_job(jobs.RETRIEVE, "unknown", {"Uri": "/studies"}, {}, 0)
    ctx.jobs.create(job)
    ctx.blobs.put(f"jobs/{job.id}/list/0.json", b"[]", "application/json")
    ended = jobs.run_inline(ctx, job.id)
    assert ended.state == "Failure", ended
    return ended


def _ended_job(ctx: Context, completion_time: str) -> str:
    """A finished job recorded as ending at `completion_time`, with a blob of its list."""
    job = jobs.new_job(jobs.STOW, "unknown", {"Resources": []}, {}, 0)
    job.state, job.completion_time = "Success", completion_time
    ctx.jobs.create(job)
    ctx.blobs.put(f"jobs/{job.id}/list/0.json", b"[]", "application/json")
    return job.id


def test_finished_jobs_past_jobs_history_size_are_deleted_with_their_blobs(
    backend: str, tmp_path: Path
) -> None:
    """Records and blobs of finished jobs stayed for ever. With JobsHistorySize 3, when a job
    ends, of five that ended long ago the two that ended last are kept; jobs not finished
    never go, however old. Those that ended less than RECENTLY_ENDED_SECONDS ago are kept
    too (a synchronous caller on AWS reads its job's end up to 0.5 s after it: it was deleted
    if JobsHistorySize others ended meanwhile, a 500 for a retrieve that succeeded)."""
    ctx = make_context(backend, tmp_path, jobs_history_size=3)
    waiting = []
    for state in ("Paused", "Running", "Pending"):
        job = jobs.new_job(jobs.STOW, "unknown", {"Resources": []}, {}, 0)
        job.state = state
        ctx.jobs.create(job)
        waiting.append(job.id)
    old = [_ended_job(ctx, f"20200101T00000{n}.000000") for n in (4, 3, 2, 1, 0)][::-1]
    first = _failed_job(ctx).id
    assert {job.id for job in ctx.jobs.list()} == {*waiting, *old[3:], first}
    for job_id in old:
        assert ctx.blobs.exists(f"jobs/{job_id}/list/0.json") == (job_id in old[3:])

    recent = [_ended_job(ctx, jobs._now()) for _ in range(2)]
    last = _failed_job(ctx).id
    assert {job.id for job in ctx.jobs.list()} == {*waiting, first, *recent, last}


def test_sweep_deletes_the_jobs_their_grace_kept_past_jobs_history_size(
    backend: str, tmp_path: Path
) -> None:
    """Jobs kept past JobsHistorySize because they ended less than RECENTLY_ENDED_SECONDS ago
    stayed until another job ended: after a burst with none after it, for ever. The sweep
    (app.sweep on AWS, PeriodicSweep locally) deletes them once their grace is over, those
    that ended first, with their blobs; the JobsHistorySize that ended last stay."""
    ctx = make_context(backend, tmp_path, jobs_history_size=2)
    burst = [_ended_job(ctx, jobs._now(jobs.RECENTLY_ENDED_SECONDS + 10 - n)) for n in range(4)]
    recent = _ended_job(ctx, jobs._now())
    if backend == "local":
        from chalicelib.server.localserver import PeriodicSweep

        sweep = PeriodicSweep(ctx, 3600, started=datetime.now(UTC))
        try:
            sweep.sweep(datetime.now(UTC))
        finally:
            sweep.stop()
    else:
        assert jobs.forget_old_jobs(ctx) == burst[:3]  # what app.sweep calls
    assert [job.id for job in ctx.jobs.list()] == [burst[3], recent]
    for job_id in burst:
        assert ctx.blobs.exists(f"jobs/{job_id}/list/0.json") == (job_id == burst[3])


def test_delete_job_removes_a_finished_job_and_refuses_one_not_ended(
    context: Context, client: Client
) -> None:
    """Orthanc's DELETE /jobs/{id} (1.12.2): a finished job and its blobs go (an empty 200);
    one that has not ended is kept (400, cancel it first); an unknown id is 404."""
    job = _failed_job(context)
    response = client.http.delete(f"/dicom-web/jobs/{job.id}")
    assert (response.status_code, response.body) == (200, b"")
    assert client.http.get(f"/dicom-web/jobs/{job.id}").status_code == 404
    assert not context.blobs.exists(f"jobs/{job.id}/list/0.json")
    assert client.http.delete(f"/dicom-web/jobs/{job.id}").status_code == 404

    paused = jobs.new_job(jobs.STOW, "unknown", {"Resources": []}, {}, 0)
    paused.state = "Paused"
    context.jobs.create(paused)
    response = client.http.delete(f"/dicom-web/jobs/{paused.id}")
    assert response.status_code == 400
    assert "Paused" in json.loads(response.body)["Message"]
    assert context.jobs.get(paused.id).state == "Paused"
