"""JobQueueService for both clients: `Jobs` (blocking) and its twin `AsyncJobs` (asyncio)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from stord.client import _codec, _convert
from stord.client._codec import TTL
from stord.client._models import EnqueuedJob, EnqueueJob, Job, JobStatus, QueueStats
from stord.v1 import jobs_pb2 as pb
from stord.v1 import jobs_pb2_grpc

if TYPE_CHECKING:
    from stord.client import _async, _sync

__all__ = ["AsyncJobs", "Jobs"]


def _enqueue_request(
    queue: str,
    payload: Mapping[str, Any] | None,
    run_at: datetime.datetime | None,
    delay: TTL | None,
    priority: int,
    max_attempts: int,
    dedupe_key: str | None,
) -> pb.EnqueueRequest:
    job = EnqueueJob(queue, payload or {}, run_at, delay, priority, max_attempts, dedupe_key)
    return pb.EnqueueRequest(jobs=[_convert.new_job(job)])


def _dequeue_request(
    queue: str, max_jobs: int, lease: TTL | None, wait: TTL | None
) -> tuple[pb.DequeueRequest, float]:
    """Return the request and how long the server may wait before answering."""
    wait_for = _codec.duration(wait)
    request = pb.DequeueRequest(
        queue=queue,
        max_jobs=max_jobs,
        lease_duration=_codec.duration(lease),
        wait=wait_for,
        json_payloads=True,  # JSON text is cheaper than a Struct on both sides
    )
    return request, 0.0 if wait_for is None else wait_for.ToNanoseconds() / 1e9


def _deadline(call: _sync._Caller | _async._Caller, wait: float) -> float | None:
    """A long poll's deadline: the usual one, counted from when the server stops waiting."""
    return None if call.timeout is None else call.timeout + wait


def _fail_request(job: Job, error: str, retry: bool) -> pb.FailRequest:
    (lease,) = _convert.leases([job])
    return pb.FailRequest(lease=lease, error=error, retry=retry)


class Jobs:
    """JobQueueService: durable job queues with leases. Reached as `Client.jobs`."""

    def __init__(self, channel: grpc.Channel, call: _sync._Caller) -> None:
        self._stub = jobs_pb2_grpc.JobQueueServiceStub(channel)
        self._call = call

    def enqueue(
        self,
        queue: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime.datetime | None = None,
        delay: TTL | None = None,
        priority: int = 0,
        max_attempts: int = 0,
        dedupe_key: str | None = None,
    ) -> str:
        """Enqueue one job and return its id (or that of the unfinished job with the same dedupe key)."""
        request = _enqueue_request(queue, payload, run_at, delay, priority, max_attempts, dedupe_key)
        return self._call(self._stub.Enqueue, request).jobs[0].job_id

    def enqueue_many(self, jobs: Iterable[EnqueueJob]) -> list[EnqueuedJob]:
        """Enqueue up to 1000 jobs at once, all or nothing."""
        request = pb.EnqueueRequest(jobs=[_convert.new_job(job) for job in jobs])
        return [_convert.enqueued(job) for job in self._call(self._stub.Enqueue, request).jobs]

    def dequeue(
        self, queue: str, *, max_jobs: int = 1, lease: TTL | None = None, wait: TTL | None = None
    ) -> list[Job]:
        """Lease up to `max_jobs` due jobs for `lease` (None: 30 s), waiting up to `wait` for one to come."""
        request, wait_seconds = _dequeue_request(queue, max_jobs, lease, wait)
        try:
            response = self._stub.Dequeue(
                request,
                timeout=_deadline(self._call, wait_seconds),
                metadata=self._call.metadata,
                wait_for_ready=self._call.wait_for_ready,
            )
        except grpc.RpcError as error:
            raise self._call.failure(error) from None
        return [_convert.job(job) for job in response.jobs]

    def acknowledge(self, jobs: Iterable[Job]) -> None:
        """Complete dequeued jobs, all or nothing; FailedPrecondition when a lease is no longer held."""
        self._call(self._stub.Acknowledge, pb.AcknowledgeRequest(leases=_convert.leases(jobs)))

    def fail(self, job: Job, error: str, *, retry: bool = True) -> Job:
        """Report a failed attempt: retried after a backoff while attempts remain and `retry`, else failed."""
        return _convert.job(self._call(self._stub.Fail, _fail_request(job, error, retry)).job)

    def extend_lease(self, jobs: Iterable[Job], *, lease: TTL | None = None) -> datetime.datetime:
        """Renew the leases of dequeued jobs to `lease` (None: 30 s) from now, all or nothing."""
        request = pb.ExtendLeaseRequest(leases=_convert.leases(jobs), lease_duration=_codec.duration(lease))
        return _convert.moment(self._call(self._stub.ExtendLease, request).lease_expire_time)

    def get(self, job_id: str) -> Job | None:
        """Return the job, None when there is none."""
        response = self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))
        return _convert.job(response.job) if response.found else None

    def find(
        self, queue: str, *, statuses: Iterable[JobStatus | str] = (), page_size: int = 0
    ) -> Iterator[Job]:
        """Yield the queue's jobs in enqueue order, only those in `statuses` when given, page by page."""
        request = pb.ListJobsRequest(queue=queue, statuses=_convert.statuses(statuses), page_size=page_size)
        while True:
            response = self._call(self._stub.ListJobs, request)
            for job in response.jobs:
                yield _convert.job(job)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def stats(self, queue: str) -> QueueStats:
        """Count the queue's jobs by status."""
        return _convert.stats(self._call(self._stub.GetQueueStats, pb.GetQueueStatsRequest(queue=queue)))


class AsyncJobs:
    """JobQueueService: durable job queues with leases. Reached as `AsyncClient.jobs`."""

    def __init__(self, channel: grpc.aio.Channel, call: _async._Caller) -> None:
        self._stub = jobs_pb2_grpc.JobQueueServiceStub(channel)
        self._call = call

    async def enqueue(
        self,
        queue: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime.datetime | None = None,
        delay: TTL | None = None,
        priority: int = 0,
        max_attempts: int = 0,
        dedupe_key: str | None = None,
    ) -> str:
        """Enqueue one job and return its id (or that of the unfinished job with the same dedupe key)."""
        request = _enqueue_request(queue, payload, run_at, delay, priority, max_attempts, dedupe_key)
        return (await self._call(self._stub.Enqueue, request)).jobs[0].job_id

    async def enqueue_many(self, jobs: Iterable[EnqueueJob]) -> list[EnqueuedJob]:
        """Enqueue up to 1000 jobs at once, all or nothing."""
        request = pb.EnqueueRequest(jobs=[_convert.new_job(job) for job in jobs])
        return [_convert.enqueued(job) for job in (await self._call(self._stub.Enqueue, request)).jobs]

    async def dequeue(
        self, queue: str, *, max_jobs: int = 1, lease: TTL | None = None, wait: TTL | None = None
    ) -> list[Job]:
        """Lease up to `max_jobs` due jobs for `lease` (None: 30 s), waiting up to `wait` for one to come."""
        request, wait_seconds = _dequeue_request(queue, max_jobs, lease, wait)
        try:
            response = await self._stub.Dequeue(
                request,
                timeout=_deadline(self._call, wait_seconds),
                metadata=self._call.metadata,
                wait_for_ready=self._call.wait_for_ready,
            )
        except grpc.RpcError as error:
            raise self._call.failure(error) from None
        return [_convert.job(job) for job in response.jobs]

    async def acknowledge(self, jobs: Iterable[Job]) -> None:
        """Complete dequeued jobs, all or nothing; FailedPrecondition when a lease is no longer held."""
        await self._call(self._stub.Acknowledge, pb.AcknowledgeRequest(leases=_convert.leases(jobs)))

    async def fail(self, job: Job, error: str, *, retry: bool = True) -> Job:
        """Report a failed attempt: retried after a backoff while attempts remain and `retry`, else failed."""
        return _convert.job((await self._call(self._stub.Fail, _fail_request(job, error, retry))).job)

    async def extend_lease(self, jobs: Iterable[Job], *, lease: TTL | None = None) -> datetime.datetime:
        """Renew the leases of dequeued jobs to `lease` (None: 30 s) from now, all or nothing."""
        request = pb.ExtendLeaseRequest(leases=_convert.leases(jobs), lease_duration=_codec.duration(lease))
        return _convert.moment((await self._call(self._stub.ExtendLease, request)).lease_expire_time)

    async def get(self, job_id: str) -> Job | None:
        """Return the job, None when there is none."""
        response = await self._call(self._stub.GetJob, pb.GetJobRequest(job_id=job_id))
        return _convert.job(response.job) if response.found else None

    async def find(
        self, queue: str, *, statuses: Iterable[JobStatus | str] = (), page_size: int = 0
    ) -> AsyncIterator[Job]:
        """Yield the queue's jobs in enqueue order, only those in `statuses` when given, page by page."""
        request = pb.ListJobsRequest(queue=queue, statuses=_convert.statuses(statuses), page_size=page_size)
        while True:
            response = await self._call(self._stub.ListJobs, request)
            for job in response.jobs:
                yield _convert.job(job)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def stats(self, queue: str) -> QueueStats:
        """Count the queue's jobs by status."""
        return _convert.stats(
            await self._call(self._stub.GetQueueStats, pb.GetQueueStatsRequest(queue=queue))
        )
