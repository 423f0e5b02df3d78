"""The event store contract (DESIGN 4.4) through the real gRPC API and client, on every backend serving it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import itertools
import json
import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import (
    AlreadyExists,
    AsyncClient,
    AsyncEventIngestor,
    Client,
    EventIngestor,
    FailedPrecondition,
    IngestProgress,
    InvalidArgument,
    NotFound,
    Unimplemented,
    make_event,
)
from stord.client._events import Events
from stord.server.backends.memory._events import MemoryEventStore
from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc
from tests.conftest import SharedDaemon

UTC = datetime.UTC
MONDAY = datetime.datetime(2025, 1, 6, tzinfo=UTC)
"""A Monday at midnight UTC: the start of an hour, a day and an ISO week."""


@dataclasses.dataclass
class Store:
    """A client in a namespace of its own on a daemon of the backend under test."""

    served: SharedDaemon
    namespace: str
    client: Client

    @property
    def events(self) -> Events:
        return self.client.events


@pytest.fixture
def store(database_served: SharedDaemon) -> Iterator[Store]:
    namespace = f"ev-{uuid.uuid4().hex[:12]}"
    with database_served.client(namespace) as client:
        yield Store(database_served, namespace, client)


def at(hours: float = 0, *, days: float = 0) -> datetime.datetime:
    return MONDAY + datetime.timedelta(days=days, hours=hours)


def timestamp(moment: datetime.datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def event(
    session: str = "s1",
    agent: str = "a1",
    kind: str = "custom",
    *,
    severity: str = "info",
    payload: dict[str, Any] | None = None,
    when: datetime.datetime | None = None,
    **extra: Any,
) -> pb.Event:
    return make_event(session, agent, kind, severity=severity, payload=payload, at=when, **extra)


def canonical(value: Any) -> str:
    """Canonical JSON for the plain values these tests use (no floats needing JavaScript's layout)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plain(value: Any) -> Any:
    """A Struct's JSON with integral numbers as integers, as canonical JSON writes them."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def expected_hash(stored: pb.Event, prev_hash: str | None) -> str:
    document = {
        "v": 2,
        "id": stored.id,
        "timestamp": stored.timestamp.ToDatetime(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "sessionId": stored.session_id,
        "agentId": stored.agent_id,
        "eventType": pb.EventType.Name(stored.event_type).removeprefix("EVENT_TYPE_").lower(),
        "severity": pb.Severity.Name(stored.severity).removeprefix("SEVERITY_").lower(),
        "payload": plain(json_format.MessageToDict(stored.payload)),
        "metadata": plain(json_format.MessageToDict(stored.metadata)),
        "prevHash": prev_hash,
    }
    return hashlib.sha256(canonical(document).encode()).hexdigest()


def ids(events: Any) -> list[str]:
    return [stored.id for stored in events]


# Storing and reading events ------------------------------------------------------------------------------


def test_insert_then_get_returns_the_event_as_stored(store: Store) -> None:
    payload = {"toolName": "search", "arguments": {"q": "café", "n": 3}, "ok": True, "none": None}
    sent = event(
        "s1", "a1", "tool_call", severity="warn", payload=payload, when=at(10.5), event_id="e-1",
        metadata={"trace": "t-9"},
    )  # fmt: skip
    response = store.events.insert([sent])
    assert (response.accepted, response.duplicates) == (1, 0)
    got = store.events.get("e-1")
    assert got == response.events[0]
    assert (got.session_id, got.agent_id, got.event_type, got.severity) == (
        "s1",
        "a1",
        pb.EVENT_TYPE_TOOL_CALL,
        pb.SEVERITY_WARN,
    )
    assert got.timestamp.ToDatetime(UTC) == at(10.5)
    assert plain(json_format.MessageToDict(got.payload)) == payload
    assert json_format.MessageToDict(got.metadata) == {"trace": "t-9"}
    assert not got.HasField("prev_hash")
    assert got.chain_index == 0
    assert got.hash == expected_hash(got, None)
    with pytest.raises(NotFound, match="missing"):
        store.events.get("missing")


def test_the_server_fills_id_and_time_and_keeps_milliseconds(store: Store) -> None:
    now = store.served.clock()
    first = store.events.insert([event()]).events[0]
    assert len(first.id) == 26  # a ULID
    assert first.timestamp.ToMilliseconds() == int(now * 1000)
    precise = event(when=at(0) + datetime.timedelta(microseconds=123_456))
    assert store.events.insert([precise]).events[0].timestamp.ToDatetime(UTC) == at(0) + datetime.timedelta(
        milliseconds=123
    )


def test_the_chain_links_each_session_in_acceptance_order(store: Store) -> None:
    stored = store.events.insert(
        [event("s1", when=at(2)), event("s2"), event("s1", when=at(1)), event("s1", when=at(3))]
    ).events
    s1 = [item for item in stored if item.session_id == "s1"]
    assert [item.chain_index for item in s1] == [0, 1, 2]
    assert not s1[0].HasField("prev_hash")
    for previous, current in itertools.pairwise(s1):
        assert current.prev_hash == previous.hash
        assert current.hash == expected_hash(current, previous.hash)
    later = store.events.insert([event("s1")]).events[0]
    assert (later.chain_index, later.prev_hash) == (3, s1[-1].hash)
    assert stored[1].chain_index == 0  # s2 has its own chain


def test_a_claimed_prev_hash_or_hash_is_checked(store: Store) -> None:
    first = store.events.insert([event(event_id="e1", prev_hash="")]).events[0]
    second = event(event_id="e2", prev_hash=first.hash)
    second_hash = expected_hash(store.events.insert([second]).events[0], first.hash)
    claimed = event(event_id="e3", when=at(1), prev_hash=second_hash)
    good = store.events.insert([claimed]).events[0]
    assert good.prev_hash == second_hash
    with pytest.raises(FailedPrecondition, match="event e4: prev_hash"):
        store.events.insert([event(event_id="e4", prev_hash=first.hash)])
    with pytest.raises(FailedPrecondition, match="event e5: prev_hash"):
        store.events.insert([event(event_id="e5", prev_hash="")])
    with pytest.raises(FailedPrecondition, match="event e6: hash"):
        store.events.insert([event("s9", event_id="e6", event_hash="0" * 64)])
    fresh = event("s8", "a1", "custom", event_id="e7", when=at(0), prev_hash="")
    right = expected_hash(pb.Event(id="e7", session_id="s8", agent_id="a1", event_type=pb.EVENT_TYPE_CUSTOM,
                                   severity=pb.SEVERITY_INFO, timestamp=fresh.timestamp), None)  # fmt: skip
    fresh.hash = right
    assert store.events.insert([fresh]).events[0].hash == right
    assert store.events.count() == 4


def test_a_batch_that_breaks_a_chain_stores_nothing(store: Store) -> None:
    store.events.insert([event(event_id="e1")])
    batch = [event("s2", event_id="ok-1"), event(event_id="bad", prev_hash="f" * 64), event(event_id="ok-2")]
    with pytest.raises(FailedPrecondition, match="event bad"):
        store.events.insert(batch)
    assert store.events.count() == 1
    with pytest.raises(NotFound):
        store.events.get_session("s2")
    assert store.events.verify_chain("s1").valid


def test_resending_stores_nothing_twice(store: Store) -> None:
    batch = [event(event_id=f"e{index}") for index in range(5)]
    assert store.events.insert(batch).accepted == 5
    again = store.events.insert([*batch[3:], event(event_id="e5"), event(event_id="e5")])
    assert (again.accepted, again.duplicates) == (1, 3)
    assert ids(again.events) == ["e5"]
    assert again.events[0].chain_index == 5
    assert store.events.count() == 6
    assert store.events.get_session("s1").event_count == 6


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda sent: setattr(sent, "session_id", ""), "events[1].session_id"),
        (lambda sent: setattr(sent, "agent_id", "x" * 300), "events[1].agent_id"),
        (lambda sent: setattr(sent, "event_type", pb.EVENT_TYPE_UNSPECIFIED), "events[1].event_type"),
        (lambda sent: setattr(sent, "severity", 99), "events[1].severity"),
        (lambda sent: sent.payload.update({"x": float("nan")}), "events[1].payload"),
        (lambda sent: setattr(sent, "prev_hash", "not-a-hash"), "events[1].prev_hash"),
        (lambda sent: setattr(sent, "hash", "ABC"), "events[1].hash"),
        (lambda sent: setattr(sent, "id", "a\x00b"), "events[1].id"),
        (lambda sent: setattr(sent.timestamp, "seconds", -70_000_000_000), "events[1].timestamp"),
    ],
)
def test_bad_events_are_refused_naming_the_field(store: Store, mutate: Any, field: str) -> None:
    bad = event()
    mutate(bad)
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        store.events.insert([event("s2"), bad])
    assert store.events.count() == 0


def test_json_text_payloads_are_stored_and_hashed_as_the_equal_struct(store: Store) -> None:
    payload = {"b": [1, 2.5, 1.0, -0.0, 1e-7, 2**60], "a": 'é "quoted"\n', "nested": {"x": None, "y": True}}
    metadata = {"trace": "t-1", "n": 3}
    when = at(1)
    # The same event (id, session, time) in two namespaces: once with Structs, once with JSON text.
    as_struct = store.events.insert([event(payload=payload, metadata=metadata, event_id="e", when=when)])
    with Client(store.served.target, namespace=f"{store.namespace}-text") as other:
        as_text = other.events.insert(
            [event(payload=payload, metadata=metadata, event_id="e", when=when, json_text=True)]
        )
    assert as_text.events[0] == as_struct.events[0]  # payload, metadata and hash alike
    both = event(payload=payload, json_text=True)
    both.payload.update({"x": 1})
    with pytest.raises(InvalidArgument, match=r"events\[0\]\.payload_json: cannot be combined with payload"):
        store.events.insert([both])
    not_an_object = event()
    not_an_object.metadata_json = "[]"
    with pytest.raises(InvalidArgument, match=r"events\[0\]\.metadata_json: must be a JSON object"):
        store.events.insert([not_an_object])
    assert store.events.count() == 1


def test_batches_hold_one_to_a_thousand_events(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="events: must not be empty"):
        store.events.insert([])
    with pytest.raises(InvalidArgument, match="at most 1000"):
        store.events.insert([event() for _ in range(1001)])
    assert store.events.insert([event() for _ in range(1000)]).accepted == 1000


def test_namespaces_do_not_see_each_other(store: Store) -> None:
    store.events.insert([event(event_id="mine")])
    with store.served.client() as other:
        assert other.events.count() == 0
        with pytest.raises(NotFound):
            other.events.get("mine")
        other.events.insert([event(event_id="mine")])  # the same id is free there
        assert other.events.get("mine").chain_index == 0


# IngestEvents --------------------------------------------------------------------------------------------


def ingest(store: Store, batches: list[tuple[int, list[pb.Event]]]) -> list[pb.IngestEventsResponse]:
    with grpc.insecure_channel(store.served.target) as channel:
        stub = events_pb2_grpc.EventStoreServiceStub(channel)
        requests = (pb.IngestEventsRequest(sequence=sequence, events=batch) for sequence, batch in batches)
        return list(stub.IngestEvents(requests, metadata=(("stord-namespace", store.namespace),), timeout=30))


def test_ingest_acknowledges_each_batch_in_order_and_resends_are_idempotent(store: Store) -> None:
    batches = [(sequence, [event(f"s{sequence % 2}", event_id=f"b{sequence}-{i}") for i in range(50)])
               for sequence in range(10, 16)]  # fmt: skip
    acks = ingest(store, batches)
    assert [(ack.sequence, ack.accepted, ack.duplicates) for ack in acks] == [
        (sequence, 50, 0) for sequence in range(10, 16)
    ]
    resent = ingest(store, [(99, batches[2][1] + [event(event_id="new")])])
    assert [(ack.sequence, ack.accepted, ack.duplicates) for ack in resent] == [(99, 1, 50)]
    assert store.events.count() == 301
    assert store.events.verify_chain("s0").checked_events == 150


def test_ingest_ends_at_a_bad_batch_naming_it_and_keeps_the_ones_before(store: Store) -> None:
    good = [event(event_id="g1")]
    broken = [event(event_id="b1", prev_hash="a" * 64)]
    invalid = [event(session="")]
    with pytest.raises(grpc.RpcError) as failure:
        ingest(store, [(1, good), (2, broken), (3, [event(event_id="never")])])
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "batch sequence 2: event b1" in str(failure.value.details())
    with pytest.raises(grpc.RpcError) as failure:
        ingest(store, [(7, invalid)])
    assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].session_id" in str(failure.value.details())
    assert "batch sequence 7" in str(failure.value.details())
    assert ids(store.events.query().events) == ["g1"]


def test_concurrent_writers_to_one_session_keep_its_chain_intact(store: Store) -> None:
    def write(writer: int) -> None:
        with store.served.client(store.namespace) as client:
            for batch in range(10):
                client.events.insert([event("shared", event_id=f"w{writer}-{batch}-{i}") for i in range(20)])

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    verified = store.events.verify_chain("shared")
    assert (verified.valid, verified.checked_events, verified.reason) == (True, 600, "")
    assert store.events.get_session("shared").event_count == 600


def test_the_ingestor_batches_and_flush_waits_until_everything_is_stored(store: Store) -> None:
    seen: list[IngestProgress] = []
    with EventIngestor(
        store.served.target,
        namespace=store.namespace,
        batch_size=64,
        max_in_flight=2,
        on_progress=seen.append,
    ) as ingestor:
        ids_added = ingestor.add_many(event(f"s{index % 3}") for index in range(1000))
        ingestor.add(event("s0", event_id="given"))
        ingestor.flush()
        assert store.events.count() == 1001
        progress = ingestor.progress()
        assert (progress.added, progress.accepted, progress.duplicates, progress.pending_batches) == (
            1001,
            1001,
            0,
            0,
        )
        assert [item.pending_batches <= 2 for item in seen] == [True] * len(seen)
        with store.events.tail(session_id="s1") as tail:
            lone = ingestor.add(event("s1"))  # goes out after max_delay, with no flush
            assert ids(next(tail)) == [lone]
    assert len(set(ids_added)) == 1000
    assert store.events.count() == 1002
    for session in ("s0", "s1", "s2"):
        assert store.events.verify_chain(session).valid


def test_the_ingestor_stops_at_a_refused_batch(store: Store) -> None:
    ingestor = EventIngestor(store.served.target, namespace=store.namespace, batch_size=10)
    ingestor.add_many(event() for _ in range(10))
    ingestor.flush()
    ingestor.add(event(prev_hash="e" * 64))
    with pytest.raises(FailedPrecondition, match="batch sequence 2"):
        ingestor.flush()
    with pytest.raises(FailedPrecondition):
        ingestor.add(event())
    with pytest.raises(FailedPrecondition):
        ingestor.close()
    assert store.events.count() == 10


def test_the_async_ingestor_batches_acknowledges_and_flush_waits_until_everything_is_stored(
    store: Store,
) -> None:
    seen: list[IngestProgress] = []

    async def scenario() -> tuple[list[str], str, IngestProgress]:
        all_stored = asyncio.Event()

        def watch(progress: IngestProgress) -> None:
            seen.append(progress)
            if progress.accepted == 1002:
                all_stored.set()

        async with AsyncEventIngestor(
            store.served.target,
            namespace=store.namespace,
            batch_size=64,
            max_in_flight=2,
            on_progress=watch,
        ) as ingestor:
            ids_added = await ingestor.add_many(event(f"s{index % 3}") for index in range(1000))
            await ingestor.add(event("s0", event_id="given"))
            await ingestor.flush()
            flushed = ingestor.progress()
            assert store.events.count() == 1001
            lone = await ingestor.add(event("s1"))  # goes out after max_delay, with no flush
            async with asyncio.timeout(30):
                await all_stored.wait()
        return ids_added, lone, flushed

    ids_added, lone, flushed = asyncio.run(scenario())
    assert (flushed.added, flushed.accepted, flushed.duplicates, flushed.pending_batches) == (
        1001,
        1001,
        0,
        0,
    )
    assert [item.pending_batches <= 2 for item in seen] == [True] * len(seen)
    assert len(set(ids_added)) == 1000
    assert store.events.count() == 1002
    assert store.client.events.get(lone).id == lone
    for session in ("s0", "s1", "s2"):
        assert store.events.verify_chain(session).valid


def test_the_async_ingestor_stops_at_a_refused_batch(store: Store) -> None:
    async def scenario() -> None:
        ingestor = AsyncEventIngestor(store.served.target, namespace=store.namespace, batch_size=10)
        await ingestor.add_many(event() for _ in range(10))
        await ingestor.flush()
        await ingestor.add(event(prev_hash="e" * 64))
        with pytest.raises(FailedPrecondition, match="batch sequence 2"):
            await ingestor.flush()
        with pytest.raises(FailedPrecondition):
            await ingestor.add(event())
        with pytest.raises(FailedPrecondition):
            await ingestor.close()

    asyncio.run(scenario())
    assert store.events.count() == 10


# Queries -------------------------------------------------------------------------------------------------


@pytest.fixture
def sample(store: Store) -> Store:
    """Ten events over two sessions and agents, types and severities, one hour apart."""
    rows: list[tuple[str, str, str, str, dict[str, Any]]] = [
        ("s1", "a1", "session_started", "info", {"agentName": "Planner"}),
        ("s1", "a1", "tool_call", "info", {"toolName": "Search_Web"}),
        ("s1", "a1", "tool_response", "debug", {"result": "100% done", "durationMs": 120}),
        ("s1", "a1", "tool_error", "error", {"error": "Timeout in fetch_url"}),
        ("s2", "a2", "session_started", "info", {"agentName": "Coder", "tags": ["prod", "eu"]}),
        ("s2", "a2", "tool_call", "warn", {"toolName": "write_file"}),
        ("s2", "a2", "cost_tracked", "info", {"costUsd": 0.5, "model": "m"}),
        ("s2", "a2", "custom", "critical", {"note": "ÉCOLE naïve"}),
        ("s1", "a1", "cost_tracked", "info", {"costUsd": 0.25}),
        ("s1", "a1", "session_ended", "info", {"reason": "completed"}),
    ]
    store.events.insert(
        [
            event(
                session, agent, kind, severity=severity, payload=payload, when=at(hour), event_id=f"e{hour}"
            )
            for hour, (session, agent, kind, severity, payload) in enumerate(rows)
        ]
    )
    return store


def query_ids(store: Store, **arguments: Any) -> list[str]:
    return ids(store.events.query(page_size=100, **arguments).events)


def test_query_filters_alone_and_together(sample: Store) -> None:
    assert query_ids(sample) == [f"e{hour}" for hour in range(9, -1, -1)]
    assert query_ids(sample, session_id="s2") == ["e7", "e6", "e5", "e4"]
    assert query_ids(sample, agent_id="a1", order="asc") == ["e0", "e1", "e2", "e3", "e8", "e9"]
    assert query_ids(sample, event_types=["tool_call", "tool_error"]) == ["e5", "e3", "e1"]
    assert query_ids(sample, severities=["error", "critical"]) == ["e7", "e3"]
    assert query_ids(sample, from_time=at(2), to_time=at(4)) == ["e4", "e3", "e2"]  # both ends included
    assert query_ids(sample, from_time=at(8)) == ["e9", "e8"]
    assert query_ids(sample, to_time=at(0)) == ["e0"]
    assert query_ids(
        sample, agent_id="a1", event_types=["cost_tracked", "tool_call"], severities=["info"], from_time=at(2)
    ) == ["e8"]
    assert query_ids(sample, session_id="s1", search="fetch") == ["e3"]
    assert query_ids(sample, session_id="nobody") == []
    assert sample.events.count(agent_id="a2", severities=["info", "warn"]) == 3
    assert sample.events.count() == 10


def test_search_is_literal_and_folds_ascii_case_only(sample: Store) -> None:
    assert query_ids(sample, search="100%") == ["e2"]
    assert query_ids(sample, search="%") == ["e2"]
    assert query_ids(sample, search="search_web") == ["e1"]
    assert query_ids(sample, search="_") == ["e5", "e3", "e1"]
    assert query_ids(sample, search="h_w") == ["e1"]
    assert query_ids(sample, search="SEARCH") == ["e1"]
    assert query_ids(sample, search="école") == []  # É and é are different characters
    assert query_ids(sample, search="NAÏVE") == []
    assert query_ids(sample, search="naïve") == ["e7"]
    assert query_ids(sample, search='"costUsd":0.5') == ["e6"]


def test_query_pages_by_offset_or_token_with_total_and_has_more(sample: Store) -> None:
    first = sample.events.query(page_size=4)
    assert (ids(first.events), first.total, first.has_more) == (["e9", "e8", "e7", "e6"], 10, True)
    last = sample.events.query(page_size=4, offset=8)
    assert (ids(last.events), last.total, last.has_more, last.next_page_token) == (
        ["e1", "e0"],
        10,
        False,
        "",
    )
    walked, token = [], ""
    while True:
        page = sample.events.query(order="asc", page_size=3, page_token=token, agent_id="a1")
        assert page.total == 6
        walked += ids(page.events)
        token = page.next_page_token
        assert page.has_more == bool(token)
        if not token:
            break
    assert walked == ["e0", "e1", "e2", "e3", "e8", "e9"]
    with pytest.raises(InvalidArgument, match="page_token"):
        sample.events.query(
            order="desc", page_token=sample.events.query(order="asc", page_size=1).next_page_token
        )
    with pytest.raises(InvalidArgument, match="offset"):
        sample.events.query(offset=1, page_token=first.next_page_token)
    with pytest.raises(InvalidArgument, match="page_size"):
        sample.events.query(page_size=-1)
    assert len(sample.events.query(page_size=10_000).events) == 10  # capped at 500


def test_query_validates_its_filter(store: Store) -> None:
    with pytest.raises(InvalidArgument, match=r"filter\.event_types\[0\]"):
        store.events.query(event_types=[0])
    with pytest.raises(InvalidArgument, match=r"filter\.search"):
        store.events.query(search="x" * 501)
    with pytest.raises(InvalidArgument, match="order"):
        store.client.events._call(
            store.client.events._stub.QueryEvents, pb.QueryEventsRequest(order=pb.SORT_ORDER_UNSPECIFIED)
        )


def test_timeline_is_ascending_and_pages(sample: Store) -> None:
    sample.events.insert([event("s1", when=at(-1), event_id="early")])
    assert ids(sample.events.timeline("s1", page_size=2)) == ["early", "e0", "e1", "e2", "e3", "e8", "e9"]
    assert list(sample.events.timeline("nobody")) == []


# Sessions and agents -------------------------------------------------------------------------------------


def test_sessions_are_derived_from_their_events(sample: Store) -> None:
    s1 = sample.events.get_session("s1")
    assert (s1.agent_id, s1.agent_name, s1.status) == ("a1", "Planner", pb.SESSION_STATUS_COMPLETED)
    assert (s1.event_count, s1.tool_call_count, s1.error_count, s1.total_cost_usd) == (6, 1, 1, 0.25)
    assert (s1.start_time.ToDatetime(UTC), s1.end_time.ToDatetime(UTC)) == (at(0), at(9))
    s2 = sample.events.get_session("s2")
    assert (s2.status, list(s2.tags), s2.error_count, s2.total_cost_usd) == (
        pb.SESSION_STATUS_ACTIVE,
        ["prod", "eu"],
        1,
        0.5,
    )
    assert not s2.HasField("end_time")
    sample.events.insert([event("s2", "a2", "session_ended", payload={"reason": "error"}, when=at(20))])
    assert sample.events.get_session("s2").status == pb.SESSION_STATUS_ERROR
    sample.events.insert([event("s2", "a2", "tool_call", when=at(-5))])
    assert sample.events.get_session("s2").start_time.ToDatetime(UTC) == at(-5)


def test_query_sessions_filters_and_pages(sample: Store) -> None:
    sample.events.upsert_session("s3", agent_id="a1", start_time=at(30), tags=["eu"], status="error")

    def session_ids(**arguments: Any) -> list[str]:
        return [session.id for session in sample.events.query_sessions(**arguments).sessions]

    assert session_ids() == ["s3", "s2", "s1"]
    assert session_ids(agent_id="a1") == ["s3", "s1"]
    assert session_ids(statuses=["active", "completed"]) == ["s2", "s1"]
    assert session_ids(from_time=at(4), to_time=at(30)) == ["s3", "s2"]
    assert session_ids(tags=["eu", "nope"]) == ["s3", "s2"]
    assert session_ids(tags=["prod"], statuses=["active"]) == ["s2"]
    page = sample.events.query_sessions(page_size=2)
    assert (page.total, page.has_more, [s.id for s in page.sessions]) == (3, True, ["s3", "s2"])
    rest = sample.events.query_sessions(page_size=2, page_token=page.next_page_token)
    assert ([s.id for s in rest.sessions], rest.has_more, rest.next_page_token) == (["s1"], False, "")
    assert [s.id for s in sample.events.query_sessions(offset=2).sessions] == ["s1"]


def test_upsert_session_creates_and_changes_only_the_fields_given(store: Store) -> None:
    created = store.events.upsert_session("s1", agent_name="Bot")
    assert (created.agent_id, created.agent_name, created.status, created.event_count) == (
        "",
        "Bot",
        pb.SESSION_STATUS_ACTIVE,
        0,
    )
    assert created.start_time.ToMilliseconds() == int(store.served.clock() * 1000)
    store.events.insert([event("s1", "a9", "tool_call", when=at(1))])
    changed = store.events.upsert_session("s1", status="completed", end_time=at(2), tags=["x"])
    assert (changed.agent_name, changed.tool_call_count, changed.status, list(changed.tags)) == (
        "Bot",
        1,
        pb.SESSION_STATUS_COMPLETED,
        ["x"],
    )
    assert changed.end_time.ToDatetime(UTC) == at(2)
    assert changed == store.events.get_session("s1")
    with pytest.raises(NotFound):
        store.events.get_session("s404")
    with pytest.raises(InvalidArgument, match="update_mask"):
        store.client.events._call(  # an unknown field in the mask
            store.client.events._stub.UpsertSession,
            pb.UpsertSessionRequest(
                session=pb.Session(id="s1"), update_mask=FieldMask(paths=["event_count"])
            ),
        )
    with pytest.raises(InvalidArgument, match=r"session\.status"):
        store.events.upsert_session("s1", status=0)


def test_agents_are_derived_upserted_and_listed(sample: Store) -> None:
    a1 = sample.events.get_agent("a1")
    assert (a1.name, a1.session_count, a1.description) == ("Planner", 1, "")
    assert (a1.first_seen_time.ToDatetime(UTC), a1.last_seen_time.ToDatetime(UTC)) == (at(0), at(9))
    sample.events.insert([event("s9", "a3", when=at(1))])
    assert sample.events.get_agent("a3").name == "a3"
    updated = sample.events.upsert_agent("a1", description="plans things")
    assert (updated.name, updated.description, updated.session_count) == ("Planner", "plans things", 1)
    fresh = sample.events.upsert_agent("a0", name="Zero")
    assert (fresh.name, fresh.session_count) == ("Zero", 0)
    assert [agent.id for agent in sample.events.agents(page_size=2)] == ["a0", "a1", "a2", "a3"]
    with pytest.raises(NotFound):
        sample.events.get_agent("nobody")


# Analytics -----------------------------------------------------------------------------------------------


@pytest.fixture
def activity(store: Store) -> Store:
    rows: list[tuple[float, str, str, str, str, dict[str, Any]]] = [
        (-1, "s3", "a1", "custom", "info", {}),  # Sunday 23:00: the week before
        (10 + 5 / 60, "s1", "a1", "tool_call", "info", {}),
        (10 + 10 / 60, "s1", "a1", "tool_response", "info", {"durationMs": 100}),
        (10 + 20 / 60, "s1", "a1", "tool_error", "warn", {}),
        (10.5, "s2", "a2", "cost_tracked", "info", {"costUsd": 0.25}),
        (11, "s2", "a2", "tool_response", "info", {"durationMs": 300}),
        (11.5, "s2", "a2", "custom", "critical", {"durationMs": 999}),  # not a tool_response: no latency
        (33, "s1", "a1", "tool_call", "debug", {}),  # Tuesday 09:00
        (34, "s1", "a1", "tool_response", "info", {"durationMs": "slow"}),  # not a number: no latency
    ]
    store.events.insert(
        [
            event(session, agent, kind, severity=severity, payload=payload, when=at(hour))
            for hour, session, agent, kind, severity, payload in rows
        ]
    )
    return store


def figures(message: Any) -> tuple[Any, ...]:
    return (
        message.event_count,
        message.tool_call_count,
        message.error_count,
        message.avg_latency_ms,
        message.total_cost_usd,
        message.unique_sessions,
    )


def test_analytics_buckets_by_hour_with_totals(activity: Store) -> None:
    result = activity.events.analytics(from_time=at(-1), to_time=at(34), granularity="hour")
    assert [(bucket.start_time.ToDatetime(UTC), figures(bucket)) for bucket in result.buckets] == [
        (at(-1), (1, 0, 0, 0.0, 0.0, 1)),
        (at(10), (4, 1, 1, 100.0, 0.25, 2)),
        (at(11), (2, 0, 1, 300.0, 0.0, 1)),
        (at(33), (1, 1, 0, 0.0, 0.0, 1)),
        (at(34), (1, 0, 0, 0.0, 0.0, 1)),
    ]
    assert figures(result.totals) == (9, 2, 2, 200.0, 0.25, 3)
    assert result.totals.unique_agents == 2


def test_analytics_by_day_and_iso_week_and_agent(activity: Store) -> None:
    days = activity.events.analytics(from_time=at(-1), to_time=at(34), granularity="day")
    assert [(bucket.start_time.ToDatetime(UTC), figures(bucket)) for bucket in days.buckets] == [
        (at(-24), (1, 0, 0, 0.0, 0.0, 1)),
        (at(0), (6, 1, 2, 200.0, 0.25, 2)),
        (at(24), (2, 1, 0, 0.0, 0.0, 1)),
    ]
    weeks = activity.events.analytics(from_time=at(-1), to_time=at(34), granularity="week")
    assert [(bucket.start_time.ToDatetime(UTC), bucket.event_count) for bucket in weeks.buckets] == [
        (at(days=-7), 1),
        (at(0), 8),
    ]
    agent = activity.events.analytics(from_time=at(0), to_time=at(11), granularity="hour", agent_id="a2")
    assert figures(agent.totals) == (2, 0, 0, 300.0, 0.25, 1)  # the range's end is included; 11:30 is not
    assert agent.totals.unique_agents == 1
    empty = activity.events.analytics(from_time=at(100), to_time=at(200), granularity="day")
    assert (list(empty.buckets), figures(empty.totals), empty.totals.unique_agents) == (
        [],
        (0, 0, 0, 0, 0, 0),
        0,
    )


def test_analytics_validates_its_range(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="to_time"):
        store.events.analytics(from_time=at(2), to_time=at(1))
    with pytest.raises(InvalidArgument, match="granularity"):
        store.client.events._call(
            store.client.events._stub.GetAnalytics,
            pb.GetAnalyticsRequest(from_time=timestamp(at(0)), to_time=timestamp(at(1))),
        )


# Alert rules and history ---------------------------------------------------------------------------------


def rule(**fields: Any) -> pb.AlertRule:
    values: dict[str, Any] = {
        "name": "errors",
        "enabled": True,
        "condition": pb.ALERT_CONDITION_ERROR_RATE_EXCEEDS,
        "threshold": 0.1,
        "window_minutes": 15,
        "scope": pb.AlertScope(agent_id="a1", tags=["prod"]),
        "notify_channels": ["https://hooks.example/alerts"],
    }
    values.update(fields)
    return pb.AlertRule(**values)


def test_negative_zero_thresholds_read_back_as_answered(store: Store) -> None:
    """SQLite keeps -0.0 as 0: every backend answers 0, at creation and on every read."""
    created = store.events.create_alert_rule(rule(id="zero", threshold=-0.0))
    for found in (created, store.events.get_alert_rule("zero")):
        assert math.copysign(1, found.threshold) == 1


def test_alert_rules_crud(store: Store) -> None:
    created = store.events.create_alert_rule(rule(id="r1"))
    assert (created.id, created.name, created.scope.agent_id, list(created.scope.tags)) == (
        "r1",
        "errors",
        "a1",
        ["prod"],
    )
    assert created.create_time == created.update_time
    assert store.events.get_alert_rule("r1") == created
    made = store.events.create_alert_rule(rule(name="costly", condition=pb.ALERT_CONDITION_COST_EXCEEDS))
    assert len(made.id) == 26
    with pytest.raises(AlreadyExists):
        store.events.create_alert_rule(rule(id="r1"))
    store.served.clock.advance(60)
    updated = store.events.update_alert_rule(
        rule(id="r1", threshold=0.5, name="ignored"), fields=["threshold"]
    )
    assert (updated.name, updated.threshold, updated.window_minutes) == ("errors", 0.5, 15)
    assert updated.update_time.ToMilliseconds() - created.update_time.ToMilliseconds() == 60_000
    assert updated.create_time == created.create_time
    replaced = store.events.update_alert_rule(rule(id="r1", scope=None, notify_channels=[], enabled=False))
    assert (replaced.scope.agent_id, list(replaced.notify_channels), replaced.enabled) == ("", [], False)
    assert [item.id for item in store.events.alert_rules(page_size=1)] == sorted(["r1", made.id])
    store.events.delete_alert_rule("r1")
    with pytest.raises(NotFound):
        store.events.get_alert_rule("r1")
    with pytest.raises(NotFound):
        store.events.delete_alert_rule("r1")
    with pytest.raises(NotFound):
        store.events.update_alert_rule(rule(id="r1"))
    with pytest.raises(InvalidArgument, match=r"rule\.window_minutes"):
        store.events.create_alert_rule(rule(window_minutes=0))
    with pytest.raises(InvalidArgument, match=r"rule\.condition"):
        store.events.create_alert_rule(rule(condition=0))


def test_alert_history_records_and_pages(store: Store) -> None:
    store.events.create_alert_rule(rule(id="r1"))
    store.events.create_alert_rule(rule(id="r2"))
    for minute in range(5):
        store.events.record_alert(
            pb.AlertHistoryEntry(
                id=f"h{minute}",
                rule_id="r1" if minute % 2 else "r2",
                triggered_time=timestamp(at(minute / 60)),
                current_value=minute,
                threshold=0.1,
                message=f"fired {minute}",
            )
        )
    made = store.events.record_alert(pb.AlertHistoryEntry(rule_id="r1", current_value=1, threshold=1))
    assert made.triggered_time.ToMilliseconds() == int(store.served.clock() * 1000)
    page = store.events.alert_history(rule_id="r1", page_size=2)
    assert ([entry.id for entry in page.entries], page.total, page.has_more) == ([made.id, "h3"], 3, True)
    rest = store.events.alert_history(rule_id="r1", page_token=page.next_page_token)
    assert [entry.id for entry in rest.entries] == ["h1"]
    assert store.events.alert_history(offset=4).total == 6
    with pytest.raises(NotFound):
        store.events.record_alert(pb.AlertHistoryEntry(rule_id="nobody"))
    store.events.delete_alert_rule("r2")
    assert store.events.alert_history(rule_id="r2").total == 3  # history outlives its rule


# Retention and stats -------------------------------------------------------------------------------------


def test_retention_deletes_old_events_then_empty_sessions(store: Store) -> None:
    now = datetime.datetime.fromtimestamp(store.served.clock(), UTC)
    store.events.insert(
        [
            event("old", when=now - datetime.timedelta(days=10)),
            event("mixed", when=now - datetime.timedelta(days=9)),
            event("mixed", when=now - datetime.timedelta(days=1)),
            event("new", when=now),
        ]
    )
    store.events.upsert_session("empty-old", agent_id="a1", start_time=now - datetime.timedelta(days=30))
    store.events.upsert_session("empty-new", agent_id="a1", start_time=now)
    result = store.events.apply_retention(5)
    assert (result.deleted_events, result.deleted_sessions) == (2, 2)
    assert result.cutoff_time.ToDatetime(UTC) == (now - datetime.timedelta(days=5)).replace(
        microsecond=now.microsecond // 1000 * 1000
    )
    assert sorted(session.id for session in store.events.query_sessions().sessions) == [
        "empty-new",
        "mixed",
        "new",
    ]
    assert store.events.count() == 2
    mixed = store.events.verify_chain("mixed")
    assert (mixed.valid, mixed.checked_events, mixed.first_chain_index) == (True, 1, 1)
    assert store.events.get_session("mixed").event_count == 2  # counters count what was ever stored
    with pytest.raises(InvalidArgument, match="max_age_days"):
        store.events.apply_retention(0)


def test_stats_count_the_namespace(sample: Store) -> None:
    stats = sample.events.stats()
    assert (stats.total_events, stats.total_sessions, stats.total_agents) == (10, 2, 2)
    assert (stats.oldest_event_time.ToDatetime(UTC), stats.newest_event_time.ToDatetime(UTC)) == (
        at(0),
        at(9),
    )
    assert stats.storage_size_bytes > 0
    with sample.served.client() as other:
        empty = other.events.stats()
        assert (empty.total_events, empty.HasField("oldest_event_time")) == (0, False)


# Verification --------------------------------------------------------------------------------------------


def tamper(store: Store, event_id: str, payload: str) -> None:
    """Change an event's stored payload behind the store's back, as an attacker with disk access would."""
    backend = store.served.thread.daemon._backends[0]
    if isinstance(backend, SqliteBackend):
        store.served.thread.run(
            backend.engine.write(
                lambda connection: connection.execute(
                    "UPDATE events SET payload = ? WHERE namespace = ? AND id = ?",
                    (payload, store.namespace, event_id),
                )
            )
        )
    elif isinstance(backend, PostgresBackend):

        async def update() -> None:
            async with backend.pool.connection() as connection:
                await connection.execute(
                    "UPDATE events SET payload = %s WHERE namespace = %s AND id = %s",
                    (payload, store.namespace, event_id),
                )

        store.served.thread.run(update())
    else:
        events = cast(MemoryEventStore, backend.events())
        record = events._namespaces[store.namespace].records[event_id]
        record.event = dataclasses.replace(record.event, payload=payload)


def test_verify_finds_tampering_in_stored_data(sample: Store) -> None:
    intact = sample.events.verify_chain("s1")
    assert (intact.valid, intact.checked_events, intact.first_chain_index, intact.reason) == (True, 6, 0, "")
    tamper(sample, "e2", '{"result":"0% done"}')
    broken = sample.events.verify_chain("s1")
    assert (broken.valid, broken.broken_event_id, broken.checked_events) == (False, "e2", 2)
    assert "hash does not match" in broken.reason
    assert sample.events.verify_chain("s2").valid
    with pytest.raises(NotFound):
        sample.events.verify_chain("nobody")


# TailEvents ----------------------------------------------------------------------------------------------


def test_tail_streams_new_matching_events(store: Store) -> None:
    with store.events.tail(session_id="s1", severities=["error"]) as tail:
        store.events.insert([event("s1", severity="error", event_id="yes-1"), event("s1", event_id="no")])
        store.events.insert([event("s2", severity="error", event_id="no-2")])
        ingest(store, [(1, [event("s1", severity="error", event_id="yes-2")])])
        received: list[str] = []
        for delivery in tail:
            received += ids(delivery)
            if len(received) == 2:
                break
    assert received == ["yes-1", "yes-2"]
    assert all(len(stored.hash) == 64 for stored in store.events.query().events)


def test_tail_sees_only_its_namespace(store: Store) -> None:
    with store.events.tail() as tail, store.served.client() as other:
        other.events.insert([event(event_id="elsewhere")])
        store.events.insert([event(event_id="here")])
        assert ids(next(iter(tail))) == ["here"]


def test_the_async_client_does_the_same(store: Store) -> None:
    async def scenario() -> tuple[list[str], int, list[str]]:
        async with AsyncClient(store.served.target, namespace=store.namespace) as client:
            async with await client.events.tail(session_id="s1") as tail:
                stored = await client.events.insert([event("s1", event_id="e1"), event("s1", event_id="e2")])
                delivered = ids(await anext(tail))
            page = await client.events.query(order="asc")
            timeline = [item.id async for item in client.events.timeline("s1")]
            assert (await client.events.verify_chain("s1")).valid
            assert ids(stored.events) == ids(page.events) == timeline
            return delivered, page.total, [agent.id async for agent in client.events.agents()]

    assert asyncio.run(scenario()) == (["e1", "e2"], 2, ["a1"])


# Backends that do not serve events -----------------------------------------------------------------------


def test_redis_answers_unimplemented(redis_served: SharedDaemon) -> None:
    with redis_served.client() as client:
        with pytest.raises(Unimplemented, match=r"redis backend does not serve stord\.v1\.EventStoreService"):
            client.events.stats()
        with pytest.raises(Unimplemented):
            client.events.insert([event()])
        with pytest.raises(Unimplemented):
            client.events.tail()  # the streaming RPCs are refused alike
