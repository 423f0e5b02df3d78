"""TailEvents subscriptions, fed in process by the servicer once a batch is committed: no database polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Sequence

from stord.server.event_model import matches
from stord.server.ports import Event, EventFilter

__all__ = ["EventHub", "SubscriberDropped", "Subscription"]

DEFAULT_CAPACITY = 10_000
"""Events a subscriber may have queued before it is dropped: memory stays bounded by a slow reader."""

MAX_EVENTS_PER_DELIVERY = 1000


class SubscriberDropped(Exception):
    """The subscriber fell too far behind; its queue was discarded."""


class Subscription:
    """The queue of one subscriber: matching events in commit order, bounded."""

    def __init__(self, event_filter: EventFilter, capacity: int) -> None:
        self._filter = event_filter
        self._capacity = capacity
        self._pending: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._dropped = False

    def offer(self, events: Sequence[Event]) -> None:
        """Queue the events that match; drop the subscriber instead of queueing past its capacity."""
        if self._dropped:
            return
        matching = [event for event in events if matches(self._filter, event)]
        if not matching:
            return
        if len(self._pending) + len(matching) > self._capacity:
            self._dropped = True
            self._pending.clear()
        else:
            self._pending.extend(matching)
        self._ready.set()

    async def next_events(self) -> list[Event]:
        """Wait for queued events and return up to 1000 of them; raise SubscriberDropped once dropped."""
        while not self._pending and not self._dropped:
            self._ready.clear()
            await self._ready.wait()
        if self._dropped:
            raise SubscriberDropped(f"the subscriber fell more than {self._capacity} events behind")
        count = min(len(self._pending), MAX_EVENTS_PER_DELIVERY)
        return [self._pending.popleft() for _ in range(count)]


class EventHub:
    """The live subscriptions of one daemon, by namespace. Used from the event loop's thread only."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._subscriptions: dict[str, set[Subscription]] = {}

    @contextlib.contextmanager
    def subscribe(self, namespace: str, event_filter: EventFilter) -> Iterator[Subscription]:
        """Register a subscription for the duration of the `with` block."""
        subscription = Subscription(event_filter, self._capacity)
        subscribers = self._subscriptions.setdefault(namespace, set())
        subscribers.add(subscription)
        try:
            yield subscription
        finally:
            subscribers.discard(subscription)
            if not subscribers:
                self._subscriptions.pop(namespace, None)

    def publish(self, namespace: str, events: Sequence[Event]) -> None:
        """Offer newly committed events to the namespace's subscribers."""
        if not events:
            return
        for subscription in self._subscriptions.get(namespace, ()):
            subscription.offer(events)
