"""Unit tests of chalicelib/storage/jobs_local.py's runner: what it says it is running."""

from __future__ import annotations

import threading
import time

from chalicelib import jobs
from chalicelib.storage.jobs_local import ThreadJobRunner


def test_the_running_jobs_are_the_queued_and_the_stepping_ones() -> None:
    stepping, release = threading.Event(), threading.Event()

    def step(job_id: str) -> bool:
        stepping.set()
        assert release.wait(30)
        return True

    runner = ThreadJobRunner(step, workers=1)
    first = jobs.new_job(jobs.STOW, "remote", {}, {}, 0)
    second = jobs.new_job(jobs.STOW, "remote", {}, {}, 0)
    assert not runner.is_running(first) and not runner.is_running(second)
    runner.start(first)
    assert stepping.wait(30)
    runner.start(second)  # queued behind the one worker
    assert runner.is_running(first) and runner.is_running(second)
    release.set()
    deadline = time.monotonic() + 30
    while runner.is_running(first) or runner.is_running(second):
        assert time.monotonic() < deadline
        time.sleep(0.01)
