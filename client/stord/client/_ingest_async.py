"""AsyncEventIngestor: EventIngestor's asyncio twin, over one IngestEvents stream of a grpc.aio channel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from stord.client import _codec
from stord.client._ingest import _FIRST_BACKOFF, _LAST_BACKOFF, _RETRYABLE, IngestProgress, _Batches, with_id
from stord.client.errors import StordError, from_rpc_error
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc

__all__ = ["AsyncEventIngestor"]

_LOST_IN_CORE = "Internal error from Core"
"""The details of the INTERNAL status grpc.aio gives a stream whose connection broke in the middle of a
write (a daemon killed under it); the daemon's own INTERNAL (a bug) says otherwise and stops the ingestor."""


def _broken(error: grpc.RpcError) -> bool:
    """Return whether a failed stream broke (reconnect and resend), rather than refused a batch."""
    code = error.code()
    return code in _RETRYABLE or (code == grpc.StatusCode.INTERNAL and error.details() == _LOST_IN_CORE)


class AsyncEventIngestor(_Batches):
    """Send events in batches over IngestEvents; `await flush()` returns once every event added is stored.

    The same semantics as EventIngestor, awaited: batches by count (`batch_size`) and age (`max_delay`),
    at most `max_in_flight` unacknowledged (`add` waits beyond that), reconnect with backoff and resend by
    id after a broken stream, stop at a refused batch or a stream broken for `retry_for` seconds (`add`,
    `flush` and `close` then raise its error). `on_progress` is called on the event loop after each
    acknowledgement. Use it on one event loop; open it with `async with` (or call `close`).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        namespace: str | None = None,
        api_key: str | None = None,
        tls: _codec.Tls | bool = False,
        batch_size: int = 500,
        max_delay: float = 0.1,
        max_in_flight: int = 4,
        retry_for: float = 60.0,
        on_progress: Callable[[IngestProgress], None] | None = None,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            max_delay=max_delay,
            max_in_flight=max_in_flight,
            retry_for=retry_for,
            on_progress=on_progress,
        )
        self._metadata = _codec.metadata(namespace, api_key=api_key)
        self._target, self._tls, self._options = target, tls, list(options)
        self._channel: grpc.aio.Channel | None = None
        self._condition: asyncio.Condition | None = None
        self._sender: asyncio.Task[None] | None = None

    def _started(self) -> asyncio.Condition:
        """Return the lock, opening the channel and starting the sender on first use (on the running loop)."""
        if self._condition is None:
            self._condition = asyncio.Condition()
            # The channel reconnects quickly; resending is this class's job, so no call waits for ready.
            self._channel = _codec.aio_channel(self._target, self._tls, self._options, _codec.DEFAULT_RETRY)
            stub = events_pb2_grpc.EventStoreServiceStub(self._channel)
            self._sender = asyncio.create_task(self._run(stub), name="stord-async-event-ingestor")
        return self._condition

    # The producer's side ---------------------------------------------------------------------------------

    async def add(self, event: pb.Event) -> str:
        """Queue an event (a copy, with an id if it has none); return its id. Waits while batches wait."""
        event = with_id(event)
        condition = self._started()
        async with condition:
            self._raise_if_stopped()
            if not self._current:
                self._current_since = time.monotonic()
                condition.notify_all()  # the sender starts the batch's max_delay clock
            self._current.append(event)
            self._added += 1
            if len(self._current) >= self._batch_size:
                await self._seal(wait=True)
        return event.id

    async def add_many(self, events: Iterable[pb.Event]) -> list[str]:
        """Queue events in order; return their ids."""
        return [await self.add(event) for event in events]

    async def flush(self) -> None:
        """Send what is queued and return once every event added so far is stored; raise the error if any.

        Bound the wait with `asyncio.timeout` (EventIngestor.flush's `timeout`).
        """
        condition = self._started()
        async with condition:
            if self._current:
                await self._seal(wait=True)
            await condition.wait_for(lambda: not self._batches or self._error is not None)
            if self._error is not None:
                raise self._error

    def progress(self) -> IngestProgress:
        """Return the counters as they stand."""
        return self._progress()

    async def close(self) -> None:
        """Flush, then end the stream and release the connection. Raises the error of a stopped ingestor."""
        if self._condition is None:
            self._closed = True
            return
        try:
            await self.flush()
        finally:
            async with self._condition:
                self._closed = True
                self._condition.notify_all()
            assert self._sender is not None
            assert self._channel is not None
            try:
                async with asyncio.timeout(5):
                    await self._sender
            except TimeoutError:
                pass  # the stream did not end in time: closing the channel ends it
            await self._channel.close()

    async def __aenter__(self) -> AsyncEventIngestor:
        self._started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _seal(self, *, wait: bool) -> bool:
        """Make the current events a batch to send; with `wait`, wait for an in-flight slot. Lock held."""
        assert self._condition is not None
        while len(self._batches) >= self._max_in_flight:
            if not wait:
                return False
            self._raise_if_stopped()
            await self._condition.wait()
        if not self._current:  # the sender sealed it for its age while this waited
            return False
        sequence, self._next_sequence = self._next_sequence, self._next_sequence + 1
        self._batches[sequence] = self._current
        self._unsent.append(sequence)
        self._current = []
        self._condition.notify_all()
        return True

    # The sender's side -----------------------------------------------------------------------------------

    async def _run(self, stub: events_pb2_grpc.EventStoreServiceAsyncStub) -> None:
        assert self._condition is not None
        backoff, broken_since = _FIRST_BACKOFF, None
        while True:
            async with self._condition:
                if self._error is not None or (self._closed and not self._batches):
                    return
                stream = self._stream = object()
                # A new stream resends every batch still unacknowledged, in order.
                self._unsent = deque(self._batches)
            call = stub.IngestEvents(metadata=self._metadata)
            writer = asyncio.create_task(self._write(call, stream), name="stord-async-event-ingestor-writer")
            try:
                async for response in call:
                    await self._acknowledge(response)
                    backoff, broken_since = _FIRST_BACKOFF, None
            except grpc.RpcError as error:
                broken_since = broken_since or time.monotonic()
                if not _broken(error) or time.monotonic() - broken_since > self._retry_for:
                    await self._stop(from_rpc_error(error))
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _LAST_BACKOFF)
                self._reconnects += 1
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                async with self._condition:
                    self._stream = None
                    self._condition.notify_all()

    async def _write(self, call: Any, stream: object) -> None:
        """Write the stream's batches, then half-close it.

        The call's own write() rather than a request iterator: when the daemon dies, grpc.aio reports a
        failing request iterator as INTERNAL, where the read side reports the real status (UNAVAILABLE).
        """
        try:
            async for request in self._requests(stream):
                await call.write(request)
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the call ended: its reader reports why

    async def _requests(self, stream: object) -> AsyncIterator[pb.IngestEventsRequest]:
        """Yield batches as they are sealed, sealing one that waited `max_delay`; end with the stream."""
        assert self._condition is not None
        while True:
            async with self._condition:
                while True:
                    if self._stream is not stream or (self._closed and not self._batches):
                        return
                    if self._unsent:
                        sequence = self._unsent.popleft()
                        batch = self._batches[sequence]
                        break
                    age = time.monotonic() - self._current_since
                    if self._current and age >= self._max_delay and await self._seal(wait=False):
                        continue
                    await self._wait(max(self._max_delay - age, 0.01) if self._current else None)
            yield pb.IngestEventsRequest(sequence=sequence, events=batch)

    async def _wait(self, seconds: float | None) -> None:
        """Wait for a notification, or `seconds` at most. Lock held."""
        assert self._condition is not None
        try:
            async with asyncio.timeout(seconds):
                await self._condition.wait()
        except TimeoutError:
            pass

    async def _acknowledge(self, response: pb.IngestEventsResponse) -> None:
        assert self._condition is not None
        async with self._condition:
            if self._batches.pop(response.sequence, None) is None:
                return
            self._accepted += response.accepted
            self._duplicates += response.duplicates
            self._condition.notify_all()
        if self._on_progress is not None:
            self._on_progress(self.progress())

    async def _stop(self, error: StordError) -> None:
        assert self._condition is not None
        async with self._condition:
            self._error = error
            self._condition.notify_all()
