"""The job queue servicer's drain below the gRPC API, for what a process cannot show: a Dequeue arriving once
the drain began does not wait. (tests/process/test_shutdown.py: a waiting Dequeue is answered on SIGTERM.)"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from google.protobuf.duration_pb2 import Duration

from stord.server.backends.memory import MemoryBackend
from stord.server.jobs.service import JobQueueServicer
from stord.server.rpc import calls
from stord.server.rpc.page_tokens import PageTokens, new_key
from stord.v1 import jobs_pb2 as pb

NO_CONTEXT = cast(Any, None)
"""Dequeue reads nothing from its gRPC context."""


def test_a_drained_servicer_answers_waiting_dequeues_and_lets_no_later_one_wait() -> None:
    async def scenario() -> tuple[int, int]:
        servicer = JobQueueServicer(MemoryBackend().jobs(), PageTokens(new_key()))
        calls.current_call.set(calls.Call("r1", "/stord.v1.JobQueueService/Dequeue", "default"))
        request = pb.DequeueRequest(queue="idle", wait=Duration(seconds=60))
        waiting = asyncio.create_task(servicer.Dequeue(request, NO_CONTEXT))
        await asyncio.sleep(
            0.05
        )  # into its wait (were it still looking, the drain would end it all the same)
        await servicer.drain()
        answered = await asyncio.wait_for(waiting, 10)
        later = await asyncio.wait_for(servicer.Dequeue(request, NO_CONTEXT), 10)
        return len(answered.jobs), len(later.jobs)

    assert asyncio.run(scenario()) == (0, 0)
