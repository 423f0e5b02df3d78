"""Stateful fuzzing of the job queue: boundary run times, delays, priorities; read back, listed, leased."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stord.v1 import jobs_pb2 as pb
from stord.v1 import jobs_pb2_grpc
from tests.conftest import DATABASE_BACKENDS, Daemons
from tests.fuzz._edges import (
    FUZZ_SETTINGS,
    Caller,
    durations,
    int32s,
    mutated_token,
    structs,
    texts,
    timestamps,
)

QUEUES = st.sampled_from(["q", "q-2"])


class JobMachine(RuleBasedStateMachine):
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.call = Caller(self.target)
        self.stub = jobs_pb2_grpc.JobQueueServiceStub(self.call.channel)
        self.jobs: dict[str, str] = {}  # id -> queue

    def teardown(self) -> None:
        self.call.close()

    @rule(
        queue=QUEUES,
        payload=structs(),
        run_at=st.one_of(st.none(), timestamps()),
        delay=st.one_of(st.none(), durations()),
        priority=int32s(),
        attempts=int32s(),
        dedupe=st.one_of(st.just(""), texts(256)),
    )
    def enqueue(
        self, queue: str, payload: Any, run_at: Any, delay: Any, priority: int, attempts: int, dedupe: str
    ) -> None:
        job = pb.NewJob(
            queue=queue,
            payload=payload,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_attempts=attempts,
            dedupe_key=dedupe,
        )
        answer = self.call(self.stub.Enqueue, pb.EnqueueRequest(jobs=[job]))
        if isinstance(answer, pb.EnqueueResponse):
            for enqueued in answer.jobs:
                self.jobs[enqueued.job_id] = queue

    @rule(queue=QUEUES, lease=durations(), error=texts(4096), retry=st.booleans())
    def dequeue_and_settle(self, queue: str, lease: Any, error: str, retry: bool) -> None:
        answer = self.call(
            self.stub.Dequeue, pb.DequeueRequest(queue=queue, max_jobs=2, lease_duration=lease)
        )
        if not isinstance(answer, pb.DequeueResponse):
            return
        for job in answer.jobs:
            job_lease = pb.JobLease(job_id=job.id, lease_token=job.lease_token)
            self.call(self.stub.ExtendLease, pb.ExtendLeaseRequest(leases=[job_lease], lease_duration=lease))
            self.call(self.stub.Fail, pb.FailRequest(lease=job_lease, error=error, retry=retry))

    @invariant()
    def every_job_reads_back(self) -> None:
        for job_id, queue in self.jobs.items():
            got = self.call(self.stub.GetJob, pb.GetJobRequest(job_id=job_id))
            assert isinstance(got, pb.GetJobResponse)
            assert got.found
            assert got.job.queue == queue

    @rule(queue=QUEUES, page_size=st.integers(1, 3), data=st.data())
    def list_pages(self, queue: str, page_size: int, data: st.DataObject) -> None:
        self.call(self.stub.GetQueueStats, pb.GetQueueStatsRequest(queue=queue))
        request = pb.ListJobsRequest(queue=queue, page_size=page_size)
        seen: list[str] = []
        for _ in range(100):
            answer = self.call(self.stub.ListJobs, request)
            assert isinstance(answer, pb.ListJobsResponse)
            seen += [job.id for job in answer.jobs]
            if not answer.next_page_token:
                break
            token = answer.next_page_token
            self.call.refused_token(self.stub.ListJobs, request, mutated_token(token, data), token)
            request.page_token = token
        assert sorted(seen) == sorted(job_id for job_id, owner in self.jobs.items() if owner == queue)


@pytest.mark.parametrize("backend", DATABASE_BACKENDS)
def test_job_queue_fuzz(backend: str, daemons: Daemons) -> None:
    JobMachine.target = daemons.get(backend).target
    run_state_machine_as_test(JobMachine, settings=FUZZ_SETTINGS)
