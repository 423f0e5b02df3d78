"""GetAnalytics and payload search against oracles computed here, on every backend, retention included.

The SQL backends answer analytics from hourly rollups and search through a trigram index; their answers
must stay those of a scan of the events: the oracles below are that scan, over the events each test
inserted itself (seeded random data, so a failure repeats).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from stord.client import Client, make_event
from tests.conftest import SharedDaemon

UTC = datetime.UTC
HOUR_MS = 3_600_000
WEEK_ORIGIN_MS = -3 * 24 * HOUR_MS
"""Monday 1969-12-29 00:00 UTC: ISO weeks start on Mondays."""
WIDTHS = {"hour": HOUR_MS, "day": 24 * HOUR_MS, "week": 7 * 24 * HOUR_MS}

TYPES = [
    "session_started", "session_ended", "tool_call", "tool_response", "tool_error", "approval_requested",
    "approval_granted", "approval_denied", "approval_expired", "form_submitted", "form_completed",
    "form_expired", "cost_tracked", "alert_triggered", "alert_resolved", "custom",
]  # fmt: skip
COMMON_TYPES = ["tool_call", "tool_response", "tool_response", "cost_tracked", "tool_error", "custom"]
SEVERITIES = ["debug", "info", "info", "warn", "error", "critical"]


@dataclasses.dataclass(frozen=True)
class Sent:
    """What the oracle knows of an inserted event."""

    id: str
    timestamp: int
    session_id: str
    agent_id: str
    event_type: str
    severity: str
    payload: dict[str, Any]


@pytest.fixture
def client(database_served: SharedDaemon) -> Iterator[Client]:
    with database_served.client(f"an-{uuid.uuid4().hex[:12]}") as client:
        yield client


def moment(milliseconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(milliseconds / 1000, UTC)


def insert(client: Client, events: Sequence[Sent]) -> None:
    for start in range(0, len(events), 100):
        client.events.insert(
            [
                make_event(
                    sent.session_id,
                    sent.agent_id,
                    sent.event_type,
                    severity=sent.severity,
                    payload=sent.payload,
                    event_id=sent.id,
                    at=moment(sent.timestamp),
                )
                for sent in events[start : start + 100]
            ]
        )


# Analytics -----------------------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def bucket_of(timestamp: int, granularity: str) -> int:
    origin = WEEK_ORIGIN_MS if granularity == "week" else 0
    return timestamp - (timestamp - origin) % WIDTHS[granularity]


def figures_of(events: Sequence[Sent]) -> tuple[int, int, int, float, float, int]:
    """The figures of DESIGN 4.4 over `events`, as the original defines them."""
    latencies = [
        latency
        for sent in events
        if sent.event_type == "tool_response"
        and (latency := number(sent.payload.get("durationMs"))) is not None
    ]
    costs = [
        cost
        for sent in events
        if sent.event_type == "cost_tracked" and (cost := number(sent.payload.get("costUsd"))) is not None
    ]
    return (
        len(events),
        sum(sent.event_type == "tool_call" for sent in events),
        sum(sent.severity in ("error", "critical") or sent.event_type == "tool_error" for sent in events),
        math.fsum(latencies) / len(latencies) if latencies else 0.0,
        math.fsum(costs),
        len({sent.session_id for sent in events}),
    )


def oracle(
    events: Sequence[Sent], from_ms: int, to_ms: int, granularity: str, agent_id: str | None
) -> tuple[list[tuple[int, tuple[int, int, int, float, float, int]]], tuple[Any, ...], int]:
    chosen = [
        sent
        for sent in events
        if from_ms <= sent.timestamp <= to_ms and (agent_id is None or sent.agent_id == agent_id)
    ]
    buckets: dict[int, list[Sent]] = {}
    for sent in chosen:
        buckets.setdefault(bucket_of(sent.timestamp, granularity), []).append(sent)
    return (
        [(start, figures_of(buckets[start])) for start in sorted(buckets)],
        figures_of(chosen),
        len({sent.agent_id for sent in chosen}),
    )


def figures(message: Any) -> tuple[Any, ...]:
    return (
        message.event_count,
        message.tool_call_count,
        message.error_count,
        pytest.approx(message.avg_latency_ms, rel=1e-9, abs=1e-9),
        pytest.approx(message.total_cost_usd, rel=1e-9, abs=1e-9),
        message.unique_sessions,
    )


def answer(
    client: Client, from_ms: int, to_ms: int, granularity: str, agent_id: str | None
) -> tuple[list[tuple[int, tuple[Any, ...]]], tuple[Any, ...], int]:
    result = client.events.analytics(
        from_time=moment(from_ms), to_time=moment(to_ms), granularity=granularity, agent_id=agent_id
    )
    buckets = [
        (bucket.start_time.seconds * 1000 + bucket.start_time.nanos // 1_000_000, figures(bucket))
        for bucket in result.buckets
    ]
    return buckets, figures(result.totals), result.totals.unique_agents


def random_events(rng: random.Random, now_ms: int, count: int) -> list[Sent]:
    """Events over the 12 days before `now_ms`, sessions of a few hours, agents shared by sessions."""
    events: list[Sent] = []
    sessions = [
        (f"s{index}", f"a{rng.randrange(6)}", rng.randrange(now_ms - 12 * 24 * HOUR_MS, now_ms))
        for index in range(40)
    ]
    for index in range(count):
        session_id, agent_id, start = rng.choice(sessions)
        event_type = rng.choice(COMMON_TYPES) if rng.random() < 0.8 else rng.choice(TYPES)
        payload: dict[str, Any] = {"note": f"evt-{index:04d}", "nested": {"step": rng.randrange(100)}}
        if rng.random() < 0.9:  # sometimes a number, sometimes not: only numbers count
            payload["durationMs"] = rng.choice([rng.randrange(1, 5000) / 8, "slow", True, rng.randrange(900)])
        if rng.random() < 0.9:
            payload["costUsd"] = rng.choice([rng.randrange(1, 10_000) / 1024, "free", rng.randrange(3)])
        events.append(
            Sent(
                id=f"e{index:05d}",
                timestamp=min(now_ms, start + rng.randrange(0, 5 * HOUR_MS)),
                session_id=session_id,
                agent_id=agent_id if rng.random() < 0.95 else f"a{rng.randrange(6)}",
                event_type=event_type,
                severity=rng.choice(SEVERITIES),
                payload=payload,
            )
        )
    return events


def ranges(rng: random.Random, events: Sequence[Sent]) -> list[tuple[int, int]]:
    """Whole and partial ranges: aligned on hours and days, off by milliseconds, within one hour."""
    low = min(sent.timestamp for sent in events)
    high = max(sent.timestamp for sent in events)
    day = 24 * HOUR_MS
    chosen = [
        (low, high),
        (low - low % day, high - high % day + day - 1),
        (low - low % HOUR_MS + HOUR_MS, high - high % HOUR_MS - 1),
    ]
    for _ in range(6):
        start = rng.randrange(low - HOUR_MS, high)
        chosen.append((start, min(high + HOUR_MS, start + rng.randrange(1, 6 * day))))
    start = rng.choice(events).timestamp
    chosen.append((start - rng.randrange(HOUR_MS // 2), start + rng.randrange(HOUR_MS // 2)))  # one hour
    chosen.append((start, start))  # one millisecond
    return chosen


def check_analytics(client: Client, rng: random.Random, events: Sequence[Sent]) -> None:
    agents = sorted({sent.agent_id for sent in events})
    for from_ms, to_ms in ranges(rng, events):
        for granularity in ("hour", "day", "week"):
            for agent_id in (None, rng.choice(agents)):
                expected = oracle(events, from_ms, to_ms, granularity, agent_id)
                got = answer(client, from_ms, to_ms, granularity, agent_id)
                assert got == expected, (from_ms, to_ms, granularity, agent_id)


@pytest.mark.parametrize("seed", [1, 2])
def test_analytics_equal_a_scan_of_the_events_before_and_after_retention(
    client: Client, database_served: SharedDaemon, seed: int
) -> None:
    rng = random.Random(seed)
    now_ms = int(database_served.clock() * 1000)
    events = random_events(rng, now_ms, 700)
    first, second = events[:350], events[350:]
    insert(client, first)
    check_analytics(client, rng, first)
    insert(client, second)  # later batches add to hours that have rollups already
    check_analytics(client, rng, events)

    result = client.events.apply_retention(6)  # a cutoff in the middle of the data, off the hour
    cutoff = result.cutoff_time.seconds * 1000 + result.cutoff_time.nanos // 1_000_000
    kept = [sent for sent in events if sent.timestamp > cutoff]
    assert result.deleted_events == len(events) - len(kept) > 0
    assert kept
    check_analytics(client, rng, kept)
    gone = next(sent for sent in events if sent.timestamp <= cutoff)
    assert search_ids(client, gone.payload["note"]) == set()  # the search index forgot it
    assert search_ids(client, kept[0].payload["note"]) == {kept[0].id}

    later = random_events(rng, now_ms, 100)  # ingest after retention, into corrected hours too
    later = [dataclasses.replace(sent, id=f"late-{sent.id}") for sent in later if sent.timestamp > cutoff]
    insert(client, later)
    check_analytics(client, rng, kept + later)


def test_analytics_of_a_namespace_without_events_are_empty(client: Client) -> None:
    got = answer(client, 0, 10 * HOUR_MS, "hour", None)
    assert got == ([], (0, 0, 0, 0.0, 0.0, 0), 0)


# Payload search ------------------------------------------------------------------------------------------


def canonical(payload: dict[str, Any]) -> str:
    """The canonical JSON text search looks in (strings, integers and nesting only, ASCII keys)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def ascii_folded(text: str) -> str:
    return text.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def search_ids(client: Client, text: str) -> set[str]:
    page = client.events.query(search=text, page_size=500)
    assert page.total == len(page.events)
    return {stored.id for stored in page.events}


PAYLOAD_TEXTS = [
    "100% sure", "50%_off", "a_b", "a%b", "back\\slash", "C:\\Temp\\x", "Search_Web", "SEARCH web", "école",
    "École", "ÉCOLE", "naïve", "NAÏVE", "straße", "STRASSE", "日本語のテキスト", "emoji 🎉 party",
    "quote \"q\"", "tab\tand newline\n", "Kelvin \u212a", "plain words", "xyz", "XYZ", "ab", "a",
]  # fmt: skip
SEARCHES = [
    "%", "_", "\\", "a", "A", "ab", "é", "É", "🎉", "\"", "%_", "100%", "0% s", "%_o", "a_b", "a%b", "_b",
    "k\\s", "\\\\", "C:\\T", "search_web", "SEARCH_WEB", "search web", "earch", "école", "ÉCOLE", "éCOLE",
    "École", "naïve", "NAÏVE", "NAïVE", "straße", "strasse", "日本語", "のテキ", "🎉 pa", "\"q\"", "\\\"q",
    "\\t", "\\n", "kelvin \u212a", "kelvin k", "deep-needle", "DEEP-NEEDLE", "needle", "\"deep\":", "[1,",
    "\"list\":[\"", "xyz", "xyZ", "nothing here", "words", "ords\"", "\"", "\u212a", "", "a_%\\",
]  # fmt: skip


def search_payload(rng: random.Random, index: int) -> dict[str, Any]:
    text = rng.choice(PAYLOAD_TEXTS)
    shapes: list[dict[str, Any]] = [
        {"text": text},
        {"outer": {"inner": {"text": text}}, "n": index},
        {"list": [index, {"deep": text}, ["x", text]]},
        {"Text": text.upper(), "other": rng.choice(PAYLOAD_TEXTS)},
        {"deep": {"deeper": {"deepest": ["deep-needle" if rng.random() < 0.3 else "hay", text]}}},
    ]
    return rng.choice(shapes)


def test_search_equals_a_literal_ascii_folding_scan(client: Client, database_served: SharedDaemon) -> None:
    rng = random.Random(7)
    now_ms = int(database_served.clock() * 1000)
    events = [
        Sent(f"p{index:03d}", now_ms - index * 1000, f"s{index % 7}", "a1", "custom", "info", payload)
        for index in range(240)
        for payload in [search_payload(rng, index)]
    ]
    insert(client, events)
    texts = {sent.id: ascii_folded(canonical(sent.payload)) for sent in events}
    for search in SEARCHES:
        if not search:
            continue  # empty selects every event: no search at all
        expected = {event_id for event_id, text in texts.items() if ascii_folded(search) in text}
        assert search_ids(client, search) == expected, search
    assert search_ids(client, "deep-needle")  # the data holds each kind of match
    assert search_ids(client, "école") != search_ids(client, "École")


def test_search_combines_with_the_other_filters(client: Client, database_served: SharedDaemon) -> None:
    now_ms = int(database_served.clock() * 1000)
    events = [
        Sent(f"c{index:03d}", now_ms - index * 60_000, f"s{index % 3}", f"a{index % 2}", "tool_call", "info",
             {"args": {"query": f"needle-{index % 5}"}})
        for index in range(60)
    ]  # fmt: skip
    insert(client, events)
    page = client.events.query(
        search="NEEDLE-3",
        session_id="s0",
        agent_id="a1",
        from_time=moment(now_ms - 40 * 60_000),
        page_size=500,
    )
    expected = [
        sent.id
        for sent in events
        if sent.payload["args"]["query"] == "needle-3"
        and sent.session_id == "s0"
        and sent.agent_id == "a1"
        and sent.timestamp >= now_ms - 40 * 60_000
    ]
    assert [stored.id for stored in page.events] == expected  # newest first
    assert page.total == len(expected) > 0
    assert client.events.count(search="needle-3", agent_id="a0") == sum(
        sent.payload["args"]["query"] == "needle-3" and sent.agent_id == "a0" for sent in events
    )
