"""The job queue contract (DESIGN 4.3) through the real gRPC API and client, on memory, SQLite, PostgreSQL.

Time (run_at, backoff, lease expiry) moves with the daemon's injected clock, never with sleeps. The last tests
run workers: 8 of them over 5,000 jobs complete each job exactly once, and a worker that stops heartbeating
has its job handed to another once the lease has run out.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import os
import threading
import time
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import (
    Client,
    EnqueueJob,
    FailedPrecondition,
    InvalidArgument,
    Job,
    JobStatus,
    QueueStats,
    Unimplemented,
    Worker,
)
from stord.server.config import Settings
from stord.v1 import jobs_pb2, jobs_pb2_grpc
from tests.conftest import NO_RECHECK, SharedDaemon
from tests.harness.clock import ManualClock
from tests.harness.daemon import DaemonThread
from tests.harness.postgres import PostgresServer

SETTLE = 0.2
"""Seconds for a long poll started in a thread to make its first look and wait. Should it look later, it
finds the job at once and the test still holds; the daemons under test never recheck before a wait ends
(`NO_RECHECK`), so an answer well before the 10 s wait is over can only be a wake-up."""


def payloads(jobs: list[Job]) -> list[Any]:
    return [job.payload.get("n") for job in jobs]


def daemon_time(served: SharedDaemon, offset: float = 0.0) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(served.clock() + offset, datetime.UTC)


def from_now(served: SharedDaemon, moment: datetime.datetime | None) -> float:
    """Seconds from the daemon's now to `moment` (backends keep microseconds, so compare approximately)."""
    assert moment is not None
    return (moment - daemon_time(served)).total_seconds()


# Enqueue, dequeue, acknowledge -----------------------------------------------------------------------------


def test_a_job_goes_from_pending_to_running_to_completed(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    job_id = jobs.enqueue("mail", {"to": "ada", "n": 1}, max_attempts=5)
    pending = jobs.get(job_id)
    assert pending is not None
    assert (pending.status, pending.attempts, pending.max_attempts) == (JobStatus.PENDING, 0, 5)
    assert pending.lease_token is None
    assert pending.lease_expire_time is None
    assert jobs.stats("mail") == QueueStats(pending=1, running=0, retrying=0, completed=0, failed=0)

    (leased,) = jobs.dequeue("mail", lease=60)
    assert (leased.id, leased.status, leased.attempts, leased.payload) == (
        job_id,
        JobStatus.RUNNING,
        1,
        {"to": "ada", "n": 1},
    )
    assert leased.lease_token
    assert from_now(database_served, leased.lease_expire_time) == pytest.approx(60, abs=1e-3)
    running = jobs.get(job_id)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    assert running.lease_token is None  # only the dequeuer learns the token
    assert jobs.dequeue("mail") == []

    jobs.acknowledge([leased])
    completed = jobs.get(job_id)
    assert completed is not None
    assert (completed.status, completed.lease_expire_time) == (JobStatus.COMPLETED, None)
    assert jobs.stats("mail") == QueueStats(pending=0, running=0, retrying=0, completed=1, failed=0)
    with pytest.raises(FailedPrecondition):
        jobs.acknowledge([leased])  # twice


def test_due_jobs_come_by_priority_then_run_at_then_enqueue_order(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue_many(
        [
            EnqueueJob("q", {"n": "low"}, priority=-1),
            EnqueueJob("q", {"n": "first"}),
            EnqueueJob("q", {"n": "second"}),
            EnqueueJob("q", {"n": "early"}, run_at=daemon_time(database_served, -10)),
            EnqueueJob("q", {"n": "urgent"}, priority=5),
        ]
    )
    assert payloads(jobs.dequeue("q", max_jobs=2)) == ["urgent", "early"]
    assert payloads(jobs.dequeue("q", max_jobs=10)) == ["first", "second", "low"]


def test_a_job_is_not_handed_out_before_its_run_at(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue("later", {"n": "delayed"}, delay=30)
    jobs.enqueue("later", {"n": "scheduled"}, run_at=daemon_time(database_served, 60))
    assert jobs.dequeue("later") == []
    database_served.clock.advance(30)
    delayed = jobs.dequeue("later")
    assert payloads(delayed) == ["delayed"]
    jobs.acknowledge(delayed)
    database_served.clock.advance(29)
    assert jobs.dequeue("later") == []
    database_served.clock.advance(1.5)
    assert payloads(jobs.dequeue("later")) == ["scheduled"]


def test_batches_enqueue_dequeue_and_acknowledge_many(database_client: Client) -> None:
    jobs = database_client.jobs
    enqueued = jobs.enqueue_many([EnqueueJob("bulk", {"n": index}) for index in range(250)])
    assert len({job.job_id for job in enqueued}) == 250
    first = jobs.dequeue("bulk", max_jobs=200)
    second = jobs.dequeue("bulk", max_jobs=200)
    assert payloads(first + second) == list(range(250))
    jobs.acknowledge(first + second)
    assert jobs.stats("bulk").completed == 250


def test_a_batch_acknowledge_with_a_stale_lease_completes_nothing(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue_many([EnqueueJob("q", {"n": index}) for index in range(3)])
    stale = jobs.dequeue("q", lease=10)[0]
    database_served.clock.advance(11)
    fresh = jobs.dequeue("q", max_jobs=3, lease=60)
    assert sorted(payloads(fresh)) == [0, 1, 2]
    with pytest.raises(FailedPrecondition, match=stale.id):
        jobs.acknowledge([*fresh, stale])
    assert jobs.stats("q").running == 3
    jobs.acknowledge(fresh)
    assert jobs.stats("q").completed == 3


# Failures, retries, leases ---------------------------------------------------------------------------------


def test_fail_retries_with_exponential_backoff_then_fails(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    job_id = jobs.enqueue("flaky", {"n": 1}, max_attempts=3)
    for attempt, backoff in [(1, 2.0), (2, 4.0)]:
        (job,) = jobs.dequeue("flaky")
        assert job.attempts == attempt
        retrying = jobs.fail(job, f"boom {attempt}")
        assert retrying.status is JobStatus.RETRYING
        assert retrying.last_error == f"boom {attempt}"
        assert from_now(database_served, retrying.run_at) == pytest.approx(backoff, abs=1e-3)
        database_served.clock.advance(backoff - 0.5)
        assert jobs.dequeue("flaky") == []
        database_served.clock.advance(0.5)
    (last,) = jobs.dequeue("flaky")
    assert last.attempts == 3
    failed = jobs.fail(last, "boom 3")
    assert (failed.status, failed.attempts, failed.last_error) == (JobStatus.FAILED, 3, "boom 3")
    database_served.clock.advance(3600)
    assert jobs.dequeue("flaky") == []
    assert jobs.stats("flaky").failed == 1
    assert [job.id for job in jobs.find("flaky", statuses=[JobStatus.FAILED])] == [job_id]


def test_backoff_is_capped_at_a_minute(database_served: SharedDaemon, database_client: Client) -> None:
    jobs = database_client.jobs
    jobs.enqueue("slow", max_attempts=10)
    for _ in range(7):
        (job,) = jobs.dequeue("slow")
        retrying = jobs.fail(job, "again")
        delay = from_now(database_served, retrying.run_at)
        assert delay == pytest.approx(min(2**job.attempts, 60), abs=0.01)
        database_served.clock.advance(delay + 0.001)
    assert delay == pytest.approx(60, abs=0.01)


def test_fail_without_retry_fails_at_once(database_client: Client) -> None:
    jobs = database_client.jobs
    jobs.enqueue("q", max_attempts=5)
    (job,) = jobs.dequeue("q")
    failed = jobs.fail(job, "fatal", retry=False)
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)


def test_an_expired_lease_hands_the_job_out_again_and_the_old_holder_is_stale(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    job_id = jobs.enqueue("q", {"n": 1})
    (first,) = jobs.dequeue("q", lease=10)
    database_served.clock.advance(9)
    assert jobs.dequeue("q") == []  # still held
    database_served.clock.advance(1.5)
    (second,) = jobs.dequeue("q", lease=10)
    assert (second.id, second.attempts) == (job_id, 2)
    assert second.lease_token != first.lease_token
    for stale_call in (
        lambda: jobs.acknowledge([first]),
        lambda: jobs.fail(first, "late"),
        lambda: jobs.extend_lease([first]),
    ):
        with pytest.raises(FailedPrecondition):
            stale_call()
    jobs.acknowledge([second])
    assert jobs.get(job_id).status is JobStatus.COMPLETED  # type: ignore[union-attr]


def test_a_lease_that_ran_out_is_not_held_even_before_redelivery(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue("q")
    (job,) = jobs.dequeue("q", lease=5)
    database_served.clock.advance(5)
    with pytest.raises(FailedPrecondition):
        jobs.acknowledge([job])


def test_extend_lease_is_a_heartbeat(database_served: SharedDaemon, database_client: Client) -> None:
    jobs = database_client.jobs
    jobs.enqueue_many([EnqueueJob("q", {"n": index}) for index in range(2)])
    held = jobs.dequeue("q", max_jobs=2, lease=10)
    for _ in range(3):
        database_served.clock.advance(8)
        expires = jobs.extend_lease(held, lease=10)
        assert from_now(database_served, expires) == pytest.approx(10, abs=1e-3)
        assert jobs.dequeue("q") == []
    jobs.acknowledge(held)


def test_the_last_attempt_losing_its_lease_fails_the_job(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    job_id = jobs.enqueue("q", max_attempts=1)
    jobs.dequeue("q", lease=10)
    database_served.clock.advance(11)
    assert jobs.dequeue("q") == []
    failed = jobs.get(job_id)
    assert failed is not None
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)
    assert failed.last_error == "the lease of its last attempt ran out"


# Dedupe, listing, long polls -------------------------------------------------------------------------------


def test_a_dedupe_key_returns_the_unfinished_job(database_client: Client) -> None:
    jobs = database_client.jobs
    first = jobs.enqueue("q", {"n": 1}, dedupe_key="report-7")
    batch = jobs.enqueue_many(
        [
            EnqueueJob("q", {"n": 2}, dedupe_key="report-7"),
            EnqueueJob("other", {"n": 3}, dedupe_key="report-7"),
        ]
    )
    assert (batch[0].job_id, batch[0].deduplicated) == (first, True)
    assert batch[1].job_id != first  # keys are per queue
    assert not batch[1].deduplicated
    (running,) = jobs.dequeue("q")
    assert jobs.enqueue("q", {"n": 4}, dedupe_key="report-7") == first  # running still holds the key
    jobs.acknowledge([running])
    second = jobs.enqueue("q", {"n": 5}, dedupe_key="report-7")
    assert second != first
    within = jobs.enqueue_many([EnqueueJob("fresh", dedupe_key="k"), EnqueueJob("fresh", dedupe_key="k")])
    assert within[1].job_id == within[0].job_id
    assert within[1].deduplicated
    assert jobs.stats("fresh").pending == 1


def test_find_lists_in_enqueue_order_by_status_and_page(database_client: Client) -> None:
    jobs = database_client.jobs
    ids = [job.job_id for job in jobs.enqueue_many([EnqueueJob("q", {"n": index}) for index in range(7)])]
    taken = jobs.dequeue("q", max_jobs=2)
    assert [job.id for job in jobs.find("q", page_size=3)] == ids
    assert [job.id for job in jobs.find("q", statuses=[JobStatus.RUNNING])] == [job.id for job in taken]
    assert [job.id for job in jobs.find("q", statuses=["pending", "running"], page_size=2)] == ids
    assert list(jobs.find("q", statuses=[JobStatus.COMPLETED])) == []
    assert list(jobs.find("empty")) == []


def test_a_long_poll_returns_when_a_job_arrives(database_client: Client) -> None:
    started = time.monotonic()
    assert database_client.jobs.dequeue("idle", wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2

    received: list[Job] = []
    waiting = threading.Thread(target=lambda: received.extend(database_client.jobs.dequeue("poll", wait=10)))
    waiting.start()
    time.sleep(SETTLE)
    enqueued_at = time.monotonic()
    database_client.jobs.enqueue("poll", {"n": "woken"})
    waiting.join(timeout=10)
    assert payloads(received) == ["woken"]
    assert time.monotonic() - enqueued_at < 5  # woken: the daemon does not recheck before the wait's end


def test_a_long_poll_is_woken_by_a_transaction_that_enqueues(database_client: Client) -> None:
    received: list[Job] = []
    waiting = threading.Thread(target=lambda: received.extend(database_client.jobs.dequeue("tx", wait=10)))
    waiting.start()
    time.sleep(SETTLE)
    enqueued_at = time.monotonic()
    database_client.documents.transact([EnqueueJob("tx", {"n": "from a transaction"})])
    waiting.join(timeout=10)
    assert payloads(received) == ["from a transaction"]
    assert time.monotonic() - enqueued_at < 5


# Bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.jobs.enqueue("bad queue"), "jobs[0].queue"),
        (lambda c: c.jobs.enqueue("q", {"x": math.nan}), "jobs[0].payload.x"),
        (lambda c: c.jobs.enqueue("q", max_attempts=-1), "jobs[0].max_attempts"),
        (lambda c: c.jobs.enqueue("q", max_attempts=1001), "jobs[0].max_attempts"),
        (lambda c: c.jobs.enqueue("q", delay=-1), "jobs[0].delay"),
        (lambda c: c.jobs.enqueue("q", delay=1, run_at=datetime.datetime.now(datetime.UTC)), "jobs[0].delay"),
        (lambda c: c.jobs.enqueue("q", dedupe_key="k" * 257), "jobs[0].dedupe_key"),
        (
            lambda c: c.jobs.enqueue_many([EnqueueJob("q"), EnqueueJob("q", {"s": "\x00"})]),
            "jobs[1].payload_json.s",  # the client sends payloads as JSON text
        ),
        (lambda c: c.jobs.enqueue_many([]), "jobs"),
        (lambda c: c.jobs.dequeue("q", max_jobs=1001), "max_jobs"),
        (lambda c: c.jobs.dequeue("q", max_jobs=-1), "max_jobs"),
        (lambda c: c.jobs.dequeue("q", lease=-5), "lease_duration"),
        (lambda c: c.jobs.dequeue("q", lease=2 * 86400), "lease_duration"),
        (lambda c: c.jobs.dequeue("q", wait=61), "wait"),
        (lambda c: c.jobs.get(""), "job_id"),
        (lambda c: c.jobs.stats(""), "queue"),
        (lambda c: c.jobs.acknowledge([]), "leases"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    database_client: Client, call: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as failure:
        call(database_client)
    assert failure.value.message.startswith(f"{field}:"), failure.value.message
    assert database_client.jobs.stats("q") == QueueStats(0, 0, 0, 0, 0)


def test_bad_leases_and_statuses_are_invalid(database_client: Client) -> None:
    stub = jobs_pb2_grpc.JobQueueServiceStub(database_client._channel)
    metadata = database_client._call.metadata
    requests: list[tuple[Any, Any, str]] = [
        (
            stub.Acknowledge,
            jobs_pb2.AcknowledgeRequest(leases=[jobs_pb2.JobLease(job_id="j")]),
            "leases[0].lease_token",
        ),
        (stub.Fail, jobs_pb2.FailRequest(error="e"), "lease"),
        (
            stub.ListJobs,
            jobs_pb2.ListJobsRequest(queue="q", statuses=[jobs_pb2.JOB_STATUS_UNSPECIFIED]),
            "statuses[0]",
        ),
        (stub.ListJobs, jobs_pb2.ListJobsRequest(queue="q", page_token="not-a-token"), "page_token"),
    ]
    for method, request, field in requests:
        with pytest.raises(grpc.RpcError) as failure:
            method(request, metadata=metadata)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (failure.value.details() or "").startswith(f"{field}:")


def test_an_unknown_lease_is_failed_precondition(database_client: Client) -> None:
    jobs = database_client.jobs
    jobs.enqueue("q")
    (job,) = jobs.dequeue("q")
    forged = Job(**{**vars(job), "lease_token": "forged"})
    with pytest.raises(FailedPrecondition):
        jobs.acknowledge([forged])
    with pytest.raises(FailedPrecondition):
        jobs.fail(Job(**{**vars(job), "id": "no-such-job"}), "x")


def test_redis_does_not_serve_jobs(redis_served: SharedDaemon) -> None:
    with redis_served.client() as client, pytest.raises(Unimplemented, match=r"stord\.v1\.JobQueueService"):
        client.jobs.enqueue("q")


# Instants at the edges of a Timestamp ----------------------------------------------------------------------

LAST_INSTANT = Timestamp(seconds=253_402_300_799, nanos=999_999_999)  # 9999-12-31T23:59:59.999999999Z
FIRST_INSTANT = Timestamp(seconds=-62_135_596_800, nanos=0)  # 0001-01-01T00:00:00Z
LONGEST_DELAY = Duration(seconds=315_576_000_000, nanos=999_999_999)  # the largest Duration


def assert_refused(call: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        call()
    assert refused.value.message.startswith(f"{field}:"), refused.value.message


def job_stub(client: Client) -> tuple[jobs_pb2_grpc.JobQueueServiceStub, Any]:
    return jobs_pb2_grpc.JobQueueServiceStub(client._channel), client._call.metadata


def test_jobs_at_the_first_and_last_instant_read_back_through_get_and_list(database_client: Client) -> None:
    stub, metadata = job_stub(database_client)
    enqueued = stub.Enqueue(
        jobs_pb2.EnqueueRequest(
            jobs=[
                jobs_pb2.NewJob(queue="edge", run_at=LAST_INSTANT),
                jobs_pb2.NewJob(queue="edge", run_at=FIRST_INSTANT),
            ]
        ),
        metadata=metadata,
    )
    last_id, first_id = (job.job_id for job in enqueued.jobs)
    kept = Timestamp(seconds=LAST_INSTANT.seconds, nanos=999_999_000)  # jobs keep microseconds
    for job_id, run_at in ((last_id, kept), (first_id, FIRST_INSTANT)):
        got = stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), metadata=metadata)
        assert (got.found, got.job.run_at) == (True, run_at)
    listed = stub.ListJobs(jobs_pb2.ListJobsRequest(queue="edge"), metadata=metadata)
    assert [(job.id, job.run_at) for job in listed.jobs] == [(last_id, kept), (first_id, FIRST_INSTANT)]
    assert [job.id for job in database_client.jobs.find("edge")] == [last_id, first_id]

    (due,) = database_client.jobs.dequeue("edge", max_jobs=5)  # year 1 is due; year 9999 is not
    assert due.id == first_id
    database_client.jobs.fail(due, "again")  # a retry's run_at comes from now, not from year 1
    retrying = database_client.jobs.get(first_id)
    assert retrying is not None
    assert retrying.status is JobStatus.RETRYING


def test_an_instant_past_the_last_timestamp_is_refused_and_nothing_is_enqueued(
    database_client: Client,
) -> None:
    stub, metadata = job_stub(database_client)
    requests = [
        ([jobs_pb2.NewJob(queue="q"), jobs_pb2.NewJob(queue="q", delay=LONGEST_DELAY)], "jobs[1].delay"),
        ([jobs_pb2.NewJob(queue="q", run_at=Timestamp(seconds=253_402_300_800))], "jobs[0].run_at"),
        ([jobs_pb2.NewJob(queue="q", run_at=Timestamp(seconds=-62_135_596_801))], "jobs[0].run_at"),
        ([jobs_pb2.NewJob(queue="q", run_at=Timestamp(seconds=0, nanos=-1))], "jobs[0].run_at"),
    ]
    for jobs, field in requests:
        with pytest.raises(grpc.RpcError) as failure:
            stub.Enqueue(jobs_pb2.EnqueueRequest(jobs=jobs), metadata=metadata)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (failure.value.details() or "").startswith(f"{field}:"), failure.value.details()
    with pytest.raises(InvalidArgument) as refused:
        database_client.documents.transact(
            [EnqueueJob("q", {"n": 1}), EnqueueJob("q", {"n": 2}, delay=LONGEST_DELAY.seconds)]
        )
    assert refused.value.message.startswith("operations[1].enqueue.delay:"), refused.value.message
    assert database_client.jobs.stats("q") == QueueStats(0, 0, 0, 0, 0)


def test_a_lease_or_retry_ending_past_the_last_instant_is_refused(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue_many([EnqueueJob("q", {"n": n}) for n in range(2)])
    (held,) = jobs.dequeue("q", lease=60)
    # The daemon's clock 1.5 s before the last instant, and back whatever happens.
    jump = 253_402_300_800.0 - 1.5 - database_served.clock()
    database_served.clock.advance(jump)
    try:
        assert_refused(lambda: jobs.dequeue("q", lease=60), "lease_duration")
        assert jobs.stats("q").pending == 1  # nothing leased
        assert_refused(lambda: jobs.extend_lease([held], lease=60), "lease_duration")
        (last,) = jobs.dequeue("q", lease=1)  # ends 0.5 s before the last instant
        assert_refused(lambda: jobs.fail(last, "boom"), "retry")  # its retry would be due 2 s later
        assert jobs.get(last.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        jobs.fail(last, "boom", retry=False)
    finally:
        database_served.clock.advance(-jump)


# Payloads as JSON text ------------------------------------------------------------------------------------


def test_payloads_travel_as_json_text_both_ways(database_client: Client) -> None:
    stub, metadata = job_stub(database_client)
    text = '{"n":1152921504606846976,"nested":{"list":[1,2.5,"x",null,true]},"name":"\u00e9t\u00e9"}'
    (enqueued,) = stub.Enqueue(
        jobs_pb2.EnqueueRequest(jobs=[jobs_pb2.NewJob(queue="json", payload_json=text)]), metadata=metadata
    ).jobs
    (leased,) = stub.Dequeue(
        jobs_pb2.DequeueRequest(queue="json", json_payloads=True), metadata=metadata
    ).jobs
    assert leased.id == enqueued.job_id
    assert not leased.HasField("payload")
    assert json.loads(leased.payload_json) == json.loads(text)  # 2^60 exactly, not as a double
    got = stub.GetJob(jobs_pb2.GetJobRequest(job_id=enqueued.job_id), metadata=metadata).job
    assert got.payload_json == ""
    assert MessageToDict(got.payload) == json.loads(text) | {"n": float(2**60)}  # a Struct holds doubles

    database_client.jobs.enqueue("json", {"kept": [1, {"a": None}]})  # the client's own JSON path
    (job,) = database_client.jobs.dequeue("json")
    assert job.payload == {"kept": [1, {"a": None}]}


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (jobs_pb2.NewJob(queue="q", payload_json="[1]"), "jobs[0].payload_json"),
        (jobs_pb2.NewJob(queue="q", payload_json='{"a":'), "jobs[0].payload_json"),
        (jobs_pb2.NewJob(queue="q", payload_json='{"a":NaN}'), "jobs[0].payload_json"),
        (jobs_pb2.NewJob(queue="q", payload_json='{"a":["\\u0000"]}'), "jobs[0].payload_json.a[0]"),
        (jobs_pb2.NewJob(queue="q", payload_json='{"\\u0000":1}'), "jobs[0].payload_json key"),
        (jobs_pb2.NewJob(queue="q", payload_json='{"a":1' + ("0" * 400) + "}"), "jobs[0].payload_json"),
        (
            jobs_pb2.NewJob(queue="q", payload_json="{}", payload=Struct()),
            "jobs[0].payload_json",
        ),
    ],
)
def test_bad_json_payloads_are_invalid_argument(database_client: Client, job: Any, field: str) -> None:
    stub, metadata = job_stub(database_client)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Enqueue(jobs_pb2.EnqueueRequest(jobs=[job]), metadata=metadata)
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (failure.value.details() or "").startswith(f"{field}:"), failure.value.details()
    assert database_client.jobs.stats("q") == QueueStats(0, 0, 0, 0, 0)


# Lapsed leases and retention, by the daemon's sweepers ---------------------------------------------------


def test_the_sweeper_settles_lapsed_leases_without_a_dequeue(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    last_try = jobs.enqueue("lapse", {"n": "last"}, max_attempts=1)
    more_tries = jobs.enqueue("lapse", {"n": "more"}, max_attempts=3)
    live = jobs.enqueue("lapse-live", {"n": "live"})
    jobs.dequeue("lapse", max_jobs=2, lease=10)
    (held,) = jobs.dequeue("lapse-live", lease=60)
    database_served.clock.advance(11)

    swept = database_served.thread.run(database_served.thread.daemon.settle_lapsed_leases())
    # Other tests' namespaces may hold lapsed jobs too.
    assert swept.failed >= 1
    assert swept.retried >= 1
    failed = jobs.get(last_try)
    assert failed is not None
    assert (failed.status, failed.attempts, failed.last_error) == (
        JobStatus.FAILED,
        1,
        "the lease of its last attempt ran out",
    )
    retrying = jobs.get(more_tries)
    assert retrying is not None
    assert (retrying.status, retrying.attempts, retrying.lease_expire_time) == (JobStatus.RETRYING, 1, None)
    assert jobs.get(live).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert jobs.stats("lapse") == QueueStats(pending=0, running=0, retrying=1, completed=0, failed=1)

    (again,) = jobs.dequeue("lapse")  # due at once
    assert (again.id, again.attempts) == (more_tries, 2)
    jobs.acknowledge([again, held])


def test_retention_deletes_old_finished_jobs_and_never_an_unfinished_one(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    daemon = database_served.thread.daemon
    day = 86_400.0
    pending = jobs.enqueue("waiting", {"n": "pending"})
    jobs.enqueue_many([EnqueueJob("done", {"n": n}) for n in ("completed", "failed", "running", "retrying")])
    completed, failed, running, retrying = jobs.dequeue("done", max_jobs=4, lease=3600)
    jobs.acknowledge([completed])
    jobs.fail(failed, "fatal", retry=False)
    jobs.fail(retrying, "flaky")
    database_served.clock.advance(8 * day)  # past the 7 days of completed jobs, within the 30 of failed ones
    recent = jobs.enqueue("recent", {"n": "recent"})
    jobs.acknowledge(jobs.dequeue("recent"))

    purge = database_served.thread.run(daemon.purge_finished_jobs())
    assert purge.completed >= 1  # other tests' namespaces may hold old jobs too
    assert jobs.get(completed.id) is None
    for kept in (failed.id, recent, running.id, retrying.id, pending):
        assert jobs.get(kept) is not None, kept

    database_served.clock.advance(31 * day)
    purge = database_served.thread.run(daemon.purge_finished_jobs())
    assert purge.failed >= 1
    assert jobs.get(failed.id) is None
    assert jobs.get(recent) is None
    # 39 days old, and still there: pending, running (its lease ran out; no dequeue or sweep settled it) and
    # retrying jobs are never deleted.
    left = [jobs.get(job_id) for job_id in (pending, running.id, retrying.id)]
    statuses = {job.id: job.status for job in left if job is not None}
    assert statuses == {
        pending: JobStatus.PENDING,
        running.id: JobStatus.RUNNING,
        retrying.id: JobStatus.RETRYING,
    }


# Workers ---------------------------------------------------------------------------------------------------

WORKERS = 8
JOBS = 5000


def test_eight_workers_complete_five_thousand_jobs_exactly_once(database_served: SharedDaemon) -> None:
    namespace = f"workers-{time.monotonic_ns()}"
    with database_served.client(namespace) as producer:
        for start in range(0, JOBS, 1000):
            producer.jobs.enqueue_many([EnqueueJob("work", {"n": n}) for n in range(start, start + 1000)])
    handled: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def handle(job: Job) -> None:
        with lock:
            handled[job.payload["n"]] += 1
            if len(handled) == JOBS:
                stop.set()

    clients = [database_served.client(namespace) for _ in range(WORKERS)]
    threads = [
        threading.Thread(
            target=Worker(client.jobs, "work", handle, batch_size=100, wait=0.2).run, args=(stop,)
        )
        for client in clients
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    assert stop.wait(60), f"only {len(handled)} of {JOBS} jobs handled"
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    with database_served.client(namespace) as checker:
        stats = checker.jobs.stats("work")
    for client in clients:
        client.close()
    assert set(handled) == set(range(JOBS))
    assert set(handled.values()) == {1}, "a job was handled twice"
    assert stats == QueueStats(pending=0, running=0, retrying=0, completed=JOBS, failed=0)
    assert elapsed < 30


def test_a_worker_that_stops_heartbeating_loses_its_job_to_another(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    job_id = jobs.enqueue("work", {"n": 1})
    (held,) = jobs.dequeue("work", lease=10)  # the first worker takes the job
    database_served.clock.advance(8)
    jobs.extend_lease([held], lease=10)  # and heartbeats once
    database_served.clock.advance(8)
    assert jobs.dequeue("work") == []  # the heartbeat kept the lease

    # The first worker dies: no more heartbeats. After the lease ends, a second worker gets the job.
    handled: list[Job] = []
    second = Worker(jobs, "work", handled.append, lease=10, wait=0)
    assert second.run_once() == 0
    database_served.clock.advance(2.5)
    assert second.run_once() == 1
    assert [(job.id, job.attempts) for job in handled] == [(job_id, 2)]
    with pytest.raises(FailedPrecondition):
        jobs.acknowledge([held])  # the first worker, back from the dead, is stale
    completed = jobs.get(job_id)
    assert completed is not None
    assert (completed.status, completed.attempts) == (JobStatus.COMPLETED, 2)


def test_a_worker_fails_jobs_whose_handler_raises(
    database_served: SharedDaemon, database_client: Client
) -> None:
    jobs = database_client.jobs
    jobs.enqueue_many([EnqueueJob("work", {"n": n}, max_attempts=1) for n in range(4)])

    def handle(job: Job) -> None:
        if job.payload["n"] % 2:
            raise ValueError(f"odd {job.payload['n']}")

    assert Worker(jobs, "work", handle, batch_size=10, wait=0).run_once() == 4
    failed = list(jobs.find("work", statuses=[JobStatus.FAILED]))
    assert sorted((job.payload["n"], job.last_error) for job in failed) == [
        (1, "ValueError: odd 1"),
        (3, "ValueError: odd 3"),
    ]
    assert jobs.stats("work").completed == 2


def test_two_postgres_daemons_share_queues_and_wake_each_other(postgres_server: PostgresServer) -> None:
    clock = ManualClock()
    url = postgres_server.create_database(f"jobs_two_daemons_{os.getpid()}_{time.monotonic_ns()}")
    settings = Settings(
        listen="127.0.0.1:0",
        database=url,
        cache="memory://",
        log_level="warning",
        long_poll_recheck_interval=NO_RECHECK,
    )
    daemons = [DaemonThread(settings, clock=clock).start() for _ in range(2)]
    try:
        with Client(daemons[0].target) as first, Client(daemons[1].target) as second:
            # A long poll on one daemon is woken by LISTEN/NOTIFY when a job is enqueued through the other.
            received: list[Job] = []
            waiting = threading.Thread(target=lambda: received.extend(first.jobs.dequeue("poll", wait=10)))
            waiting.start()
            time.sleep(SETTLE)
            enqueued_at = time.monotonic()
            second.jobs.enqueue("poll", {"n": "across daemons"})
            waiting.join(timeout=10)
            assert payloads(received) == ["across daemons"]
            assert time.monotonic() - enqueued_at < 5

            # Workers on both daemons: every job is handled exactly once.
            first.jobs.enqueue_many([EnqueueJob("shared", {"n": n}) for n in range(1000)])
            handled: collections.Counter[int] = collections.Counter()
            lock = threading.Lock()
            stop = threading.Event()

            def handle(job: Job) -> None:
                with lock:
                    handled[job.payload["n"]] += 1
                    if len(handled) == 1000:
                        stop.set()

            workers = [
                threading.Thread(
                    target=Worker(client.jobs, "shared", handle, batch_size=25, wait=0.2).run, args=(stop,)
                )
                for client in (first, second, first, second)
            ]
            for worker in workers:
                worker.start()
            assert stop.wait(60)
            for worker in workers:
                worker.join(timeout=30)
            assert set(handled.values()) == {1}
            assert first.jobs.stats("shared").completed == 1000
    finally:
        for daemon in daemons:
            daemon.stop()
