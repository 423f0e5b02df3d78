"""TailEvents subscriptions, fed from the event store's feed: the batches any process commits, in order.

Each namespace's feed numbers its committed batches from 1 in commit order (`EventStore.read_feed`). The hub
keeps one cursor per namespace somebody tails here and one follower task, woken by the store
(`EventStore.watch_feed`: LISTEN/NOTIFY on PostgreSQL, `PRAGMA data_version` polling on SQLite, in process on
memory), which reads every namespace's feed after its cursor and hands the batches to its subscribers. So a
tail on one daemon sees what another daemon sharing the database stores, each batch once and in commit order
(within a session, chain order). A batch this daemon committed itself is handed over at once when it is the
next one (`committed`), without waiting for the store's notice or reading it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import structlog

from stord.server.events.model import matches
from stord.server.events.port import Event, EventFilter, EventStore, InsertOutcome
from stord.server.ports import StoreError, Unavailable

__all__ = ["EventHub", "SubscriberDropped", "Subscription"]

_log = structlog.get_logger("stord.events")

DEFAULT_CAPACITY = 10_000
"""Events a subscriber may have queued before it is dropped: memory stays bounded by a slow reader."""

MAX_EVENTS_PER_DELIVERY = 1000

FEED_PAGE = 32
"""Batches read from the feed at a time."""

LINGER_SECONDS = 10.0
"""How long the follower (and the store's watch) stays after the last subscriber left, so that tails opened
one after another do not reopen the watch each time."""

RETRY_SECONDS = (0.1, 2.0)
"""First and longest wait before reading the feed again after the store failed to answer."""

SHUTTING_DOWN = "the daemon is shutting down: subscribe again (to another instance) and query what was stored"


class SubscriberDropped(Exception):
    """The subscriber fell too far behind; its queue was discarded."""


class Subscription:
    """The queue of one subscriber: matching events in commit order, bounded."""

    def __init__(self, event_filter: EventFilter, capacity: int) -> None:
        self._filter = event_filter
        self._capacity = capacity
        self._pending: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._end: Exception | None = None

    def offer(self, events: Sequence[Event]) -> None:
        """Queue the events that match; drop the subscriber instead of queueing past its capacity."""
        if self._end is not None:
            return
        matching = [event for event in events if matches(self._filter, event)]
        if not matching:
            return
        if len(self._pending) + len(matching) > self._capacity:
            self._end = SubscriberDropped(f"the subscriber fell more than {self._capacity} events behind")
            self._pending.clear()
        else:
            self._pending.extend(matching)
        self._ready.set()

    def end(self, error: StoreError) -> None:
        """Deliver what is queued, then raise `error` instead of waiting for more."""
        if self._end is None:
            self._end = error
            self._ready.set()

    async def next_events(self) -> list[Event]:
        """Wait for queued events and return up to 1000 of them; once ended and emptied, raise why.

        SubscriberDropped when the subscriber fell behind, a StoreError when the hub ended it.
        """
        while not self._pending and self._end is None:
            self._ready.clear()
            await self._ready.wait()
        if not self._pending:
            assert self._end is not None
            raise self._end
        count = min(len(self._pending), MAX_EVENTS_PER_DELIVERY)
        return [self._pending.popleft() for _ in range(count)]


@dataclass(eq=False, slots=True)
class _Feed:
    """One namespace followed: the position of the last batch handed to its subscribers, and them."""

    cursor: int
    subscriptions: set[Subscription] = field(default_factory=set)

    def offer(self, events: Sequence[Event]) -> None:
        for subscription in self.subscriptions:
            subscription.offer(events)

    def end(self, error: StoreError) -> None:
        for subscription in self.subscriptions:
            subscription.end(error)


class EventHub:
    """The live subscriptions of one daemon, by namespace. Used from the event loop's thread only."""

    def __init__(
        self, store: EventStore, capacity: int = DEFAULT_CAPACITY, *, linger: float = LINGER_SECONDS
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._linger = linger
        self._feeds: dict[str, _Feed] = {}
        self._dirty: set[str] = set()
        """Namespaces whose feed may have grown past their cursor."""
        self._everything_dirty = False
        self._wake = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def subscribe(self, namespace: str, event_filter: EventFilter) -> AsyncIterator[Subscription]:
        """Register a subscription for the duration of the `with` block.

        It gets every batch committed after it is entered (and maybe a few committed just before). Raise
        Unavailable when the store cannot tell where the namespace's feed stands, or the hub is closed.
        """
        if self._closed:
            raise Unavailable(SHUTTING_DOWN)
        feed = self._feeds.get(namespace)
        if feed is None:
            position = await self._store.feed_position(namespace)
            if self._closed:
                raise Unavailable(SHUTTING_DOWN)
            feed = self._feeds.get(namespace)  # another subscriber may have started it meanwhile
            if feed is None:
                feed = self._feeds[namespace] = _Feed(position)
        subscription = Subscription(event_filter, self._capacity)
        feed.subscriptions.add(subscription)
        self._start_follower()
        try:
            yield subscription
        finally:
            feed.subscriptions.discard(subscription)
            if not feed.subscriptions and self._feeds.get(namespace) is feed:
                del self._feeds[namespace]
                self._wake.set()  # lets an idle follower start lingering

    def committed(self, namespace: str, outcome: InsertOutcome) -> None:
        """Hand a batch this daemon committed to its subscribers now if it is the next one in the feed.

        Otherwise the follower reads it from the feed in its turn, after the batches before it.
        """
        feed = self._feeds.get(namespace)
        if feed is None or outcome.feed_position <= feed.cursor:
            return
        if outcome.feed_position == feed.cursor + 1:
            feed.cursor = outcome.feed_position
            feed.offer(outcome.stored)
        else:
            self._dirty.add(namespace)
            self._wake.set()

    async def close(self) -> None:
        """End every subscription with Unavailable (the daemon is shutting down) and stop following."""
        self._closed = True
        for feed in self._feeds.values():
            feed.end(Unavailable(SHUTTING_DOWN))
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    # The follower ---------------------------------------------------------------------------------------

    def _start_follower(self) -> None:
        if self._follower is None and not self._closed:
            self._follower = asyncio.create_task(self._follow(), name="stord-event-follower")

    def _on_commit(self, namespace: str | None, position: int) -> None:
        """Note a batch the store says may have been committed (see `EventStore.watch_feed`)."""
        if namespace is None:
            self._everything_dirty = True
        else:
            feed = self._feeds.get(namespace)
            if feed is None or 0 < position <= feed.cursor:
                return
            self._dirty.add(namespace)
        self._wake.set()

    async def _follow(self) -> None:
        me = asyncio.current_task()
        try:
            async with self._store.watch_feed(self._on_commit):
                while await self._wait():
                    await self._catch_up()
        except Exception as error:
            _log.exception("event_follower_failed")
            for feed in self._feeds.values():
                feed.end(Unavailable(f"the event feed failed: {error}; subscribe again"))
        finally:
            if self._follower is me:
                self._follower = None

    async def _wait(self) -> bool:
        """Wait until some feed may have grown; return False once nobody has followed for `linger`."""
        while not (self._dirty or self._everything_dirty):
            self._wake.clear()
            if self._feeds:
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout(self._linger):  # wait_for could swallow a cancel (Python 3.11)
                    await self._wake.wait()
            except TimeoutError:
                if not self._feeds:
                    self._follower = None  # from here on, a new subscriber starts a follower of its own
                    return False
        return True

    async def _catch_up(self) -> None:
        """Read every dirty namespace's feed up to its end, waiting and retrying while the store fails."""
        delay = RETRY_SECONDS[0]
        failing = False
        while self._dirty or self._everything_dirty:
            if self._everything_dirty:
                self._everything_dirty = False
                self._dirty.update(self._feeds)
                if not self._dirty:  # the last subscriber left before the commit was noted
                    break
            namespace = self._dirty.pop()
            try:
                await self._read(namespace)
            except StoreError as error:
                self._dirty.add(namespace)
                if not failing:
                    _log.warning("event_feed_unreadable", namespace=namespace, error=str(error))
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])
        if failing:
            _log.info("event_feed_readable")

    async def _read(self, namespace: str) -> None:
        """Hand the namespace's batches after its cursor to its subscribers, up to the end of the feed."""
        while (feed := self._feeds.get(namespace)) is not None:
            after = feed.cursor
            page = await self._store.read_feed(namespace, after=after, limit=FEED_PAGE)
            feed = self._feeds.get(namespace)  # it may have ended, or started afresh, meanwhile
            if feed is None:
                return
            if page.missed and feed.cursor == after:
                feed.end(
                    Unavailable(
                        "batches of events were pruned from the feed before this daemon could read them"
                        " (was the database out of reach for minutes?): query what was missed, then"
                        " subscribe again"
                    )
                )
                del self._feeds[namespace]
                return
            for batch in page.batches:
                if batch.position == feed.cursor + 1:
                    feed.cursor = batch.position
                    feed.offer(batch.events)
            if len(page.batches) < FEED_PAGE and not page.missed:
                return
