"""The job queue (DESIGN 4.3) over the jobs table of migrations/sqlite/0003 and 0008 (integer instants).

Every change runs on the engine's single writer thread, so a dequeue's select-and-lease cannot interleave with
another's: no job is handed to two workers. Time comes from the injected clock, passed in as `now`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import orjson

from stord.server.backends._rows import read_job
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.tables import JOBS, Rows
from stord.server.jobs.port import (
    EnqueuedJob,
    Job,
    JobLease,
    JobQuery,
    JobStatus,
    LeaseSweep,
    NewJob,
    QueueStats,
    later,
    now_micros,
)
from stord.server.jobs.rules import (
    LEASE_LAPSED,
    LEASE_LOST,
    QueueWakeups,
    lease_not_held,
    new_lease_token,
    retry_delay,
)
from stord.server.ports import Clock

__all__ = ["SqliteJobQueueStore", "insert_jobs"]

_COLUMNS = JOBS.names()

_INSERT = """
INSERT INTO jobs (namespace, id, queue, status, priority, run_at, attempts, max_attempts, dedupe_key, payload,
                  create_time, update_time)
VALUES (:namespace, :id, :queue, 'pending', :priority, :run_at, 0, :max_attempts, :dedupe_key, :payload,
        :now, :now)
"""

_DEDUPE_HOLDER = """
SELECT id FROM jobs
WHERE namespace = :namespace AND queue = :queue AND dedupe_key = :dedupe_key
  AND status IN ('pending', 'running', 'retrying')
"""

_FAIL_EXHAUSTED = """
UPDATE jobs SET status = 'failed', last_error = :lost, lease_token = NULL, lease_expires_at = NULL,
                update_time = :now
WHERE namespace = :namespace AND queue = :queue AND status = 'running' AND lease_expires_at <= :now
  AND attempts >= max_attempts
"""

# The waiting branch reads the jobs_waiting index in hand-out order and stops at the limit; the expired
# branch reads jobs_leased. Exhausted jobs were failed just before, so every expired one has attempts left.
_LEASE = f"""
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = :token,
                lease_expires_at = :expires_at, update_time = :now
WHERE sequence IN (
    SELECT sequence FROM (
        SELECT * FROM (
            SELECT sequence, priority, run_at FROM jobs
            WHERE namespace = :namespace AND queue = :queue AND status IN ('pending', 'retrying')
              AND run_at <= :now
            ORDER BY priority DESC, run_at, sequence
            LIMIT :limit
        )
        UNION ALL
        SELECT * FROM (
            SELECT sequence, priority, run_at FROM jobs
            WHERE namespace = :namespace AND queue = :queue AND status = 'running'
              AND lease_expires_at <= :now
            ORDER BY priority DESC, run_at, sequence
            LIMIT :limit
        )
    )
    ORDER BY priority DESC, run_at, sequence
    LIMIT :limit
)
RETURNING {_COLUMNS}
"""

_HELD = """namespace = :namespace AND id = :id AND status = 'running' AND lease_token = :token
  AND lease_expires_at > :now"""

_COMPLETE = f"""
UPDATE jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL, update_time = :now
WHERE {_HELD}
"""

_HELD_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE {_HELD}"

_SETTLE_FAILURE = """
UPDATE jobs SET status = :status, run_at = :run_at, last_error = :error, lease_token = NULL,
                lease_expires_at = NULL, update_time = :now
WHERE sequence = :sequence
"""

_EXTEND = f"UPDATE jobs SET lease_expires_at = :expires_at, update_time = :now WHERE {_HELD}"

_GET = f"SELECT {_COLUMNS} FROM jobs WHERE namespace = :namespace AND id = :id"

_STATS = "SELECT status, count(*) FROM jobs WHERE namespace = :namespace AND queue = :queue GROUP BY status"

# The sweeper's passes over every namespace: lapsed leases by the jobs_lapsing index, finished jobs by
# jobs_finished (migrations/sqlite/0008), each in bounded batches so the writer is never held long.
_LAPSED = """
SELECT sequence, attempts >= max_attempts FROM jobs
WHERE status = 'running' AND lease_expires_at <= :now
ORDER BY lease_expires_at
LIMIT :limit
"""

_SETTLE_LAPSED = """
UPDATE jobs SET status = :status, last_error = :error, run_at = CASE WHEN :retry THEN :now ELSE run_at END,
                lease_token = NULL, lease_expires_at = NULL, update_time = :now
WHERE sequence = :sequence
"""

_DELETE_FINISHED = """
DELETE FROM jobs WHERE sequence IN (
    SELECT sequence FROM jobs WHERE status = :status AND update_time < :before
    ORDER BY update_time
    LIMIT :limit
)
"""


def _order(job: Job) -> tuple[int, int, int]:
    return (-job.priority, job.run_at, job.sequence)


def insert_jobs(
    connection: sqlite3.Connection, namespace: str, jobs: Sequence[NewJob], now: int
) -> list[EnqueuedJob]:
    """Enqueue jobs in order on the writer connection; a job whose dedupe key is held returns the holder."""
    enqueued: list[EnqueuedJob] = []
    for job in jobs:
        if job.dedupe_key is not None:
            holder = connection.execute(
                _DEDUPE_HOLDER, {"namespace": namespace, "queue": job.queue, "dedupe_key": job.dedupe_key}
            ).fetchone()
            if holder is not None:
                enqueued.append(EnqueuedJob(holder[0], deduplicated=True))
                continue
        connection.execute(
            _INSERT,
            {
                "namespace": namespace,
                "id": job.id,
                "queue": job.queue,
                "priority": job.priority,
                "run_at": job.run_at,
                "max_attempts": job.max_attempts,
                "dedupe_key": job.dedupe_key,
                "payload": orjson.dumps(job.payload).decode(),
                "now": now,
            },
        )
        enqueued.append(EnqueuedJob(job.id))
    return enqueued


class SqliteJobQueueStore:
    """Jobs in one SQLite table; every change goes through the engine's writer thread."""

    def __init__(self, engine: SqliteEngine, clock: Clock, wakeups: QueueWakeups) -> None:
        self._engine = engine
        self._clock = clock
        self._wakeups = wakeups

    @property
    def clock(self) -> Clock:
        return self._clock

    async def enqueue(self, namespace: str, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        now = now_micros(self._clock)
        enqueued = await self._engine.write(lambda connection: insert_jobs(connection, namespace, jobs, now))
        self._wakeups.notify_queues(namespace, (job.queue for job in jobs))
        return enqueued

    async def dequeue(self, namespace: str, queue: str, *, limit: int, lease: int) -> list[Job]:
        now = now_micros(self._clock)
        parameters = {
            "namespace": namespace,
            "queue": queue,
            "now": now,
            "limit": limit,
            "token": new_lease_token(),
            "expires_at": later(now, lease, "lease_duration"),
            "lost": LEASE_LOST,
        }

        def run(connection: sqlite3.Connection) -> list[Job]:
            connection.execute(_FAIL_EXHAUSTED, parameters)
            rows = connection.execute(_LEASE, parameters).fetchall()
            return sorted((read_job(row, with_token=True) for row in rows), key=_order)

        jobs = await self._engine.write(run)
        if len(jobs) == limit:
            self._wakeups.notify(namespace, queue)  # more may be left: pass the wake-up on
        return jobs

    def _held_or_raise(
        self,
        connection: sqlite3.Connection,
        statement: str,
        namespace: str,
        leases: Sequence[JobLease],
        **extra: Any,
    ) -> None:
        """Run `statement` per lease; raise FailedPrecondition (rolling back) if a lease is not held."""
        lost = [
            lease.job_id
            for lease in leases
            if connection.execute(
                statement, {"namespace": namespace, "id": lease.job_id, "token": lease.token, **extra}
            ).rowcount
            == 0
        ]
        if lost:
            raise lease_not_held(lost)

    async def acknowledge(self, namespace: str, leases: Sequence[JobLease]) -> None:
        now = now_micros(self._clock)
        await self._engine.write(
            lambda connection: self._held_or_raise(connection, _COMPLETE, namespace, leases, now=now)
        )

    async def fail(self, namespace: str, lease: JobLease, *, error: str, retry: bool) -> Job:
        now = now_micros(self._clock)

        def run(connection: sqlite3.Connection) -> Job:
            row = connection.execute(
                _HELD_JOB, {"namespace": namespace, "id": lease.job_id, "token": lease.token, "now": now}
            ).fetchone()
            if row is None:
                raise lease_not_held([lease.job_id])
            job = read_job(row)
            if retry and job.attempts < job.max_attempts:
                status, run_at = JobStatus.RETRYING, later(now, retry_delay(job.attempts), "retry")
            else:
                status, run_at = JobStatus.FAILED, job.run_at
            connection.execute(
                _SETTLE_FAILURE,
                {
                    "status": status.value,
                    "run_at": run_at,
                    "error": error,
                    "now": now,
                    "sequence": job.sequence,
                },
            )
            return replace(
                job, status=status, run_at=run_at, last_error=error, lease_expires_at=None, update_time=now
            )

        return await self._engine.write(run)

    async def extend_leases(self, namespace: str, leases: Sequence[JobLease], lease: int) -> int:
        now = now_micros(self._clock)
        expires_at = later(now, lease, "lease_duration")
        await self._engine.write(
            lambda connection: self._held_or_raise(
                connection, _EXTEND, namespace, leases, now=now, expires_at=expires_at
            )
        )
        return expires_at

    async def get(self, namespace: str, job_id: str) -> Job | None:
        def run(connection: sqlite3.Connection) -> Job | None:
            row = connection.execute(_GET, {"namespace": namespace, "id": job_id}).fetchone()
            return None if row is None else read_job(row)

        return await self._engine.lookup(run)

    async def find(self, namespace: str, query: JobQuery) -> list[Job]:
        queue, statuses, after, limit = query.queue, query.statuses, query.after, query.limit
        parameters: dict[str, object] = {
            "namespace": namespace,
            "queue": queue,
            "after": after or 0,
            "limit": limit,
        }
        status_filter = ""
        if statuses:
            names = [f"status{index}" for index in range(len(statuses))]
            parameters.update(zip(names, sorted(status.value for status in statuses), strict=True))
            status_filter = f"AND status IN ({', '.join(f':{name}' for name in names)})"
        sql = f"""
            SELECT {_COLUMNS} FROM jobs
            WHERE namespace = :namespace AND queue = :queue {status_filter} AND sequence > :after
            ORDER BY sequence LIMIT :limit
        """

        def run(connection: sqlite3.Connection) -> list[Job]:
            return [read_job(row) for row in connection.execute(sql, parameters)]

        return await self._engine.read(run)

    async def stats(self, namespace: str, queue: str) -> QueueStats:
        def run(connection: sqlite3.Connection) -> QueueStats:
            rows = connection.execute(_STATS, {"namespace": namespace, "queue": queue}).fetchall()
            return QueueStats(**{JobStatus(status).value: count for status, count in rows})

        return await self._engine.read(run)

    async def settle_lapsed_leases(self, *, limit: int) -> LeaseSweep:
        now = now_micros(self._clock)

        def run(connection: sqlite3.Connection) -> LeaseSweep:
            lapsed = connection.execute(_LAPSED, {"now": now, "limit": limit}).fetchall()
            for sequence, exhausted in lapsed:
                connection.execute(
                    _SETTLE_LAPSED,
                    {
                        "status": (JobStatus.FAILED if exhausted else JobStatus.RETRYING).value,
                        "error": LEASE_LOST if exhausted else LEASE_LAPSED,
                        "retry": not exhausted,
                        "now": now,
                        "sequence": sequence,
                    },
                )
            failed = sum(1 for _, exhausted in lapsed if exhausted)
            return LeaseSweep(failed=failed, retried=len(lapsed) - failed)

        swept = await self._engine.write(run)
        if swept.retried:
            self._wakeups.notify_every_queue()
        return swept

    async def delete_finished(self, status: JobStatus, *, before: int, limit: int) -> int:
        parameters = {"status": status.value, "before": before, "limit": limit}
        return await self._engine.write(
            lambda connection: connection.execute(_DELETE_FINISHED, parameters).rowcount
        )

    def watch(self, namespace: str, queue: str) -> AbstractContextManager[asyncio.Event]:
        return self._wakeups.watch(namespace, queue)


JOB_ROWS = Rows(_COLUMNS, functools.partial(read_job, with_token=True))
"""How export reads the jobs table (after its namespace column), lease tokens included."""
