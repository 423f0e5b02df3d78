"""The job queue contract (DESIGN 4.3): jobs with priorities, schedules, retries and leases."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from stord.server.ports._base import Clock, InvalidArgument, JsonObject


class JobStatus(enum.Enum):
    """Where a job is in its life (see jobs.proto)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


UNFINISHED_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RETRYING})
"""The statuses in which a job holds its dedupe key."""


MICROS = 1_000_000
"""Job instants are integers: microseconds since the epoch (what a PostgreSQL timestamp holds, exactly)."""

MIN_INSTANT = -62_135_596_800 * MICROS
"""0001-01-01T00:00:00Z, the least instant a google.protobuf.Timestamp carries, in microseconds."""

MAX_INSTANT = 253_402_300_800 * MICROS - 1
"""9999-12-31T23:59:59.999999Z, the greatest instant a Timestamp carries at microsecond precision."""


def micros(seconds: float) -> int:
    """Return an instant in seconds since the epoch (a clock's reading) as microseconds."""
    return int(seconds * MICROS)


def now_micros(clock: Clock) -> int:
    """Return the clock's now in microseconds since the epoch."""
    return micros(clock())


def later(now: int, span: int, field: str) -> int:
    """Return the instant `span` microseconds after `now`; past what a Timestamp carries, INVALID_ARGUMENT.

    Every instant a job derives from a request (run_at from a delay, a lease's expiry, a retry's run_at)
    goes through here, so none is stored that GetJob could not answer with.
    """
    moment = now + span
    if moment > MAX_INSTANT:
        raise InvalidArgument(
            field, "ends after 9999-12-31T23:59:59.999999Z, the last instant a Timestamp holds"
        )
    return moment


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue and its new id (unused if deduplicated), due at `run_at` (microseconds)."""

    id: str
    queue: str
    payload: JsonObject
    run_at: int
    priority: int = 0
    max_attempts: int = 3
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """The id of an enqueued job, or of the unfinished job with its dedupe key (`deduplicated`)."""

    job_id: str
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """A stored job. `sequence` orders jobs by enqueueing; `lease_token` is set only by a dequeue.

    Instants (`run_at`, `lease_expires_at`, `create_time`, `update_time`) are microseconds since the epoch,
    always between MIN_INSTANT and MAX_INSTANT.
    """

    id: str
    queue: str
    payload: JsonObject
    status: JobStatus
    priority: int
    run_at: int
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    last_error: str | None
    create_time: int
    update_time: int
    lease_expires_at: int | None
    sequence: int
    lease_token: str | None = None


@dataclass(frozen=True, slots=True)
class JobLease:
    """One delivery of a job: its id and the token the dequeue handed out."""

    job_id: str
    token: str


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Which jobs ListJobs wants: a queue's, of some statuses (empty: all), after a sequence, how many."""

    queue: str
    statuses: frozenset[JobStatus]
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class LeaseSweep:
    """What one pass over lapsed leases did: jobs failed for good, jobs made due again."""

    failed: int = 0
    retried: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Jobs of one queue by status."""

    pending: int = 0
    running: int = 0
    retrying: int = 0
    completed: int = 0
    failed: int = 0


class JobQueueStore(Protocol):
    """Queues of jobs with priorities, schedules, retries and leases (DESIGN 4.3).

    Arguments arrive validated. A lease is held while its job is RUNNING under that token and the lease has
    not run out by the clock; acknowledging, failing or extending a lease not held raises FailedPrecondition.
    Instants and durations are integer microseconds.
    """

    @property
    def clock(self) -> Clock:
        """The clock the store takes `now` from (seconds since the epoch)."""
        ...

    async def enqueue(self, namespace: str, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Add every job or none, deduplicating by dedupe key; wake the queues' watchers."""
        ...

    async def dequeue(self, namespace: str, queue: str, *, limit: int, lease: int) -> list[Job]:
        """Lease up to `limit` due jobs, highest priority first, then earliest run_at, then first enqueued.

        Due: PENDING or RETRYING with run_at <= now, or RUNNING with a lease that ran out. Each becomes
        RUNNING with attempts + 1. A RUNNING job whose lease ran out on its last attempt becomes FAILED.
        """
        ...

    async def acknowledge(self, namespace: str, leases: Sequence[JobLease]) -> None:
        """Complete every job or none."""
        ...

    async def fail(self, namespace: str, lease: JobLease, *, error: str, retry: bool) -> Job:
        """Retry after min(2 ** attempts, 60) s while attempts remain and `retry`, else fail for good."""
        ...

    async def extend_leases(self, namespace: str, leases: Sequence[JobLease], lease: int) -> int:
        """Renew every lease to now + `lease`, or none; return the new expiry."""
        ...

    async def get(self, namespace: str, job_id: str) -> Job | None:
        """Return the job (without lease token), or None."""
        ...

    async def find(self, namespace: str, query: JobQuery) -> list[Job]:
        """Return up to `query.limit` jobs of the queue with a sequence above `query.after`, in order."""
        ...

    async def stats(self, namespace: str, queue: str) -> QueueStats:
        """Count the queue's jobs by status."""
        ...

    async def settle_lapsed_leases(self, *, limit: int) -> LeaseSweep:
        """Settle up to `limit` RUNNING jobs (any namespace) whose lease ran out by now.

        One on its last attempt becomes FAILED (last_error LEASE_LOST); one with attempts left becomes
        RETRYING, due at once (run_at = now), without a lease.
        """
        ...

    async def delete_finished(self, status: JobStatus, *, before: int, limit: int) -> int:
        """Delete up to `limit` COMPLETED or FAILED jobs (any namespace) last changed before `before`.

        Return how many went. A job in any other status is never touched.
        """
        ...

    def watch(self, namespace: str, queue: str) -> AbstractContextManager[asyncio.Event]:
        """Return a context whose event is set whenever jobs may have been added to the queue.

        Enqueues and retries set it, in this daemon and (PostgreSQL) in every daemon on the database. Jobs
        that become due with time set nothing: a watcher also checks again now and then.
        """
        ...
