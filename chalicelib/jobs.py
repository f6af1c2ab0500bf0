"""Client jobs: the record's life cycle and the step every runner calls.

A job is a `JobRecord` in the JobStore plus `run_step(ctx, job) -> (done, cursor)`, which
does one bounded batch (send up to `StowMaxInstances` / `StowMaxSize` of instances; fetch and
store one series) and may be repeated: a batch re-run after a crash stores or sends the same
instances again, which changes nothing on either side (same SOP Instance UIDs, same bytes).

Runners hold no job logic (STYLE.md rule 24): the local thread runner and the inline
synchronous path call `run_step_with_retries`; the AWS worker Lambda calls `advance` and
lets Step Functions retry transient errors (`infra/jobs.asl.json`), then `fail`.

State changes happen here only, saved with a version check: a pause or cancel that lands
while a step runs wins, and that step's result is dropped (its batch runs again on resume).
The record's fields and answers follow Orthanc's job API (`GET /jobs/{id}`): `State` is one of
Pending, Running, Paused, Success, Failure.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import errors
from chalicelib.client.http import RemoteError
from chalicelib.context import Context
from chalicelib.errors import BadRequest, DicomWebError
from chalicelib.storage.ports import Conflict, JobRecord, NotFound

log = logging.getLogger(__name__)

STOW = "DicomWebStowClient"
RETRIEVE = "DicomWebWadoRetrieveClient"
TERMINAL = ("Success", "Failure")

# Orthanc's ErrorCode values (OrthancFramework/Sources/Enumerations.h, 1.10).
SUCCESS = 0
INTERNAL_ERROR = -1
INEXISTENT_ITEM = 7
NETWORK_PROTOCOL = 9
CANCELED_JOB = 37

LOCAL_RETRY_DELAYS = (0.5, 1.0, 2.0)
"""Seconds between the attempts of a step that failed on a transient remote error, locally
(on AWS the state machine's Retry does the same)."""

RECENTLY_ENDED_SECONDS = 60
"""A finished job is kept this long past `JobsHistorySize`, so that its caller can read its
end (a synchronous call on AWS polls every 0.5 s); the next job's end or sweep deletes it."""


class TransientJobError(Exception):
    """A step failed in a way that may pass (refused connection, timeout, 5xx); the runner
    tries the step again with backoff, then fails the job with this message."""


def _now(ago: float = 0) -> str:
    """The time `ago` seconds before now, as a job records it (sorts as it passes)."""
    return (datetime.now(UTC) - timedelta(seconds=ago)).strftime("%Y%m%dT%H%M%S.%f")


def read(ctx: Context, job_id: str) -> JobRecord:
    """The job, or 404 (never stored, or deleted: DELETE, or past `JobsHistorySize`)."""
    try:
        return ctx.jobs.get(job_id)
    except NotFound:
        raise errors.NotFound(f"no job {job_id!r}: deleted, or never was (see GET jobs)") from None


def new_job(
    job_type: str, server: str, params: dict[str, Any], content: dict[str, Any], priority: int
) -> JobRecord:
    return JobRecord(
        id=str(uuid.uuid4()),
        type=job_type,
        state="Pending",
        priority=priority,
        server=server,
        params=params,
        cursor={},
        content=content,
        creation_time=_now(),
    )


def run_step(ctx: Context, job: JobRecord) -> tuple[bool, dict[str, Any]]:
    """One bounded batch of `job` from its cursor; updates `job.content` and `job.progress`,
    and returns (done, next cursor). Raise RemoteError."""
    from chalicelib.client import retrieve, stow
    from chalicelib.client.session import remote_client

    client = remote_client(ctx.servers.get(job.server), ctx.settings)
    if job.type == STOW:
        return stow.stow_step(ctx, client, job)
    if job.type == RETRIEVE:
        return retrieve.retrieve_step(ctx, client, job)
    raise ValueError(f"unknown job type {job.type!r}")


def advance(ctx: Context, job_id: str) -> bool:
    """Run one step of the job and save what it did; True when there is nothing more to run
    (finished, failed, paused, canceled, deleted). Raise TransientJobError (nothing saved)."""
    try:
        return _advance(ctx, job_id)
    except NotFound:  # deleted meanwhile (canceled then DELETE, or retention): so is what it wrote
        ctx.blobs.delete_prefix(f"jobs/{job_id}/")
        return True


def _advance(ctx: Context, job_id: str) -> bool:
    job = ctx.jobs.get(job_id)
    if job.state == "Pending":
        job.state = "Running"
        try:
            job = ctx.jobs.save(job)
        except Conflict:
            return _advance(ctx, job_id)
    if job.state != "Running":
        return True
    began = time.monotonic()
    try:
        done, cursor = run_step(ctx, job)
    except RemoteError as exc:
        if exc.transient:
            raise TransientJobError(exc.message) from exc
        _save_failure(ctx, job, exc.message, NETWORK_PROTOCOL)
        return True
    except DicomWebError as exc:  # its server removed, or unusable (a certificate unreadable)
        code = INEXISTENT_ITEM if exc.status == 404 else NETWORK_PROTOCOL
        _save_failure(ctx, job, exc.message, code)
        return True
    except NotFound as exc:  # a blob of the job: NotFound if the job is gone too (`advance`)
        ctx.jobs.get(job_id)
        return _end_on_defect(ctx, job, exc)
    except Exception as exc:
        return _end_on_defect(ctx, job, exc)
    job.cursor, job.execution_steps = cursor, job.execution_steps + 1
    job.runtime = round(job.runtime + time.monotonic() - began, 3)
    if done:
        job.state, job.progress, job.completion_time = "Success", 100, _now()
    try:
        ctx.jobs.save(job)
    except Conflict:
        # This step's result is dropped. Paused or canceled meanwhile: the execution ends. Still
        # Running: a bookkeeping save (a new execution recorded by `_start` after this step
        # read the job): the step runs again.
        return ctx.jobs.get(job_id).state != "Running"
    if done:
        forget_old_jobs(ctx, job_id)
    return done


def _end_on_defect(ctx: Context, job: JobRecord, exc: Exception) -> bool:
    """A step's unforeseen error (a defect) ends the job, logged, rather than loop on it."""
    log.exception("job %s: step failed", job.id)
    _save_failure(ctx, job, f"internal error: {exc}", INTERNAL_ERROR)
    return True


def _failed(job: JobRecord, message: str, code: int) -> JobRecord:
    """`job` marked Failure with `message` and Orthanc's ErrorCode `code`."""
    job.state, job.completion_time = "Failure", _now()
    job.error_code, job.error_description = code, message
    return job


def _save_failure(ctx: Context, job: JobRecord, message: str, code: int) -> bool:
    """Mark `job` Failure and save it; False when it was saved meanwhile (a pause, a cancel,
    another step: that state stands, and this failure is dropped). Raise NotFound (deleted)."""
    try:
        ctx.jobs.save(_failed(job, message, code))
    except Conflict:
        return False
    forget_old_jobs(ctx, job.id)
    return True


def forget_old_jobs(ctx: Context, ended: str = "") -> list[str]:
    """Delete the finished jobs (Success, Failure) past `JobsHistorySize`, those that ended
    first, as Orthanc drops them from its history; their ids. Never the job that just `ended`
    (none when a sweep calls it) nor one that ended less than RECENTLY_ENDED_SECONDS ago,
    never one that is not finished (one resubmitted meanwhile is saved since it was read:
    Conflict, kept). Housekeeping after a job's end is saved, and at each sweep (the jobs a
    burst left in their grace, with no job ending after it): a failure is logged, never the
    job's."""
    forgotten: list[str] = []
    try:
        recent = _now(RECENTLY_ENDED_SECONDS)
        finished = sorted(
            (job for job in ctx.jobs.list() if job.state in TERMINAL and job.id != ended),
            key=lambda job: job.completion_time,
        )
        kept = ctx.settings.jobs_history_size - (1 if ended else 0)
        for job in finished[: max(0, len(finished) - kept)]:
            if job.completion_time > recent:  # and those after it
                break
            try:
                _remove(ctx, job)
            except (Conflict, NotFound):
                continue
            forgotten.append(job.id)
    except Exception:  # the job's end stands whatever happens to older jobs
        log.exception("job %s: older finished jobs could not be deleted", ended or "sweep")
    return forgotten


def _remove(ctx: Context, job: JobRecord) -> None:
    """Delete the job's record (if still the version read), then its blobs: a crash between
    leaves blobs no record points to, never a record without its list."""
    ctx.jobs.delete(job)
    ctx.blobs.delete_prefix(f"jobs/{job.id}/")


def delete(ctx: Context, job_id: str) -> None:
    """Success or Failure → gone, with its blobs; one that has not ended must be canceled
    first (Orthanc's `DELETE /jobs/{id}`, 1.12.2); 404 for one not found."""
    job = _change(ctx, job_id, TERMINAL, "delete")
    try:
        _remove(ctx, job)
    except Conflict:  # resubmitted meanwhile: its state is checked again
        delete(ctx, job_id)
    except NotFound:  # deleted meanwhile
        return


def fail(ctx: Context, job_id: str, message: str, code: int = NETWORK_PROTOCOL) -> None:
    """Mark the job Failure with `message` (after the runner gave up on transient errors, or
    could not start it), unless it is Paused or ended (or deleted)."""
    for _ in range(5):
        try:
            job = ctx.jobs.get(job_id)
            if (
                job.state in TERMINAL
                or job.state == "Paused"
                or _save_failure(ctx, job, message, code)
            ):
                return
        except NotFound:  # deleted: ended
            return


def fail_abandoned(ctx: Context) -> list[str]:
    """Mark Failure the Running jobs that no runner runs any more; their ids.

    On AWS a job's execution can end without recording it: MarkFailed failing all its
    attempts, an execution stopped from the console, or Step Functions' limit of 25,000 history
    events (about 3,500 steps). Such a job would say Running for ever; Failure lets it be
    resubmitted from its cursor. A job is Running only once its execution has run a step, and
    ends in a saved state before its execution does: the save is conditional on the version
    read, so a job that moved meanwhile is left alone."""
    failed = []
    for job in ctx.jobs.list():
        if job.state != "Running" or ctx.job_runner.is_running(job):
            continue
        try:
            abandoned = _save_failure(ctx, job, _ABANDONED, INTERNAL_ERROR)
        except NotFound:  # deleted meanwhile
            continue
        if abandoned:
            log.warning("job %s: Running with no runner, marked Failure", job.id)
            failed.append(job.id)
    return failed


_ABANDONED = (
    "the job's runner stopped without recording its end; resubmit it to go on from where it was"
)


def run_step_with_retries(ctx: Context, job_id: str) -> bool:
    """`advance`, trying a transient failure again after each of LOCAL_RETRY_DELAYS, then
    failing the job with the last message."""
    for delay in (*LOCAL_RETRY_DELAYS, None):
        try:
            return advance(ctx, job_id)
        except TransientJobError as exc:
            if delay is None:
                fail(ctx, job_id, str(exc))
                return True
            log.warning("job %s: %s; trying again in %g s", job_id, exc, delay)
            time.sleep(delay)
    return True


def run_inline(ctx: Context, job_id: str) -> JobRecord:
    """Run the job to its end in this thread (synchronous calls, locally)."""
    while not run_step_with_retries(ctx, job_id):
        pass
    return read(ctx, job_id)


def submit(ctx: Context, job: JobRecord) -> JobRecord:
    """Store a new job and hand it to the runner."""
    ctx.jobs.create(job)
    return _start(ctx, ctx.jobs.get(job.id))


def _start(ctx: Context, job: JobRecord) -> JobRecord:
    """Hand the job to the runner and record the runner's handle of it, if any (against the
    saves of the steps it may already run). A runner that cannot start it (StartExecution
    refused) leaves it Failure with the reason, which the caller gets too: Pending, it would
    wait for nothing."""
    try:
        handle = ctx.job_runner.start(job)
    except Exception as exc:
        fail(ctx, job.id, f"the job could not be started: {exc}", INTERNAL_ERROR)
        raise
    if not handle:
        return job
    return _save_change(ctx, job.id, _started(handle))


def _started(handle: str) -> Callable[[JobRecord], JobRecord]:
    """The change recording `handle`, the job's new execution, which has run no step yet."""

    def started(job: JobRecord) -> JobRecord:
        job.execution, job.execution_steps = handle, 0
        return job

    return started


def _change(ctx: Context, job_id: str, allowed: tuple[str, ...], action: str) -> JobRecord:
    """The job, if its state is one of `allowed` for `action` (else 400; 404 when gone)."""
    job = read(ctx, job_id)
    if job.state not in allowed:
        raise BadRequest(
            f"job {job_id} is {job.state}: {action} applies to a job that is {' or '.join(allowed)}"
        )
    return job


def _save_change(ctx: Context, job_id: str, change: Any) -> JobRecord:
    """Apply `change(job)` on a fresh copy until the save is not racing a step (404 when the
    job is deleted meanwhile)."""
    while True:
        job = change(read(ctx, job_id))
        try:
            return ctx.jobs.save(job)
        except Conflict:
            continue


def cancel(ctx: Context, job_id: str) -> None:
    """Pending, Running or Paused → Failure (Orthanc's CanceledJob)."""
    _change(ctx, job_id, ("Pending", "Running", "Paused"), "cancel")

    def canceled(job: JobRecord) -> JobRecord:
        if job.state not in TERMINAL:
            _failed(job, "Job has been canceled", CANCELED_JOB)
        return job

    ctx.job_runner.stop(_save_change(ctx, job_id, canceled))
    forget_old_jobs(ctx, job_id)


def pause(ctx: Context, job_id: str) -> None:
    """Pending or Running → Paused; the step under way finishes and is dropped."""
    _change(ctx, job_id, ("Pending", "Running"), "pause")

    def paused(job: JobRecord) -> JobRecord:
        if job.state not in TERMINAL:
            job.state = "Paused"
        return job

    ctx.job_runner.stop(_save_change(ctx, job_id, paused))


def resume(ctx: Context, job_id: str) -> None:
    """Paused → Pending, started again from the saved cursor."""
    _change(ctx, job_id, ("Paused",), "resume")
    _start(ctx, _save_change(ctx, job_id, _pending))


def resubmit(ctx: Context, job_id: str) -> None:
    """Failure → Pending, from the saved cursor: what the remote acknowledged is not sent
    again (Orthanc starts over)."""
    _change(ctx, job_id, ("Failure",), "resubmit")
    _start(ctx, _save_change(ctx, job_id, _pending))


def _pending(job: JobRecord) -> JobRecord:
    job.state, job.completion_time = "Pending", ""
    job.error_code, job.error_description = SUCCESS, "Success"
    return job


def job_content(ctx: Context, job: JobRecord) -> dict[str, Any]:
    """What the job reports (`Content`, a synchronous call's answer): `job.content`, for a
    retrieve with its `Instances` or their count and path (chalicelib/client/retrieve.py)."""
    if job.type != RETRIEVE:
        return job.content
    from chalicelib.client import retrieve

    return retrieve.retrieve_content(ctx, job)


def orthanc_view(ctx: Context, job: JobRecord) -> dict[str, Any]:
    """`GET /jobs/{id}` in Orthanc's shape."""
    view: dict[str, Any] = {
        "ID": job.id,
        "Type": job.type,
        "State": job.state,
        "Progress": job.progress,
        "Priority": job.priority,
        "CreationTime": job.creation_time,
        "EffectiveRuntime": job.runtime,
        "ErrorCode": job.error_code,
        "ErrorDescription": job.error_description,
        "ErrorDetails": "",
        "Timestamp": _now(),
        "Content": job_content(ctx, job),
    }
    if job.completion_time:
        view["CompletionTime"] = job.completion_time
    return view


def run_synchronously(ctx: Context, job: JobRecord) -> JobRecord:
    """Run a new job for a synchronous call: inline locally; on AWS, start it and wait up to
    `JobsSynchronousDeadline` seconds (the job may still be going when the answer is due)."""
    if ctx.settings.backend == "local":
        ctx.jobs.create(job)
        return run_inline(ctx, job.id)
    job = submit(ctx, job)
    end = time.monotonic() + ctx.settings.jobs_synchronous_deadline
    while job.state not in TERMINAL and time.monotonic() < end:
        time.sleep(0.5)
        job = read(ctx, job.id)
    return job


def handle_worker_event(ctx: Context, event: dict[str, Any]) -> dict[str, Any]:
    """The worker Lambda (`app.jobs_worker`) of `infra/jobs.asl.json`.

    `{"JobId", "Execution"}`: run one step and answer `{"JobId", "Done", "Continued"}`; a
    TransientJobError propagates (the state machine retries it with backoff). Continued: the
    job's steps in this execution reached `JobsStepsPerExecution`, so a fresh execution now
    runs it (Step Functions ends a Standard execution at 25,000 history events) and this one
    ends. `{"JobId", "Error", "Cause"}`: the state machine gave up (Catch): mark the job
    Failure with the cause's message.
    """
    job_id = str(event["JobId"])
    if "Error" in event:
        fail(ctx, job_id, _cause_message(str(event["Error"]), str(event.get("Cause", ""))))
        return {"JobId": job_id, "Done": True, "Continued": False}
    done = advance(ctx, job_id)
    try:
        continued = not done and _continue_as_new(ctx, job_id, str(event.get("Execution", "")))
    except (NotFound, errors.NotFound):  # deleted since its step: the next step ends it
        continued = False
    return {"JobId": job_id, "Done": done, "Continued": continued}


def _continue_as_new(ctx: Context, job_id: str, execution: str) -> bool:
    """Start a fresh execution of the job once this one (`execution`) has run
    `JobsStepsPerExecution` of its steps, and record it (the sweep's `is_running` asks about
    the recorded one, which runs until this step returns); whether it did.

    No `execution`: the invoking execution runs a definition from before continuations (one
    started before the deploy that brought them), which would not stop on Continued: the job
    goes on in it. A refused StartExecution leaves the job going on in this execution too,
    trying again after its next step (`_start`'s failing the job is for the API's calls)."""
    if not execution:
        return False
    job = ctx.jobs.get(job_id)
    if job.state != "Running" or job.execution_steps < ctx.settings.jobs_steps_per_execution:
        return False
    job.execution = execution  # the runner starts the state machine of this execution
    try:
        handle = ctx.job_runner.start(job)
    except Exception as exc:
        log.warning("job %s: no new execution (%s); going on in this one", job_id, exc)
        return False
    _save_change(ctx, job_id, _started(handle))
    log.info("job %s: went on in a new execution after %d steps", job_id, job.execution_steps)
    return True


def _cause_message(error: str, cause: str) -> str:
    """The Lambda error's message out of a Step Functions Cause (JSON with errorMessage)."""
    try:
        message = json.loads(cause).get("errorMessage", "")
    except (ValueError, AttributeError):
        message = cause
    return f"{error}: {message}" if message else error
