"""Jobs locally: the JobStore on SQLite (the index's database file) and an in-process runner.

The runner keeps a priority queue of job ids and a few worker threads that call the step
function it is given (`chalicelib.jobs.run_step_with_retries`) until it says the job is done.
Jobs left Pending or Running when the process stopped are queued again at start
(`resume`), and go on from their saved cursor.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from chalicelib.storage.ports import Conflict, JobRecord, NotFound

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    creation_time TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL
)
"""


def _document(job: JobRecord) -> str:
    return json.dumps(dataclasses.asdict(job), separators=(",", ":"))


def _record(document: str) -> JobRecord:
    return JobRecord(**json.loads(document))


class SqliteJobStore:
    """JobStore on SQLite; may share the index's database file (table `jobs`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, job: JobRecord) -> None:
        job = dataclasses.replace(job, version=0)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO jobs (id, creation_time, version, document) VALUES (?, ?, 0, ?)",
                    (job.id, job.creation_time, _document(job)),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"job {job.id} exists") from None

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute("SELECT document FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return _record(row[0])

    def list(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT document FROM jobs ORDER BY creation_time, id"
            ).fetchall()
        return [_record(row[0]) for row in rows]

    def save(self, job: JobRecord) -> JobRecord:
        saved = dataclasses.replace(job, version=job.version + 1)
        with self._lock:
            changed = self._db.execute(
                "UPDATE jobs SET version = ?, document = ? WHERE id = ? AND version = ?",
                (saved.version, _document(saved), job.id, job.version),
            ).rowcount
            exists = (
                changed or self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone()
            )
        if not exists:
            raise NotFound(f"job {job.id} not found")
        if not changed:
            raise Conflict(f"job {job.id} was changed meanwhile")
        return saved

    def delete(self, job: JobRecord) -> None:
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM jobs WHERE id = ? AND version = ?", (job.id, job.version)
            ).rowcount
            exists = self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if not deleted and not exists:
            raise NotFound(f"job {job.id} not found")
        if not deleted:
            raise Conflict(f"job {job.id} was changed meanwhile")


class ThreadJobRunner:
    """Runs queued jobs in daemon threads, highest priority first, one step at a time (so a
    job of higher priority queued later gets the next free step)."""

    def __init__(self, step: Callable[[str], bool], workers: int = 2) -> None:
        self._step = step
        self._workers = workers
        self._queue: list[tuple[int, int, str]] = []
        self._order = itertools.count()
        self._queued: set[str] = set()
        self._stepping: set[str] = set()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []

    def start(self, job: JobRecord) -> str:
        self._push(job.id, job.priority)
        return ""

    def stop(self, job: JobRecord) -> None:
        """Nothing to interrupt: the next step reads the job's state and ends it."""

    def is_running(self, job: JobRecord) -> bool:
        with self._condition:
            return job.id in self._queued or job.id in self._stepping

    def resume(self, jobs: Iterable[JobRecord]) -> None:
        """Queue the jobs a previous process left Pending or Running."""
        for job in jobs:
            if job.state in ("Pending", "Running"):
                self._push(job.id, job.priority)

    def _push(self, job_id: str, priority: int) -> None:
        with self._condition:
            if job_id in self._queued:
                return
            self._queued.add(job_id)
            heapq.heappush(self._queue, (-priority, next(self._order), job_id))
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name="job-runner", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._condition.notify()

    def _work(self) -> None:
        while True:
            with self._condition:
                if not self._queue:
                    self._condition.wait(timeout=2)
                    if not self._queue:
                        self._threads.remove(threading.current_thread())
                        return
                priority, _, job_id = heapq.heappop(self._queue)
                self._queued.discard(job_id)
                self._stepping.add(job_id)
            try:
                done = self._step(job_id)
            except Exception:
                log.exception("job %s: step failed", job_id)
                done = True
            if not done:
                self._push(job_id, -priority)
            with self._condition:
                self._stepping.discard(job_id)
