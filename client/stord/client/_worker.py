"""`Worker` and its twin `AsyncWorker`: run a handler on every job of a queue, with batches and heartbeats.

A worker dequeues up to `batch_size` jobs under one lease, runs the handler on each in turn while a heartbeat
extends the leases of the jobs not finished yet, then acknowledges the batch's successes in one call and
fails each job whose handler raised. A job whose lease was lost meanwhile (the worker stalled longer than a
lease) is skipped when acknowledged or failed: another worker has it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from stord.client._jobs import AsyncJobs, Jobs
from stord.client._models import Job
from stord.client.errors import FailedPrecondition

__all__ = ["AsyncWorker", "Worker"]

DEFAULT_LEASE = 30.0
DEFAULT_WAIT = 5.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Batch:
    """The jobs of one dequeue and what became of them."""

    def __init__(self, jobs: list[Job]) -> None:
        self.unfinished = list(jobs)
        self.succeeded: list[Job] = []
        self.failed: list[tuple[Job, str]] = []

    def succeed(self, job: Job) -> None:
        self.unfinished.remove(job)
        self.succeeded.append(job)

    def fail(self, job: Job, error: BaseException) -> None:
        self.unfinished.remove(job)
        self.failed.append((job, _describe(error)))


class Worker:
    """Run `handler(job)` on the jobs of `queue`; returning acknowledges the job, raising fails it.

    `lease` and `wait` are seconds; the heartbeat renews leases every `lease / 3` seconds.
    """

    def __init__(
        self,
        jobs: Jobs,
        queue: str,
        handler: Callable[[Job], object],
        *,
        batch_size: int = 10,
        lease: float = DEFAULT_LEASE,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._handler = handler
        self._batch_size = batch_size
        self._lease = lease
        self._wait = wait

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set; the batch in hand is finished first."""
        while not stop.is_set():
            self.run_once()

    def run_once(self) -> int:
        """Dequeue one batch (waiting up to `wait` for it), process it, and return how many jobs it held."""
        jobs = self._jobs.dequeue(self._queue, max_jobs=self._batch_size, lease=self._lease, wait=self._wait)
        if not jobs:
            return 0
        batch = _Batch(jobs)
        with self._heartbeat(batch):
            for job in jobs:
                try:
                    self._handler(job)
                except Exception as error:
                    batch.fail(job, error)
                else:
                    batch.succeed(job)
        self._settle(batch)
        return len(jobs)

    @contextlib.contextmanager
    def _heartbeat(self, batch: _Batch) -> Iterator[None]:
        stopped = threading.Event()

        def beat() -> None:
            while not stopped.wait(self._lease / 3):
                self._extend(list(batch.unfinished))

        thread = threading.Thread(target=beat, name=f"stord-heartbeat-{self._queue}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stopped.set()
            thread.join()

    def _extend(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            self._jobs.extend_lease(jobs, lease=self._lease)
        except FailedPrecondition:  # some lease is lost: keep the others
            for job in jobs:
                with contextlib.suppress(FailedPrecondition):
                    self._jobs.extend_lease([job], lease=self._lease)

    def _settle(self, batch: _Batch) -> None:
        if batch.succeeded:
            try:
                self._jobs.acknowledge(batch.succeeded)
            except FailedPrecondition:  # some lease is lost: acknowledge the others
                for job in batch.succeeded:
                    with contextlib.suppress(FailedPrecondition):
                        self._jobs.acknowledge([job])
        for job, error in batch.failed:
            with contextlib.suppress(FailedPrecondition):
                self._jobs.fail(job, error)


class AsyncWorker:
    """Run `await handler(job)` on the jobs of `queue`; returning acknowledges the job, raising fails it.

    `lease` and `wait` are seconds; the heartbeat renews leases every `lease / 3` seconds.
    """

    def __init__(
        self,
        jobs: AsyncJobs,
        queue: str,
        handler: Callable[[Job], Awaitable[object]],
        *,
        batch_size: int = 10,
        lease: float = DEFAULT_LEASE,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._handler = handler
        self._batch_size = batch_size
        self._lease = lease
        self._wait = wait

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; the batch in hand is finished first."""
        while not stop.is_set():
            await self.run_once()

    async def run_once(self) -> int:
        """Dequeue one batch (waiting up to `wait` for it), process it, and return how many jobs it held."""
        jobs = await self._jobs.dequeue(
            self._queue, max_jobs=self._batch_size, lease=self._lease, wait=self._wait
        )
        if not jobs:
            return 0
        batch = _Batch(jobs)
        async with self._heartbeat(batch):
            for job in jobs:
                try:
                    await self._handler(job)
                except Exception as error:
                    batch.fail(job, error)
                else:
                    batch.succeed(job)
        await self._settle(batch)
        return len(jobs)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, batch: _Batch) -> AsyncIterator[None]:
        async def beat() -> None:
            while True:
                await asyncio.sleep(self._lease / 3)
                await self._extend(list(batch.unfinished))

        task = asyncio.create_task(beat(), name=f"stord-heartbeat-{self._queue}")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _extend(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            await self._jobs.extend_lease(jobs, lease=self._lease)
        except FailedPrecondition:  # some lease is lost: keep the others
            for job in jobs:
                with contextlib.suppress(FailedPrecondition):
                    await self._jobs.extend_lease([job], lease=self._lease)

    async def _settle(self, batch: _Batch) -> None:
        if batch.succeeded:
            try:
                await self._jobs.acknowledge(batch.succeeded)
            except FailedPrecondition:  # some lease is lost: acknowledge the others
                for job in batch.succeeded:
                    with contextlib.suppress(FailedPrecondition):
                        await self._jobs.acknowledge([job])
        for job, error in batch.failed:
            with contextlib.suppress(FailedPrecondition):
                await self._jobs.fail(job, error)
