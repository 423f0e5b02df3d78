"""JobQueueService (DESIGN 4.3) over the JobQueueStore port, with the long-poll loop of Dequeue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import orjson
from google.protobuf.duration_pb2 import Duration

from stord.server.documents import fields
from stord.server.jobs.port import (
    MICROS,
    Job,
    JobLease,
    JobQuery,
    JobQueueStore,
    JobStatus,
    NewJob,
    later,
    now_micros,
)
from stord.server.ports import InvalidArgument
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import jobs_pb2 as pb
from stord.v1 import jobs_pb2_grpc

__all__ = ["JobQueueServicer", "job_message", "new_job"]

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_LEASE = 30.0
MAX_LEASE = 24 * 3600.0
MAX_WAIT = 60.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS = 1000
MAX_DEQUEUE = 1000
MAX_DEDUPE_KEY_BYTES = 256
MAX_ERROR_BYTES = 64 * 1024


_STATUSES = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.RETRYING: pb.JOB_STATUS_RETRYING,
    JobStatus.COMPLETED: pb.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
}
_STATUSES_FROM_PROTO = {message: status for status, message in _STATUSES.items()}


def _duration(duration: Duration, present: bool, field: str, *, default: float, maximum: float) -> float:
    """Return a duration in seconds: unset or zero means `default`, above `maximum` is INVALID_ARGUMENT."""
    seconds = check.ttl(duration, present, field)
    if seconds is None:
        return default
    if seconds > maximum:
        raise InvalidArgument(field, f"must be at most {maximum:g} s")
    return seconds


def _run_at(message: pb.NewJob, field: str, now: int) -> int:
    """Return when a job falls due, in microseconds: its run_at, else now plus its delay (none: now)."""
    if message.HasField("run_at"):
        if message.HasField("delay"):
            raise InvalidArgument(f"{field}.delay", "must not be set together with run_at")
        return check.microseconds(message.run_at, f"{field}.run_at")
    if message.HasField("delay"):
        delay_field = f"{field}.delay"
        return later(now, check.duration_microseconds(message.delay, delay_field), delay_field)
    return now


def new_job(message: pb.NewJob, field: str, now: int) -> NewJob:
    """Return a validated job to enqueue, with a fresh id; `now` (microseconds) resolves its delay."""
    if message.max_attempts < 0 or message.max_attempts > MAX_ATTEMPTS:
        raise InvalidArgument(
            f"{field}.max_attempts", f"must be between 0 (the default, 3) and {MAX_ATTEMPTS}"
        )
    if message.payload_json:
        if message.HasField("payload"):
            raise InvalidArgument(f"{field}.payload_json", "must not be set together with payload")
        payload = fields.json_object_text(message.payload_json, f"{field}.payload_json")
    else:
        payload = fields.json_object(message.payload, f"{field}.payload")
    return NewJob(
        id=fields.new_id(),
        queue=fields.name(message.queue, f"{field}.queue"),
        payload=payload,
        run_at=_run_at(message, field, now),
        priority=message.priority,
        max_attempts=message.max_attempts or DEFAULT_MAX_ATTEMPTS,
        dedupe_key=check.text(message.dedupe_key, f"{field}.dedupe_key", MAX_DEDUPE_KEY_BYTES) or None,
    )


def job_message(job: Job, *, json_payload: bool = False) -> pb.Job:
    """Return a job as its proto message, its payload as JSON text in payload_json when `json_payload`."""
    message = pb.Job(
        id=job.id,
        queue=job.queue,
        payload=None if json_payload else fields.to_struct(job.payload),
        payload_json=orjson.dumps(job.payload).decode() if json_payload else "",
        status=_STATUSES[job.status],
        priority=job.priority,
        run_at=check.timestamp_from_microseconds(job.run_at),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        dedupe_key=job.dedupe_key or "",
        last_error=job.last_error or "",
        create_time=check.timestamp_from_microseconds(job.create_time),
        update_time=check.timestamp_from_microseconds(job.update_time),
        lease_token=job.lease_token or "",
    )
    if job.lease_expires_at is not None:
        message.lease_expire_time.CopyFrom(check.timestamp_from_microseconds(job.lease_expires_at))
    return message


def _lease(message: pb.JobLease, field: str) -> JobLease:
    job_id = check.identifier(message.job_id, f"{field}.job_id")
    if not message.lease_token:
        raise InvalidArgument(f"{field}.lease_token", "must not be empty")
    return JobLease(job_id, message.lease_token)


def _leases(messages: Sequence[pb.JobLease], field: str) -> list[JobLease]:
    """Return a batch of leases, each once."""
    leases = [
        _lease(message, f"{field}[{index}]") for index, message in enumerate(check.batch(messages, field))
    ]
    return list(dict.fromkeys(leases))


def _statuses(messages: Sequence[pb.JobStatus.ValueType]) -> frozenset[JobStatus]:
    statuses: set[JobStatus] = set()
    for index, message in enumerate(messages):
        status = _STATUSES_FROM_PROTO.get(message)
        if status is None:
            raise InvalidArgument(
                f"statuses[{index}]", "must be a JobStatus other than JOB_STATUS_UNSPECIFIED"
            )
        statuses.add(status)
    return frozenset(statuses)


class JobQueueServicer(jobs_pb2_grpc.JobQueueServiceServicer):
    """Jobs: enqueue, lease, complete, fail and inspect."""

    def __init__(
        self,
        store: JobQueueStore,
        tokens: PageTokens,
        *,
        saw_queue: Callable[[str, str], None] | None = None,
        recheck_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._recheck_interval = recheck_interval
        """Seconds a waiting Dequeue sleeps at most between looks (jobs falling due with time wake nobody)."""
        self._saw_queue = saw_queue
        """Told the namespace and queue of every enqueue and dequeue (the metrics' queue depth)."""
        self._waiting: set[asyncio.Event] = set()
        """The wake-up events of the Dequeue calls waiting now, set by `drain`."""
        self._draining = False

    async def Enqueue(self, request: pb.EnqueueRequest, context: Context) -> pb.EnqueueResponse:
        now = now_micros(self._store.clock)
        jobs = [
            new_job(job, f"jobs[{index}]", now) for index, job in enumerate(check.batch(request.jobs, "jobs"))
        ]
        namespace = calls.namespace()
        enqueued = await self._store.enqueue(namespace, jobs)
        if self._saw_queue is not None:
            for queue in {job.queue for job in jobs}:
                self._saw_queue(namespace, queue)
        return pb.EnqueueResponse(
            jobs=[pb.EnqueuedJob(job_id=job.job_id, deduplicated=job.deduplicated) for job in enqueued]
        )

    async def Dequeue(self, request: pb.DequeueRequest, context: Context) -> pb.DequeueResponse:
        queue = fields.name(request.queue, "queue")
        if request.max_jobs < 0 or request.max_jobs > MAX_DEQUEUE:
            raise InvalidArgument("max_jobs", f"must be between 0 (meaning 1) and {MAX_DEQUEUE}")
        lease = _duration(
            request.lease_duration,
            request.HasField("lease_duration"),
            "lease_duration",
            default=DEFAULT_LEASE,
            maximum=MAX_LEASE,
        )
        wait = _duration(request.wait, request.HasField("wait"), "wait", default=0.0, maximum=MAX_WAIT)
        namespace = calls.namespace()
        if self._saw_queue is not None:
            self._saw_queue(namespace, queue)
        jobs = await self._dequeue(namespace, queue, request.max_jobs or 1, round(lease * MICROS), wait)
        json_payload = request.json_payloads
        return pb.DequeueResponse(jobs=[job_message(job, json_payload=json_payload) for job in jobs])

    async def _dequeue(self, namespace: str, queue: str, limit: int, lease: int, wait: float) -> list[Job]:
        """Lease due jobs for `lease` microseconds; when there are none, wait up to `wait` seconds for the
        queue's watchers to wake."""
        if wait <= 0 or self._draining:
            return await self._store.dequeue(namespace, queue, limit=limit, lease=lease)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self._store.watch(namespace, queue) as arrived:
            self._waiting.add(arrived)
            try:
                while True:
                    arrived.clear()  # before looking, so an enqueue during the look is not missed
                    jobs = await self._store.dequeue(namespace, queue, limit=limit, lease=lease)
                    remaining = deadline - loop.time()
                    if jobs or remaining <= 0 or self._draining:
                        return jobs
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(remaining, self._recheck_interval)):
                            await arrived.wait()
            finally:
                self._waiting.discard(arrived)

    async def drain(self) -> None:
        """End every waiting Dequeue now, as if its wait had run out, and wait in no later one.

        The daemon is shutting down: a long poll would hold up its exit for the whole grace period. Each
        waiter looks for jobs once more and answers with what it found, usually nothing; its worker asks
        again and reaches another daemon, or is told UNAVAILABLE.
        """
        self._draining = True
        for arrived in self._waiting:
            arrived.set()  # a spurious wake-up for the queue's watch: its waiter looks, then sees the drain

    async def Acknowledge(self, request: pb.AcknowledgeRequest, context: Context) -> pb.AcknowledgeResponse:
        await self._store.acknowledge(calls.namespace(), _leases(request.leases, "leases"))
        return pb.AcknowledgeResponse()

    async def Fail(self, request: pb.FailRequest, context: Context) -> pb.FailResponse:
        if not request.HasField("lease"):
            raise InvalidArgument("lease", "must be set")
        lease = _lease(request.lease, "lease")
        check.text(request.error, "error", MAX_ERROR_BYTES)
        retry = request.retry if request.HasField("retry") else True
        job = await self._store.fail(calls.namespace(), lease, error=request.error, retry=retry)
        return pb.FailResponse(job=job_message(job))

    async def ExtendLease(self, request: pb.ExtendLeaseRequest, context: Context) -> pb.ExtendLeaseResponse:
        leases = _leases(request.leases, "leases")
        lease = _duration(
            request.lease_duration,
            request.HasField("lease_duration"),
            "lease_duration",
            default=DEFAULT_LEASE,
            maximum=MAX_LEASE,
        )
        expires_at = await self._store.extend_leases(calls.namespace(), leases, round(lease * MICROS))
        return pb.ExtendLeaseResponse(lease_expire_time=check.timestamp_from_microseconds(expires_at))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        job = await self._store.get(calls.namespace(), check.identifier(request.job_id, "job_id"))
        if job is None:
            return pb.GetJobResponse()
        return pb.GetJobResponse(found=True, job=job_message(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        queue = fields.name(request.queue, "queue")
        statuses = _statuses(request.statuses)
        limit = check.page_size(request.page_size)
        position = self._tokens.resume(request, calls.namespace(), int)
        after = None if position is None else int(position[0])
        # One extra job tells whether another page follows.
        jobs = await self._store.find(calls.namespace(), JobQuery(queue, statuses, after, limit + 1))
        token = ""
        if len(jobs) > limit:
            jobs = jobs[:limit]
            token = self._tokens.issue(request, calls.namespace(), jobs[-1].sequence)
        return pb.ListJobsResponse(jobs=[job_message(job) for job in jobs], next_page_token=token)

    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: Context
    ) -> pb.GetQueueStatsResponse:
        stats = await self._store.stats(calls.namespace(), fields.name(request.queue, "queue"))
        return pb.GetQueueStatsResponse(
            pending=stats.pending,
            running=stats.running,
            retrying=stats.retrying,
            completed=stats.completed,
            failed=stats.failed,
        )
