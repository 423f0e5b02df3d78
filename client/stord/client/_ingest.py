"""EventIngestor: batched, acknowledged, resumable event ingest over one IngestEvents stream."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from stord.client import _codec
from stord.client._events_codec import new_event_id
from stord.client.errors import StordError, from_rpc_error
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc

__all__ = ["EventIngestor", "IngestProgress"]

_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)
"""Statuses of a broken stream, not of a refused batch: reconnect and resend what was not acknowledged."""

_FIRST_BACKOFF = 0.05
_LAST_BACKOFF = 2.0


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Where an EventIngestor stands."""

    added: int
    """Events given to `add`."""
    acknowledged: int
    """Events the server acknowledged as stored: accepted plus duplicates."""
    accepted: int
    """Events stored by this ingestor."""
    duplicates: int
    """Events the server had already (resent after a broken stream, or given twice)."""
    pending_batches: int
    """Batches sent or ready to send, not acknowledged yet."""
    reconnects: int
    """Streams opened again after a broken one."""


class _Batches:
    """What EventIngestor and AsyncEventIngestor share: their settings, batches and counters."""

    def __init__(
        self,
        *,
        batch_size: int,
        max_delay: float,
        max_in_flight: int,
        retry_for: float,
        on_progress: Callable[[IngestProgress], None] | None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._batch_size = batch_size
        self._max_delay = max_delay
        self._max_in_flight = max_in_flight
        self._retry_for = retry_for
        self._on_progress = on_progress
        self._current: list[pb.Event] = []
        self._current_since = 0.0
        self._batches: dict[int, list[pb.Event]] = {}
        """Sealed batches not acknowledged yet, by sequence, in sequence order."""
        self._unsent: deque[int] = deque()
        self._next_sequence = 1
        self._stream: object | None = None
        """Identifies the open stream; its request generator ends once this changes."""
        self._error: StordError | None = None
        self._closed = False
        self._added = self._accepted = self._duplicates = self._reconnects = 0

    def _raise_if_stopped(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError("the ingestor is closed")

    def _progress(self) -> IngestProgress:
        return IngestProgress(
            added=self._added,
            acknowledged=self._accepted + self._duplicates,
            accepted=self._accepted,
            duplicates=self._duplicates,
            pending_batches=len(self._batches),
            reconnects=self._reconnects,
        )


def with_id(event: pb.Event) -> pb.Event:
    """Return the event, or a copy of it with a new id when it has none (so that a resend is idempotent)."""
    if event.id:
        return event
    copy = pb.Event()
    copy.CopyFrom(event)
    copy.id = new_event_id()
    return copy


class EventIngestor(_Batches):
    """Send events in batches over IngestEvents; `flush()` returns once every event added is stored.

    Events are batched by count (`batch_size`) and by age (`max_delay` seconds after a batch's first event).
    At most `max_in_flight` batches wait for their acknowledgement: `add` blocks beyond that, so memory stays
    bounded when the server is slower than the producer. When the stream breaks (the daemon restarts, the
    network drops), the ingestor reconnects with backoff and resends every unacknowledged batch; events
    without an id get one here, so the server stores each event once. A refused batch (INVALID_ARGUMENT,
    FAILED_PRECONDITION) stops the ingestor: `add` and `flush` then raise its error. So does a stream that
    stays broken for `retry_for` seconds.

    `on_progress` is called from the ingestor's thread after each acknowledgement. `api_key` and `tls` work
    as for `Client`. Thread-safe.
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
        # The channel reconnects quickly; resending is this class's job, so no call waits for ready.
        self._channel = _codec.channel(target, tls, options, _codec.DEFAULT_RETRY)
        self._stub = events_pb2_grpc.EventStoreServiceStub(self._channel)
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stord-event-ingestor", daemon=True)
        self._thread.start()

    # The producer's side ---------------------------------------------------------------------------------

    def add(self, event: pb.Event) -> str:
        """Queue an event (a copy, with an id if it has none); return its id. Blocks while batches wait."""
        event = with_id(event)
        with self._condition:
            self._raise_if_stopped()
            if not self._current:
                self._current_since = time.monotonic()
                self._condition.notify_all()  # the sender starts the batch's max_delay clock
            self._current.append(event)
            self._added += 1
            if len(self._current) >= self._batch_size:
                self._seal(wait=True)
        return event.id

    def add_many(self, events: Iterable[pb.Event]) -> list[str]:
        """Queue events in order; return their ids."""
        return [self.add(event) for event in events]

    def flush(self, timeout: float | None = None) -> None:
        """Send what is queued and return once every event added so far is stored; raise the error if any."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._current:
                self._seal(wait=True)
            while self._batches and self._error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{len(self._batches)} batches are not acknowledged yet")
                self._condition.wait(remaining)
            if self._error is not None:
                raise self._error

    def progress(self) -> IngestProgress:
        """Return the counters as they stand."""
        with self._condition:
            return self._progress()

    def close(self) -> None:
        """Flush, then end the stream and release the connection. Raises the error of a stopped ingestor."""
        try:
            self.flush()
        finally:
            with self._condition:
                self._closed = True
                self._condition.notify_all()
            self._thread.join()
            self._channel.close()

    def __enter__(self) -> EventIngestor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _seal(self, *, wait: bool) -> bool:
        """Make the current events a batch to send; with `wait`, wait for an in-flight slot. Lock held."""
        while len(self._batches) >= self._max_in_flight:
            if not wait:
                return False
            self._raise_if_stopped()
            self._condition.wait()
        if not self._current:  # the sender sealed it for its age while this waited
            return False
        sequence, self._next_sequence = self._next_sequence, self._next_sequence + 1
        self._batches[sequence] = self._current
        self._unsent.append(sequence)
        self._current = []
        self._condition.notify_all()
        return True

    # The sender's side (the ingestor's thread and gRPC's request thread) ---------------------------------

    def _run(self) -> None:
        backoff, broken_since = _FIRST_BACKOFF, None
        while True:
            with self._condition:
                if self._error is not None or (self._closed and not self._batches):
                    return
                stream = self._stream = object()
                # A new stream resends every batch still unacknowledged, in order.
                self._unsent = deque(self._batches)
            try:
                for response in self._stub.IngestEvents(self._requests(stream), metadata=self._metadata):
                    self._acknowledge(response)
                    backoff, broken_since = _FIRST_BACKOFF, None
            except grpc.RpcError as error:
                broken_since = broken_since or time.monotonic()
                if error.code() not in _RETRYABLE or time.monotonic() - broken_since > self._retry_for:
                    self._stop(from_rpc_error(error))
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, _LAST_BACKOFF)
                with self._condition:
                    self._reconnects += 1
            finally:
                with self._condition:
                    self._stream = None
                    self._condition.notify_all()

    def _requests(self, stream: object) -> Iterator[pb.IngestEventsRequest]:
        """Yield batches as they are sealed, sealing one that waited `max_delay`; end with the stream."""
        while True:
            with self._condition:
                while True:
                    if self._stream is not stream or (self._closed and not self._batches):
                        return
                    if self._unsent:
                        sequence = self._unsent.popleft()
                        batch = self._batches[sequence]
                        break
                    age = time.monotonic() - self._current_since
                    if self._current and age >= self._max_delay and self._seal(wait=False):
                        continue
                    self._condition.wait(max(self._max_delay - age, 0.01) if self._current else None)
            yield pb.IngestEventsRequest(sequence=sequence, events=batch)

    def _acknowledge(self, response: pb.IngestEventsResponse) -> None:
        with self._condition:
            if self._batches.pop(response.sequence, None) is None:
                return
            self._accepted += response.accepted
            self._duplicates += response.duplicates
            self._condition.notify_all()
            progress = self._progress()
        if self._on_progress is not None:
            self._on_progress(progress)

    def _stop(self, error: StordError) -> None:
        with self._condition:
            self._error = error
            self._condition.notify_all()
