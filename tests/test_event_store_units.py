"""Event store parts below the gRPC API: canonical JSON, the daily retention pass, TailEvents queues."""

from __future__ import annotations

import asyncio
import json
import random
import struct

import pytest

from stord.server.backends.memory import MemoryBackend
from stord.server.backends.redis import RedisBackend
from stord.server.config import RedisOptions
from stord.server.event_chain import JsonValue, canonical_json, format_timestamp
from stord.server.event_model import payload_facts
from stord.server.event_retention import retain_events_daily
from stord.server.ports import Event, EventFilter, EventInput, EventType, Severity
from stord.server.services._event_tail import EventHub, SubscriberDropped
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


def _event(event_id: str, session_id: str = "s1") -> Event:
    return Event(event_id, 0, session_id, "a1", EventType.CUSTOM, Severity.INFO, "{}", "{}", None, "h", 0)


def test_a_subscriber_gets_matching_events_and_a_slow_one_is_dropped() -> None:
    async def scenario() -> None:
        hub = EventHub(capacity=3)
        with (
            hub.subscribe("ns", EventFilter(session_id="s1")) as fast,
            hub.subscribe("ns", EventFilter()) as slow,
        ):
            hub.publish("ns", [_event("e1"), _event("x", "s2")])
            hub.publish("other", [_event("elsewhere")])
            assert [event.id for event in await fast.next_events()] == ["e1"]
            hub.publish("ns", [_event("e2"), _event("e3")])  # slow now has 4 queued: over its capacity
            assert [event.id for event in await fast.next_events()] == ["e2", "e3"]
            with pytest.raises(SubscriberDropped, match="more than 3 events behind"):
                await slow.next_events()
        hub.publish("ns", [_event("after")])  # no subscriber left: nothing is kept

    asyncio.run(scenario())
