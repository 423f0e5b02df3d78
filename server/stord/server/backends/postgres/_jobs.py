"""The job queue (DESIGN 4.3) over the jobs table of migrations/postgres/0003 and 0008 (integer instants).

Leases are decided in the database, so several daemons on one database agree: a dequeue locks the rows it
takes with FOR UPDATE SKIP LOCKED (concurrent dequeues pass over each other's rows instead of waiting) and
re-checks each row's state on its latest version. Every enqueue NOTIFYs the `stord_jobs` channel at commit;
each daemon LISTENs on a connection of its own (opened on the first long poll) and wakes its waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import structlog

from stord.server.backends._rows import read_job
from stord.server.backends.postgres._migrate import connect_alone
from stord.server.backends.postgres._pool import Connection, Pool
from stord.server.backends.tables import JOBS, Rows
from stord.server.config import PostgresOptions
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
from stord.server.ports import Clock, Unavailable

__all__ = ["JobNotifications", "PostgresJobQueueStore", "at", "insert_jobs"]

_log = structlog.get_logger("stord.postgres")

CHANNEL = "stord_jobs"
"""The NOTIFY channel; a payload is `<namespace> <queue>` (neither can hold a space)."""
_LISTEN = "LISTEN stord_jobs"

_RELISTEN_DELAY = 1.0
_DEDUPE_ATTEMPTS = 5

_COLUMNS = JOBS.names(prefix="jobs.", cast={"payload": "::text"})

_NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# Arrays go in binary (%(name)b): psycopg escapes text arrays element by element with a regex, which costs
# more than the rest of an enqueue. One statement for a batch without dedupe keys: rows go in in request
# order (so sequences follow it), and the queues' watchers are notified when the statement's transaction
# commits.
_INSERT_MANY = """
WITH inserted AS (
    INSERT INTO jobs (namespace, id, queue, status, priority, run_at, attempts, max_attempts, payload,
                      create_time, update_time)
    SELECT %(namespace)s, job.id, job.queue, 'pending', job.priority, job.run_at, 0, job.max_attempts,
           job.payload, %(now)s, %(now)s
    FROM unnest(%(ids)b::text[], %(queues)b::text[], %(priorities)b::integer[], %(run_ats)b::bigint[],
                %(max_attempts)b::integer[], %(payloads)b::jsonb[])
         WITH ORDINALITY AS job(id, queue, priority, run_at, max_attempts, payload, position)
    ORDER BY job.position
    RETURNING queue
)
SELECT pg_notify(%(channel)s, %(namespace)s || ' ' || queue)
FROM (SELECT DISTINCT queue FROM inserted) AS queues
"""

_INSERT_ONE = """
INSERT INTO jobs (namespace, id, queue, status, priority, run_at, attempts, max_attempts, dedupe_key, payload,
                  create_time, update_time)
VALUES (%(namespace)s, %(id)s, %(queue)s, 'pending', %(priority)s, %(run_at)s, 0, %(max_attempts)s,
        %(dedupe_key)s, %(payload)s::jsonb, %(now)s, %(now)s)
ON CONFLICT (namespace, queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running', 'retrying')
    DO NOTHING
RETURNING id
"""

_DEDUPE_HOLDER = """
SELECT id FROM jobs
WHERE namespace = %(namespace)s AND queue = %(queue)s AND dedupe_key = %(dedupe_key)s
  AND status IN ('pending', 'running', 'retrying')
"""

# `exhausted` fails the jobs whose lease ran out on their last attempt; `waiting` and `expired` lock up to
# `limit` candidates each, in hand-out order, skipping rows other dequeues hold; the best `limit` of them
# are leased. A candidate locked but not leased is released when the statement ends.
_DEQUEUE = f"""
WITH exhausted AS (
    UPDATE jobs SET status = 'failed', last_error = %(lost)s, lease_token = NULL, lease_expires_at = NULL,
                    update_time = %(now)s
    WHERE namespace = %(namespace)s AND queue = %(queue)s AND status = 'running'
      AND lease_expires_at <= %(now)s AND attempts >= max_attempts
),
waiting AS (
    SELECT id, sequence, priority, run_at FROM jobs
    WHERE namespace = %(namespace)s AND queue = %(queue)s AND status IN ('pending', 'retrying')
      AND run_at <= %(now)s
    ORDER BY priority DESC, run_at, sequence
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
expired AS (
    SELECT id, sequence, priority, run_at FROM jobs
    WHERE namespace = %(namespace)s AND queue = %(queue)s AND status = 'running'
      AND lease_expires_at <= %(now)s AND attempts < max_attempts
    ORDER BY priority DESC, run_at, sequence
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM expired) AS due
    ORDER BY priority DESC, run_at, sequence
    LIMIT %(limit)s
)
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = %(token)s,
                lease_expires_at = %(expires_at)s, update_time = %(now)s
FROM picked
WHERE jobs.namespace = %(namespace)s AND jobs.id = picked.id
RETURNING {_COLUMNS}
"""

_HELD = """jobs.namespace = %(namespace)s AND jobs.id = lease.id AND jobs.status = 'running'
  AND jobs.lease_token = lease.token AND jobs.lease_expires_at > %(now)s"""
_LEASES = "unnest(%(ids)b::text[], %(tokens)b::text[]) AS lease(id, token)"

# A batch of leases in one statement, all or nothing: `held` locks the rows whose lease the caller holds
# (re-checked on their latest version), the update happens only if that is every lease, and the statement
# returns the held leases so the caller can name the others.
_ON_HELD = f"""
WITH held AS (
    SELECT jobs.id, lease.token FROM jobs, {_LEASES}
    WHERE {_HELD}
    FOR UPDATE OF jobs
),
changed AS (
    UPDATE jobs SET {{changes}}, update_time = %(now)s
    FROM held
    WHERE jobs.namespace = %(namespace)s AND jobs.id = held.id AND (SELECT count(*) FROM held) = %(count)s
)
SELECT id, token FROM held
"""

_COMPLETE = _ON_HELD.format(changes="status = 'completed', lease_token = NULL, lease_expires_at = NULL")
_EXTEND = _ON_HELD.format(changes="lease_expires_at = %(expires_at)s")

_HELD_JOB = f"""
SELECT {_COLUMNS} FROM jobs, {_LEASES}
WHERE {_HELD}
FOR UPDATE OF jobs
"""

_SETTLE_FAILURE = """
UPDATE jobs SET status = %(status)s, run_at = %(run_at)s, last_error = %(error)s, lease_token = NULL,
                lease_expires_at = NULL, update_time = %(now)s
WHERE namespace = %(namespace)s AND id = %(id)s
"""

_GET = f"SELECT {_COLUMNS} FROM jobs WHERE namespace = %(namespace)s AND id = %(id)s"

_FIND = f"""
SELECT {_COLUMNS} FROM jobs
WHERE namespace = %(namespace)s AND queue = %(queue)s AND sequence > %(after)s
  AND (%(all_statuses)s OR status = ANY(%(statuses)s::text[]))
ORDER BY sequence
LIMIT %(limit)s
"""

_STATS = """
SELECT status, count(*) FROM jobs WHERE namespace = %(namespace)s AND queue = %(queue)s GROUP BY status
"""

# The sweeper's passes over every namespace, in bounded batches: lapsed leases by the jobs_lapsing index
# (a lapsed job another daemon's dequeue holds is skipped; that dequeue settles it), finished jobs by
# jobs_finished (migrations/postgres/0008). Waiters of the queues with retried jobs are woken at commit.
_SETTLE_LAPSED = """
WITH lapsed AS (
    SELECT namespace, id, attempts >= max_attempts AS exhausted FROM jobs
    WHERE status = 'running' AND lease_expires_at <= %(now)s
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
settled AS (
    UPDATE jobs SET status = CASE WHEN lapsed.exhausted THEN 'failed' ELSE 'retrying' END,
                    last_error = CASE WHEN lapsed.exhausted THEN %(lost)s ELSE %(lapsed)s END,
                    run_at = CASE WHEN lapsed.exhausted THEN jobs.run_at ELSE %(now)s END,
                    lease_token = NULL, lease_expires_at = NULL, update_time = %(now)s
    FROM lapsed
    WHERE jobs.namespace = lapsed.namespace AND jobs.id = lapsed.id
    RETURNING jobs.namespace, jobs.queue, lapsed.exhausted
),
woken AS (
    SELECT pg_notify(%(channel)s, namespace || ' ' || queue)
    FROM (SELECT DISTINCT namespace, queue FROM settled WHERE NOT exhausted) AS queues
)
SELECT count(*) FILTER (WHERE exhausted), count(*) FILTER (WHERE NOT exhausted), (SELECT count(*) FROM woken)
FROM settled
"""

_DELETE_FINISHED = """
DELETE FROM jobs USING (
    SELECT namespace, id FROM jobs WHERE status = %(status)s AND update_time < %(before)s
    ORDER BY update_time
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS finished
WHERE jobs.namespace = finished.namespace AND jobs.id = finished.id
"""

_LATEST = datetime.max.replace(tzinfo=UTC)


def at(seconds: float) -> datetime:
    """Return the instant `seconds` after the epoch; beyond datetime's range, its last instant."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return _LATEST


async def _insert_many(connection: Connection, namespace: str, jobs: Sequence[NewJob], now: int) -> None:
    await connection.execute(
        _INSERT_MANY,
        {
            "namespace": namespace,
            "now": now,
            "ids": [job.id for job in jobs],
            "queues": [job.queue for job in jobs],
            "priorities": [job.priority for job in jobs],
            "run_ats": [job.run_at for job in jobs],
            "max_attempts": [job.max_attempts for job in jobs],
            "payloads": [orjson.dumps(job.payload).decode() for job in jobs],
            "channel": CHANNEL,
        },
    )


async def _insert_one(connection: Connection, namespace: str, job: NewJob, now: int) -> EnqueuedJob:
    """Enqueue one job; while an unfinished job holds its dedupe key (in any daemon), return that one."""
    parameters = {
        "namespace": namespace,
        "id": job.id,
        "queue": job.queue,
        "priority": job.priority,
        "run_at": job.run_at,
        "max_attempts": job.max_attempts,
        "dedupe_key": job.dedupe_key,
        "payload": orjson.dumps(job.payload).decode(),
        "now": now,
    }
    for _ in range(_DEDUPE_ATTEMPTS):
        if await (await connection.execute(_INSERT_ONE, parameters)).fetchone() is not None:
            return EnqueuedJob(job.id)
        # The key is held; the holder may finish before we read it, and then the insert is tried again.
        holder = await (await connection.execute(_DEDUPE_HOLDER, parameters)).fetchone()
        if holder is not None:
            return EnqueuedJob(holder[0], deduplicated=True)
    raise Unavailable(f"dedupe key {job.dedupe_key!r} of queue {job.queue!r} is contended; try again")


async def insert_jobs(
    connection: Connection, namespace: str, jobs: Sequence[NewJob], now: int
) -> list[EnqueuedJob]:
    """Enqueue jobs in order, all or none, and NOTIFY their queues at commit."""
    if all(job.dedupe_key is None for job in jobs):
        await _insert_many(connection, namespace, jobs, now)
        return [EnqueuedJob(job.id) for job in jobs]
    async with connection.transaction():
        enqueued = [await _insert_one(connection, namespace, job, now) for job in jobs]
        for queue in sorted({job.queue for job in jobs}):
            await connection.execute(_NOTIFY, {"channel": CHANNEL, "payload": f"{namespace} {queue}"})
    return enqueued


def _lease_parameters(namespace: str, leases: Sequence[JobLease], now: int, **extra: Any) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "ids": [lease.job_id for lease in leases],
        "tokens": [lease.token for lease in leases],
        "count": len(leases),
        "now": now,
        **extra,
    }


class JobNotifications:
    """LISTENs for enqueues on any daemon of the database and wakes this daemon's waiters.

    The listening connection is opened on the first long poll and reopened after a failure; while it is
    down, waiters still find jobs when they check again (at least once a second).
    """

    def __init__(self, url: str, options: PostgresOptions, wakeups: QueueWakeups) -> None:
        self._url = url
        self._options = options
        self._wakeups = wakeups
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening, unless already listening."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="stord-postgres-job-notifications")

    async def close(self) -> None:
        """Stop listening; safe to call more than once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        while True:
            try:
                connection = await connect_alone(
                    self._url, connect_timeout=self._options.connect_timeout, application_name="stord-listen"
                )
                async with connection:
                    await connection.execute(_LISTEN)
                    async for notification in connection.notifies():
                        namespace, _, queue = notification.payload.partition(" ")
                        self._wakeups.notify(namespace, queue)
            except psycopg.Error as error:
                _log.warning("postgres_listen_failed", channel=CHANNEL, error=str(error))
            await asyncio.sleep(_RELISTEN_DELAY)


class PostgresJobQueueStore:
    """Jobs in one PostgreSQL table, shared safely by every daemon on the database."""

    def __init__(
        self, pool: Pool, clock: Clock, wakeups: QueueWakeups, notifications: JobNotifications
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._wakeups = wakeups
        self._notifications = notifications

    @property
    def clock(self) -> Clock:
        return self._clock

    async def enqueue(self, namespace: str, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        now = now_micros(self._clock)
        async with self._pool.connection() as connection:
            enqueued = await insert_jobs(connection, namespace, jobs, now)
        # This daemon's waiters need not wait for the notification's round trip.
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
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_DEQUEUE, parameters)).fetchall()
        if len(rows) == limit:
            self._wakeups.notify(namespace, queue)  # more may be left: pass the wake-up on
        jobs = [read_job(row, with_token=True) for row in rows]
        return sorted(jobs, key=lambda job: (-job.priority, job.run_at, job.sequence))

    async def _update_held(self, statement: str, parameters: dict[str, Any]) -> None:
        """Run an _ON_HELD statement; raise FailedPrecondition naming leases not held (nothing changed)."""
        # Unprepared, so planned for the actual leases: once psycopg prepares it, PostgreSQL's generic plan
        # made acknowledgements 2-3 times slower under load (measured with pg_stat_statements).
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(statement, parameters, prepare=False)).fetchall()
        held = {(job_id, token) for job_id, token in rows}
        leases = zip(parameters["ids"], parameters["tokens"], strict=True)
        lost = [job_id for job_id, token in leases if (job_id, token) not in held]
        if lost:
            raise lease_not_held(lost)

    async def acknowledge(self, namespace: str, leases: Sequence[JobLease]) -> None:
        await self._update_held(_COMPLETE, _lease_parameters(namespace, leases, now_micros(self._clock)))

    async def fail(self, namespace: str, lease: JobLease, *, error: str, retry: bool) -> Job:
        now = now_micros(self._clock)
        parameters = _lease_parameters(namespace, [lease], now)
        async with self._pool.connection() as connection, connection.transaction():
            row = await (await connection.execute(_HELD_JOB, parameters)).fetchone()
            if row is None:
                raise lease_not_held([lease.job_id])
            job = read_job(row)
            if retry and job.attempts < job.max_attempts:
                status, run_at = JobStatus.RETRYING, later(now, retry_delay(job.attempts), "retry")
            else:
                status, run_at = JobStatus.FAILED, job.run_at
            await connection.execute(
                _SETTLE_FAILURE,
                {
                    "status": status.value,
                    "run_at": run_at,
                    "error": error,
                    "now": now,
                    "namespace": namespace,
                    "id": job.id,
                },
            )
        return replace(
            job, status=status, run_at=run_at, last_error=error, lease_expires_at=None, update_time=now
        )

    async def extend_leases(self, namespace: str, leases: Sequence[JobLease], lease: int) -> int:
        now = now_micros(self._clock)
        expires_at = later(now, lease, "lease_duration")
        await self._update_held(_EXTEND, _lease_parameters(namespace, leases, now, expires_at=expires_at))
        return expires_at

    async def get(self, namespace: str, job_id: str) -> Job | None:
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_GET, {"namespace": namespace, "id": job_id})).fetchone()
        return None if row is None else read_job(row)

    async def find(self, namespace: str, query: JobQuery) -> list[Job]:
        queue, statuses, after, limit = query.queue, query.statuses, query.after, query.limit
        parameters = {
            "namespace": namespace,
            "queue": queue,
            "after": after or 0,
            "all_statuses": not statuses,
            "statuses": sorted(status.value for status in statuses),
            "limit": limit,
        }
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_FIND, parameters)).fetchall()
        return [read_job(row) for row in rows]

    async def stats(self, namespace: str, queue: str) -> QueueStats:
        async with self._pool.connection() as connection:
            rows = await (
                await connection.execute(_STATS, {"namespace": namespace, "queue": queue})
            ).fetchall()
        return QueueStats(**{JobStatus(status).value: count for status, count in rows})

    async def settle_lapsed_leases(self, *, limit: int) -> LeaseSweep:
        parameters = {
            "now": now_micros(self._clock),
            "limit": limit,
            "lost": LEASE_LOST,
            "lapsed": LEASE_LAPSED,
            "channel": CHANNEL,
        }
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_SETTLE_LAPSED, parameters)).fetchone()
        assert row is not None
        swept = LeaseSweep(failed=row[0], retried=row[1])
        if swept.retried:
            self._wakeups.notify_every_queue()  # this daemon's waiters need not wait for the NOTIFY
        return swept

    async def delete_finished(self, status: JobStatus, *, before: int, limit: int) -> int:
        parameters = {"status": status.value, "before": before, "limit": limit}
        async with self._pool.connection() as connection:
            cursor = await connection.execute(_DELETE_FINISHED, parameters)
        return cursor.rowcount

    def watch(self, namespace: str, queue: str) -> AbstractContextManager[asyncio.Event]:
        self._notifications.start()
        return self._wakeups.watch(namespace, queue)


JOB_ROWS = Rows(_COLUMNS, functools.partial(read_job, with_token=True))
"""How export reads the jobs table (after its namespace column), lease tokens included."""
