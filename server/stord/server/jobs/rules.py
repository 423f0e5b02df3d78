"""What every job queue backend shares: the retry rule, lease errors, and in-process wake-ups of waiters."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from stord.server.jobs.port import MICROS
from stord.server.ports import FailedPrecondition

__all__ = [
    "LEASE_LAPSED",
    "LEASE_LOST",
    "QueueWakeups",
    "lease_not_held",
    "new_lease_token",
    "retry_delay",
]

MAX_RETRY_DELAY = 60 * MICROS

LEASE_LOST = "the lease of its last attempt ran out"
"""The last_error of a job whose worker stopped extending the lease of its last attempt."""

LEASE_LAPSED = "the lease of an attempt ran out; retried"
"""The last_error of a job the sweeper made due again after its worker stopped extending the lease."""


def retry_delay(attempts: int) -> int:
    """Return the backoff in microseconds before the next attempt: min(1 s * 2^attempts, 60 s)."""
    return min(MICROS << min(attempts, 6), MAX_RETRY_DELAY)  # 2^6 s is past the cap already


def new_lease_token() -> str:
    """Return a token for one dequeue's deliveries; a stale worker holds an older one."""
    return secrets.token_hex(12)


def lease_not_held(job_ids: Iterable[str]) -> FailedPrecondition:
    """Return the error for leases the caller no longer holds."""
    names = ", ".join(sorted(set(job_ids)))
    return FailedPrecondition(
        f"lease not held for job(s) {names}: not running under that lease token, or the lease ran out"
    )


class QueueWakeups:
    """Events of the tasks waiting for jobs, per (namespace, queue), set when jobs may have arrived.

    Used on the event loop only. A waiter clears its event before it looks for jobs, so a notification
    that arrives while it looks is not lost. A notification wakes one waiter, not all: the others would
    only find the jobs taken. A dequeue that fills its batch passes the wake-up on (`notify` again), since
    more jobs may be left.
    """

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], list[asyncio.Event]] = {}

    @contextmanager
    def watch(self, namespace: str, queue: str) -> Iterator[asyncio.Event]:
        """Register an event for the queue for the duration of the context."""
        key = (namespace, queue)
        event = asyncio.Event()
        self._waiting.setdefault(key, []).append(event)
        try:
            yield event
        finally:
            events = self._waiting[key]
            events.remove(event)
            if not events:
                del self._waiting[key]

    def notify(self, namespace: str, queue: str) -> None:
        """Wake the longest-waiting waiter of the queue that is not awake already."""
        for event in self._waiting.get((namespace, queue), ()):
            if not event.is_set():
                event.set()
                return

    def notify_every_queue(self) -> None:
        """Wake a waiter of every queue someone waits on (jobs of unknown queues became due)."""
        for namespace, queue in list(self._waiting):
            self.notify(namespace, queue)

    def notify_queues(self, namespace: str, queues: Iterable[str]) -> None:
        """Wake a waiter of each queue."""
        for queue in set(queues):
            self.notify(namespace, queue)
