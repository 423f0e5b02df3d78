"""Event store parts below the gRPC API: canonical JSON, the daily retention pass, TailEvents queues."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from google.protobuf.struct_pb2 import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from stord.server.backends.memory import MemoryBackend
from stord.server.backends.memory._events import MemoryEventStore
from stord.server.backends.redis import RedisBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.server.config import RedisOptions, SqliteOptions
from stord.server.events import codec
from stord.server.events.chain import JsonValue, canonical_json, format_timestamp
from stord.server.events.model import payload_facts
from stord.server.events.port import CommitListener, Event, EventFilter, EventInput, EventType, Severity
from stord.server.events.retention import retain_events_daily
from stord.server.events.tail import EventHub, SubscriberDropped, Subscription
from stord.server.ports import InvalidArgument, Unavailable, system_clock
from tests.harness.clock import ManualClock

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("number", "written"),
    [
        (3.0, "3"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
        (2.0**64, "18446744073709551616"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (1e-6, "0.000001"),
        (1.234e-6, "0.000001234"),
        (2.5e-5, "0.000025"),
        (1e-7, "1e-7"),
        (-1.5e-7, "-1.5e-7"),
        (5e-324, "5e-324"),
        (123456789.125, "123456789.125"),
    ],
)
def test_numbers_are_written_as_javascript_writes_them(number: float, written: str) -> None:
    assert canonical_json([number]) == f"[{written}]"


def test_canonical_json_sorts_keys_by_code_point_without_spaces() -> None:
    value: JsonValue = {
        "b": [1, {"z": None, "a": True}],
        "a": 'x\n"\\\u001f\u2028é',
        "\U00010000": 1,
        "\uffff": 2,
    }
    assert canonical_json(value) == (
        '{"a":"x\\n\\"\\\\\\u001f\u2028é","b":[1,{"a":true,"z":null}],"\uffff":2,"\U00010000":1}'
    )
    with pytest.raises(ValueError, match="finite"):
        canonical_json({"x": [float("inf")]})


def test_random_doubles_round_trip_through_their_canonical_text() -> None:
    generator = random.Random(7)
    for _ in range(2000):
        number = struct.unpack("<d", generator.randbytes(8))[0]
        if number != number or abs(number) == float("inf"):
            continue
        written = canonical_json([number])
        assert json.loads(written)[0] == number, written


_JSON_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.0**53, 2.0**53 + 2, 1e16, 1e21, 1e-5, 9.99e-6, 1e-7, 5e-324, 0.1]),
    st.sampled_from(
        [2**53 - 1, 2**53 + 1, -(2**55) - 3, 2**60 + 1, 2**63 + 1, 2**64 + 7]
    ),  # doubles round them
)
_JSON_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
"""Any text a Struct can hold (valid UTF-8: no lone surrogates): escapes, controls, quotes, astral planes."""
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | _JSON_NUMBERS | _JSON_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_JSON_TEXT, children, max_size=4),
    max_leaves=24,
)


@settings(max_examples=400, deadline=None)
@given(document=st.dictionaries(_JSON_TEXT, _JSON_VALUES, max_size=6), ascii_only=st.booleans())
def test_json_text_reads_as_the_equal_struct_byte_for_byte(
    document: dict[str, Any], ascii_only: bool
) -> None:
    # payload_json must store and hash exactly what the same payload as a Struct does (the hash chain and the
    # Node example depend on it), whatever the JSON encoder's escapes.
    message = Struct()
    message.update(document)
    from_struct = codec.struct_json(message, "payload")
    text = json.dumps(document, ensure_ascii=ascii_only, separators=(",", ":"))
    assert codec.json_text(text, "payload_json") == from_struct
    spaced = json.dumps(document, ensure_ascii=not ascii_only, indent=1)
    assert codec.json_text(spaced, "payload_json") == from_struct


def test_json_text_that_is_not_a_json_object_is_refused_naming_the_field() -> None:
    for text in ("[1]", "{", '{"a": NaN}', '{"a": 1e999}', '"x"'):
        with pytest.raises(InvalidArgument, match="payload_json"):
            codec.json_text(text, "payload_json")


def test_timestamps_are_written_as_to_iso_string() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(1_738_314_300_120) == "2025-01-31T09:05:00.120Z"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999Z"
    assert format_timestamp(-62_135_596_800_000) == "0001-01-01T00:00:00.000Z"


def test_payload_facts_take_numbers_only() -> None:
    assert payload_facts(EventType.COST_TRACKED, {"costUsd": 0.5})["cost_usd"] == 0.5
    assert payload_facts(EventType.COST_TRACKED, {"costUsd": True})["cost_usd"] is None
    assert payload_facts(EventType.TOOL_RESPONSE, {"durationMs": "12"})["latency_ms"] is None
    assert payload_facts(EventType.SESSION_STARTED, {"tags": ["a", 1, "b"]})["tags"] == ("a", "b")
    assert payload_facts(EventType.SESSION_ENDED, {"reason": "error"})["ends_in_error"] is True


def _input(event_id: str, timestamp: int) -> EventInput:
    return EventInput(event_id, timestamp, "s1", "a1", EventType.CUSTOM, Severity.INFO, "{}", "{}")


def test_the_daily_pass_applies_retention_at_once_to_every_namespace() -> None:
    async def scenario() -> tuple[int, int]:
        clock = ManualClock()
        backend = MemoryBackend(clock=clock)
        store = backend.events()
        now = int(clock() * 1000)
        for namespace in ("one", "two"):
            await store.insert_events(namespace, [_input("old", now - 10 * DAY_MS), _input("new", now)])
        task = asyncio.create_task(retain_events_daily(backend, 5))
        await asyncio.sleep(
            0
        )  # the memory store never waits: the first pass is done by the task's first step
        task.cancel()
        return await store.count_events("one", EventFilter()), await store.count_events("two", EventFilter())

    assert asyncio.run(scenario()) == (1, 1)


def test_the_daily_pass_does_nothing_when_disabled_or_unserved() -> None:
    async def scenario() -> None:
        await asyncio.wait_for(retain_events_daily(MemoryBackend(), 0), 1)
        await asyncio.wait_for(
            retain_events_daily(RedisBackend("redis://unused", options=RedisOptions()), 90), 1
        )

    asyncio.run(scenario())


def _inputs(*event_ids: str, session_id: str = "s1") -> list[EventInput]:
    return [
        EventInput(event_id, 0, session_id, "a1", EventType.CUSTOM, Severity.INFO, "{}", "{}")
        for event_id in event_ids
    ]


async def _next_ids(subscription: Subscription) -> list[str]:
    return [event.id for event in await asyncio.wait_for(subscription.next_events(), 10)]


class WatchedStore(MemoryEventStore):
    """A memory event store that counts the watches of its feed open now and says when none is left."""

    watching = 0
    unwatched: asyncio.Event

    @contextlib.asynccontextmanager
    async def watch_feed(self, listener: CommitListener) -> AsyncIterator[None]:
        self.watching += 1
        self.unwatched = asyncio.Event()
        try:
            async with super().watch_feed(listener):
                yield
        finally:
            self.watching -= 1
            if not self.watching:
                self.unwatched.set()


def test_a_subscriber_gets_matching_events_and_a_slow_one_is_dropped() -> None:
    async def scenario() -> None:
        store = MemoryEventStore(system_clock)
        hub = EventHub(store, capacity=3)

        async def insert(namespace: str, *event_ids: str, session_id: str = "s1") -> None:
            hub.committed(
                namespace, await store.insert_events(namespace, _inputs(*event_ids, session_id=session_id))
            )

        async with (
            hub.subscribe("ns", EventFilter(session_id="s1")) as fast,
            hub.subscribe("ns", EventFilter()) as slow,
        ):
            await insert("ns", "e1")
            await insert("ns", "x", session_id="s2")
            await insert("other", "elsewhere")
            assert await _next_ids(fast) == ["e1"]
            await insert("ns", "e2", "e3")  # slow now has 4 queued: over its capacity
            assert await _next_ids(fast) == ["e2", "e3"]
            with pytest.raises(SubscriberDropped, match="more than 3 events behind"):
                await slow.next_events()
        await hub.close()

    asyncio.run(scenario())


def test_every_batch_reaches_subscribers_once_in_feed_order_whoever_committed_it() -> None:
    async def scenario() -> None:
        store = MemoryEventStore(system_clock)
        hub = EventHub(store)
        async with hub.subscribe("ns", EventFilter()) as subscription:
            await store.insert_events("ns", _inputs("theirs"))  # as another daemon would: only in the feed
            own = await store.insert_events("ns", _inputs("own"))
            hub.committed("ns", own)  # the next position but one: waits for the batch before it
            delivered: list[str] = []
            while len(delivered) < 2:
                delivered += await _next_ids(subscription)
            assert delivered == ["theirs", "own"]
            hub.committed("ns", own)  # told again: delivered already
            hub.committed("ns", await store.insert_events("ns", _inputs("next")))
            assert await _next_ids(subscription) == ["next"]
            await store.insert_events("ns", _inputs("last"))
            assert await _next_ids(subscription) == ["last"]  # nothing repeated before it
        await hub.close()

    asyncio.run(scenario())


def test_a_feed_pruned_before_it_was_read_ends_its_subscriptions() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        store = MemoryEventStore(clock, feed_keep_seconds=60)
        hub = EventHub(store)
        async with hub.subscribe("ns", EventFilter()) as subscription:
            await store.insert_events("ns", _inputs("unread"))  # the follower gets no turn in between
            clock.advance(120)
            await store.insert_events("ns", _inputs("later"))  # prunes the first batch
            with pytest.raises(Unavailable, match="pruned from the feed"):
                await asyncio.wait_for(subscription.next_events(), 10)
        await hub.close()

    asyncio.run(scenario())


def test_closing_the_hub_ends_subscriptions_after_what_they_had_queued() -> None:
    async def scenario() -> None:
        store = MemoryEventStore(system_clock)
        hub = EventHub(store)
        async with hub.subscribe("ns", EventFilter()) as subscription:
            hub.committed("ns", await store.insert_events("ns", _inputs("queued")))
            await hub.close()
            assert await _next_ids(subscription) == ["queued"]
            with pytest.raises(Unavailable, match="shutting down"):
                await subscription.next_events()
        with pytest.raises(Unavailable, match="shutting down"):
            async with hub.subscribe("ns", EventFilter()):
                pass

    asyncio.run(scenario())


def test_the_feed_is_watched_only_while_someone_follows_and_a_little_after() -> None:
    async def scenario() -> None:
        store = WatchedStore(system_clock)
        hub = EventHub(store, linger=0.05)
        for round_ in range(2):  # and again, once the first follower has gone
            async with hub.subscribe("ns", EventFilter()) as subscription:
                await store.insert_events("ns", _inputs(f"e{round_}"))
                await _next_ids(subscription)
                assert store.watching == 1
            await asyncio.wait_for(store.unwatched.wait(), 10)
            assert store.watching == 0
        await hub.close()

    asyncio.run(scenario())


def test_a_commit_noted_after_the_last_subscriber_left_is_ignored() -> None:
    """SQLite's watch says only "the file changed" (namespace None); it may do so once nobody follows."""

    async def scenario() -> None:
        store = WatchedStore(system_clock)
        hub = EventHub(store, linger=5)
        async with hub.subscribe("ns", EventFilter()) as subscription:
            await store.insert_events("ns", _inputs("e1"))
            await _next_ids(subscription)
        with structlog.testing.capture_logs() as logs:
            hub._on_commit(None, 0)  # as the watch reports a change it polled
            for _ in range(10):
                await asyncio.sleep(0)
        assert [entry["event"] for entry in logs] == []
        async with hub.subscribe("ns", EventFilter()) as subscription:  # the follower still serves
            await store.insert_events("ns", _inputs("e2"))
            assert await _next_ids(subscription) == ["e2"]
        await hub.close()

    asyncio.run(scenario())


def test_a_store_whose_guessed_heads_are_stale_links_again_in_the_transaction(tmp_path: Path) -> None:
    # Two stores on one SQLite file, as two daemons: each links a batch ahead after the heads it committed
    # last, and must find out in the transaction that the other one moved the session's head.
    async def scenario() -> list[Event]:
        first, second = (SqliteBackend(tmp_path / "stord.db", options=SqliteOptions()) for _ in range(2))
        await first.open()
        await second.open()
        try:
            one, other = first.events(), second.events()
            stored = (await one.insert_events("ns", [_input("e1", 1)])).stored
            stored += (await other.insert_events("ns", [_input("e2", 2)])).stored
            stored += (await one.insert_events("ns", [_input("e3", 3)])).stored  # guessed after e1
            claimed = dataclasses.replace(_input("e4", 4), claims_prev_hash=True, prev_hash=stored[-1].hash)
            stored += (await other.insert_events("ns", [claimed])).stored  # guessed after e2: refused ahead
            verification = await one.verify_chain("ns", "s1")
            assert verification is not None
            assert (verification.valid, verification.checked_events) == (True, 4)
            return stored
        finally:
            await first.close()
            await second.close()

    stored = asyncio.run(scenario())
    assert [(event.id, event.chain_index) for event in stored] == [("e1", 0), ("e2", 1), ("e3", 2), ("e4", 3)]
    assert [event.prev_hash for event in stored[1:]] == [event.hash for event in stored[:-1]]
