"""Unit tests of chalicelib/storage/jobs_local.py's runner: what it says it is running."""

from __future__ import annotations

import threading
import time

from chalicelib import jobs
from chalicelib.storage.jobs_local import ThreadJobRunner


def test_running_jobs_are_the_queued_and_the_stepping_ones() -> None:
    stepping, release = threading.Event(), threading.Event()

    def step(job_id: str) -> bool:
        stepping.set()
        assert release.wait(30)
        return True

    runner = ThreadJobRunner(step, workers=1)
    first = jobs.new_job(jobs.STOW, "remote", {}, {}, 0)
    second = jobs.new_job(jobs.STOW, "remote", {}, {}, 0)
    assert runner.running_jobs() == set()
    runner.start(first)
    assert stepping.wait(30)
    runner.start(second)  # queued behind the one worker
    assert runner.running_jobs() == {first.id, second.id}
    release.set()
    deadline = time.monotonic() + 30
    while runner.running_jobs():
        assert time.monotonic() < deadline, runner.running_jobs()
        time.sleep(0.01)
