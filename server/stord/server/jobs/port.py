"""The job queue contract (DESIGN 4.3): jobs with priorities, schedules, retries and leases."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from stord.server.ports._base import JsonObject


class JobStatus(enum.Enum):
    """Where a job is in its life (see jobs.proto)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


UNFINISHED_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RETRYING})
"""The statuses in which a job holds its dedupe key."""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue and its new id (unused if deduplicated): due at `run_at`, else `delay` s after now."""

    id: str
    queue: str
    payload: JsonObject
    run_at: float | None = None
    delay: float = 0.0
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
    """A stored job. `sequence` orders jobs by enqueueing; `lease_token` is set only by a dequeue."""

    id: str
    queue: str
    payload: JsonObject
    status: JobStatus
    priority: int
    run_at: float
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    last_error: str | None
    create_time: float
    update_time: float
    lease_expires_at: float | None
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
    """

    async def enqueue(self, namespace: str, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        """Add every job or none, deduplicating by dedupe key; wake the queues' watchers."""
        ...

    async def dequeue(self, namespace: str, queue: str, *, limit: int, lease_seconds: float) -> list[Job]:
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

    async def extend_leases(self, namespace: str, leases: Sequence[JobLease], lease_seconds: float) -> float:
        """Renew every lease to now + `lease_seconds`, or none; return the new expiry."""
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

    def watch(self, namespace: str, queue: str) -> AbstractContextManager[asyncio.Event]:
        """Return a context whose event is set whenever jobs may have been added to the queue.

        Enqueues and retries set it, in this daemon and (PostgreSQL) in every daemon on the database. Jobs
        that become due with time set nothing: a watcher also checks again now and then.
        """
        ...
