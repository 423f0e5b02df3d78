from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from stord.server.jobs.port import (
    UNFINISHED_JOB_STATUSES,
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
from stord.server.ports import Clock, JsonObject

__all__ = ["MemoryJobQueueStore", "Undo"]

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.

Undo = list[Callable[[], None]]
"""Steps that take back what a transaction did so far, run last to first when it fails."""

_WAITING = (JobStatus.PENDING, JobStatus.RETRYING)

_Entry = tuple[int, int, int, str]
"""A waiting job in its queue's heap: (-priority, run_at, sequence, id), the order dequeues hand jobs out."""


@dataclass(slots=True)
class _Job:
    id: str
    queue: str
    payload: JsonObject
    status: JobStatus
    priority: int
    run_at: int
    max_attempts: int
    dedupe_key: str | None
    create_time: int
    update_time: int
    sequence: int
    attempts: int = 0
    last_error: str | None = None
    lease_expires_at: int | None = None
    lease_token: str | None = None

    def order(self) -> tuple[int, int, int]:
        return (-self.priority, self.run_at, self.sequence)

    def snapshot(self, *, with_token: bool = False) -> Job:
        return Job(
            id=self.id,
            queue=self.queue,
            payload=self.payload,
            status=self.status,
            priority=self.priority,
            run_at=self.run_at,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            dedupe_key=self.dedupe_key,
            last_error=self.last_error,
            create_time=self.create_time,
            update_time=self.update_time,
            lease_expires_at=self.lease_expires_at,
            sequence=self.sequence,
            lease_token=self.lease_token if with_token else None,
        )


@dataclass(slots=True)
class _Namespace:
    jobs: dict[str, _Job] = field(default_factory=dict)
    """Every job by id, in enqueue order."""
    waiting: dict[str, list[_Entry]] = field(default_factory=dict)
    """Per queue, a heap of PENDING and RETRYING jobs; entries that no longer match their job are skipped."""
    running: dict[str, set[str]] = field(default_factory=dict)
    """Per queue, the ids of RUNNING jobs, whose leases may run out."""
    dedupe: dict[tuple[str, str], str] = field(default_factory=dict)
    """(queue, dedupe key) -> the unfinished job that holds the key."""


_EMPTY = _Namespace()
"""What reads see of a namespace without jobs; never written to."""


class MemoryJobQueueStore:
    """Jobs in dicts, waiting jobs in a heap per queue, ordered as dequeues hand them out."""

    def __init__(self, clock: Clock, wakeups: QueueWakeups) -> None:
        self._clock = clock
        self._wakeups = wakeups
        self._namespaces: dict[str, _Namespace] = {}
        self._sequence = 0

    def _space(self, namespace: str) -> _Namespace:
        space = self._namespaces.get(namespace)
        if space is None:
            space = self._namespaces[namespace] = _Namespace()
        return space

    def _view(self, namespace: str) -> _Namespace:
        return self._namespaces.get(namespace) or _EMPTY

    @property
    def clock(self) -> Clock:
        return self._clock

    def add(self, namespace: str, new: NewJob, now: int, undo: Undo) -> EnqueuedJob:
        """Enqueue one job, recording in `undo` how to take it back; the caller wakes the watchers."""
        space = self._space(namespace)
        if new.dedupe_key is not None:
            holder = space.dedupe.get((new.queue, new.dedupe_key))
            if holder is not None:
                return EnqueuedJob(holder, deduplicated=True)
        self._sequence += 1
        job = _Job(
            id=new.id,
            queue=new.queue,
            payload=new.payload,
            status=JobStatus.PENDING,
            priority=new.priority,
            run_at=new.run_at,
            max_attempts=new.max_attempts,
            dedupe_key=new.dedupe_key,
            create_time=now,
            update_time=now,
            sequence=self._sequence,
        )
        space.jobs[job.id] = job
        if job.dedupe_key is not None:
            space.dedupe[(job.queue, job.dedupe_key)] = job.id
        self._push(space, job)
        undo.append(lambda: self._forget(space, job))
        return EnqueuedJob(job.id)

    def _forget(self, space: _Namespace, job: _Job) -> None:
        del space.jobs[job.id]  # its heap entry no longer matches a job and is skipped
        self._release_dedupe(space, job)

    def _push(self, space: _Namespace, job: _Job) -> None:
        heapq.heappush(space.waiting.setdefault(job.queue, []), (*job.order(), job.id))

    def _release_dedupe(self, space: _Namespace, job: _Job) -> None:
        if job.dedupe_key is not None and space.dedupe.get((job.queue, job.dedupe_key)) == job.id:
            del space.dedupe[(job.queue, job.dedupe_key)]

    def _finish(self, space: _Namespace, job: _Job, status: JobStatus, now: int) -> None:
        """End a running job's lease, leaving it in `status`."""
        job.status = status
        job.lease_token = None
        job.lease_expires_at = None
        job.update_time = now
        space.running.get(job.queue, set()).discard(job.id)
        if status not in UNFINISHED_JOB_STATUSES:
            self._release_dedupe(space, job)

    async def enqueue(self, namespace: str, jobs: Sequence[NewJob]) -> list[EnqueuedJob]:
        now = now_micros(self._clock)
        enqueued = [self.add(namespace, job, now, []) for job in jobs]
        self._wakeups.notify_queues(namespace, (job.queue for job in jobs))
        return enqueued

    async def dequeue(self, namespace: str, queue: str, *, limit: int, lease: int) -> list[Job]:
        now = now_micros(self._clock)
        expires_at = later(now, lease, "lease_duration")
        space = self._view(namespace)
        if space is _EMPTY:
            return []
        expired = self._expired_leases(space, queue, now)
        waiting = self._due_waiting(space, queue, now, limit)
        candidates = sorted([*expired, *waiting], key=_Job.order)
        chosen, passed_over = candidates[:limit], candidates[limit:]
        for job in passed_over:
            if job.status in _WAITING:
                self._push(space, job)
        token = new_lease_token()
        running = space.running.setdefault(queue, set())
        for job in chosen:
            job.status = JobStatus.RUNNING
            job.attempts += 1
            job.lease_token = token
            job.lease_expires_at = expires_at
            job.update_time = now
            running.add(job.id)
        if len(chosen) == limit:
            self._wakeups.notify(namespace, queue)  # more may be left: pass the wake-up on
        return [job.snapshot(with_token=True) for job in chosen]

    def _expired_leases(self, space: _Namespace, queue: str, now: int) -> list[_Job]:
        """Return the running jobs whose lease ran out with attempts left; fail those without."""
        expired: list[_Job] = []
        for job_id in list(space.running.get(queue, ())):
            job = space.jobs[job_id]
            assert job.lease_expires_at is not None
            if job.lease_expires_at > now:
                continue
            if job.attempts >= job.max_attempts:
                job.last_error = LEASE_LOST
                self._finish(space, job, JobStatus.FAILED, now)
            else:
                expired.append(job)
        return expired

    def _due_waiting(self, space: _Namespace, queue: str, now: int, limit: int) -> list[_Job]:
        """Pop up to `limit` due waiting jobs off the queue's heap, in order; jobs not due stay on it."""
        heap = space.waiting.get(queue, [])
        due: list[_Job] = []
        not_due: list[_Entry] = []
        while heap and len(due) < limit:
            entry = heapq.heappop(heap)
            job = space.jobs.get(entry[3])
            if job is None or job.status not in _WAITING or job.order() != entry[:3]:
                continue  # taken back, or moved on since this entry was pushed
            if job.run_at > now:
                not_due.append(entry)
            else:
                due.append(job)
        for entry in not_due:
            heapq.heappush(heap, entry)
        return due

    def _held(self, space: _Namespace, leases: Sequence[JobLease], now: int) -> list[_Job]:
        """Return the leased jobs; raise FailedPrecondition naming any lease not held."""
        held: list[_Job] = []
        lost: list[str] = []
        for lease in leases:
            job = space.jobs.get(lease.job_id)
            if (
                job is None
                or job.status is not JobStatus.RUNNING
                or job.lease_token != lease.token
                or job.lease_expires_at is None
                or job.lease_expires_at <= now
            ):
                lost.append(lease.job_id)
            else:
                held.append(job)
        if lost:
            raise lease_not_held(lost)
        return held

    async def acknowledge(self, namespace: str, leases: Sequence[JobLease]) -> None:
        now = now_micros(self._clock)
        space = self._view(namespace)
        for job in self._held(space, leases, now):
            self._finish(space, job, JobStatus.COMPLETED, now)

    async def fail(self, namespace: str, lease: JobLease, *, error: str, retry: bool) -> Job:
        now = now_micros(self._clock)
        space = self._view(namespace)
        (job,) = self._held(space, [lease], now)
        retrying = retry and job.attempts < job.max_attempts
        run_at = later(now, retry_delay(job.attempts), "retry") if retrying else job.run_at
        job.last_error = error
        if retrying:
            self._finish(space, job, JobStatus.RETRYING, now)
            job.run_at = run_at
            self._push(space, job)
        else:
            self._finish(space, job, JobStatus.FAILED, now)
        return job.snapshot()

    async def extend_leases(self, namespace: str, leases: Sequence[JobLease], lease: int) -> int:
        now = now_micros(self._clock)
        expires_at = later(now, lease, "lease_duration")
        for job in self._held(self._view(namespace), leases, now):
            job.lease_expires_at = expires_at
            job.update_time = now
        return expires_at

    async def get(self, namespace: str, job_id: str) -> Job | None:
        job = self._view(namespace).jobs.get(job_id)
        return None if job is None else job.snapshot()

    async def find(self, namespace: str, query: JobQuery) -> list[Job]:
        queue, statuses, after, limit = query.queue, query.statuses, query.after, query.limit
        found: list[Job] = []
        for job in self._view(namespace).jobs.values():
            if job.queue != queue or (statuses and job.status not in statuses):
                continue
            if after is not None and job.sequence <= after:
                continue
            found.append(job.snapshot())
            if len(found) == limit:
                break
        return found

    async def stats(self, namespace: str, queue: str) -> QueueStats:
        counts = dict.fromkeys(JobStatus, 0)
        for job in self._view(namespace).jobs.values():
            if job.queue == queue:
                counts[job.status] += 1
        return QueueStats(**{status.value: count for status, count in counts.items()})

    async def settle_lapsed_leases(self, *, limit: int) -> LeaseSweep:
        now = now_micros(self._clock)
        failed = retried = 0
        for space in self._namespaces.values():
            for running in space.running.values():
                for job_id in list(running):
                    if failed + retried == limit:
                        break
                    job = space.jobs[job_id]
                    assert job.lease_expires_at is not None
                    if job.lease_expires_at > now:
                        continue
                    if job.attempts >= job.max_attempts:
                        job.last_error = LEASE_LOST
                        self._finish(space, job, JobStatus.FAILED, now)
                        failed += 1
                    else:
                        job.last_error = LEASE_LAPSED
                        self._finish(space, job, JobStatus.RETRYING, now)
                        job.run_at = now
                        self._push(space, job)
                        retried += 1
        if retried:
            self._wakeups.notify_every_queue()
        return LeaseSweep(failed, retried)

    async def delete_finished(self, status: JobStatus, *, before: int, limit: int) -> int:
        assert status not in UNFINISHED_JOB_STATUSES
        deleted = 0
        for space in self._namespaces.values():
            for job in list(space.jobs.values()):
                if deleted == limit:
                    return deleted
                if job.status is status and job.update_time < before:
                    del space.jobs[job.id]  # finished: no heap entry, running entry or dedupe key is left
                    deleted += 1
        return deleted

    def watch(self, namespace: str, queue: str) -> AbstractContextManager[asyncio.Event]:
        return self._wakeups.watch(namespace, queue)
