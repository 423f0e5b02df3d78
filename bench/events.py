"""`make bench`: events/s through IngestEvents beside the raw insert, and query latency over 1M events.

Run from the repository root (`python -m bench.events`). Per database (SQLite, PostgreSQL):

- ingest: a `stord serve` subprocess takes prebuilt batches (100 and 1000 events, spread over thousands of
  sessions and dozens of agents, nested payloads) over IngestEvents streams, a few batches in flight per
  stream, with py-spy sampling the daemon; the raw side then writes the rows stord stored into a database of
  the same schema (`stord migrate`): executemany in one transaction per batch on SQLite, binary COPY in one
  transaction per batch on PostgreSQL, in the same run;
- queries: 1,000,000 events over the last 30 days are bulk-loaded straight into the daemon's database (not
  through gRPC), then QueryEvents with common filters, GetSessionTimeline and GetAnalytics (30 days, hourly)
  are timed one after another through AsyncClient.

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psycopg

from bench._deploy import BACKENDS, Deployment, StordDaemon, create_schema
from bench._load import run
from bench._profile import INGEST_CATEGORIES, Profile
from stord.client import AsyncClient, make_event, new_event_id
from stord.server.backends.sqlite._connect import connect as sqlite_connect
from stord.server.config import SqliteOptions
from stord.server.events.ingest import EVENT_ROW_COLUMNS
from stord.v1 import events_pb2 as pb
from stord.v1 import events_pb2_grpc

__all__ = ["main"]

INGEST_NAMESPACE = "bench-ingest"
QUERY_NAMESPACE = "bench-query"
STREAMS = 2
IN_FLIGHT = 4
"""Batches each stream keeps sent but unacknowledged, as EventIngestor does."""
ROUNDS = 4
"""Turns stord and the raw side take on an ingest figure's batches, one after the other."""
SESSIONS_PER_STREAM = 2000
"""A batch of 1000 touches about 800 of them, one of 100 about 100: the session upserts at their real cost."""
AGENTS = 40
QUERY_SESSIONS = 10_000
DAY_MS = 86_400_000
_TYPES = [kind.removeprefix("EVENT_TYPE_").lower() for kind in pb.EventType.keys()[1:]]
_COLUMNS = ", ".join(EVENT_ROW_COLUMNS)
_COPY_TYPES = ["text", "text", "int8", "text", "text", "text", "text", "text", "text", "text", "text", "int8",
               "float8", "float8"]  # fmt: skip


@dataclass(frozen=True)
class IngestRow:
    backend: str
    batch: int
    stord: float
    raw: float
    profile: Profile

    @property
    def ratio(self) -> float:
        return self.stord / self.raw if self.raw else 0.0


@dataclass(frozen=True)
class QueryRow:
    backend: str
    name: str
    p50_ms: float
    p95_ms: float
    rows: int


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Ingest ---------------------------------------------------------------------------------------------------


def _payload(generator: random.Random, kind: str, number: int) -> dict[str, Any]:
    """A nested payload of a few hundred bytes, shaped like an agent platform's tool events."""
    payload: dict[str, Any] = {
        "toolName": f"tool-{number % 40}",
        "callId": f"call-{number}",
        "input": {
            "query": f"status of order {number} and its shipments",
            "options": {"limit": 10 + number % 5, "language": "en", "strict": number % 2 == 0},
            "tags": ["eu", "retail", f"tenant-{number % 12}"],
        },
        "trace": {"spanId": f"{generator.getrandbits(64):016x}", "depth": number % 7, "sampled": True},
    }
    if kind == "tool_response":
        payload["durationMs"] = 5 + number % 500
        payload["output"] = {
            "items": [{"id": number, "score": round(generator.random(), 4)}],
            "truncated": False,
        }
    elif kind == "cost_tracked":
        payload["costUsd"] = round(generator.random() / 100, 6)
        payload["model"] = "large-2"
    elif kind == "session_started":
        payload["agentName"] = f"Agent {number % AGENTS}"
        payload["tags"] = ["bench", f"team-{number % 4}"]
    elif kind == "tool_error":
        payload["error"] = 'Timeout after 30 s in fetch_url "https://example.com/a?b=c"'
    return payload


def _batches(count: int, size: int, stream: int) -> list[pb.IngestEventsRequest]:
    """Batches spread over the stream's SESSIONS_PER_STREAM sessions and AGENTS agents, nested payloads."""
    generator = random.Random(stream * 1000 + size)
    kinds = ["tool_call", "tool_response", "tool_call", "tool_response", "custom", "cost_tracked",
             "session_started", "tool_error", "approval_requested", "session_ended"]  # fmt: skip
    batches = []
    for sequence in range(count // size):
        events = []
        for index in range(size):
            number = sequence * size + index
            session = generator.randrange(SESSIONS_PER_STREAM)
            kind = kinds[generator.randrange(len(kinds))]
            events.append(
                make_event(
                    f"stream-{stream}-session-{session}",
                    f"agent-{session % AGENTS}",
                    kind,
                    severity="error" if kind == "tool_error" else "info",
                    payload=_payload(generator, kind, number),
                    metadata={"source": "bench", "host": f"worker-{stream}"},
                    event_id=new_event_id(),
                    json_text=True,
                )
            )
        batches.append(pb.IngestEventsRequest(sequence=sequence, events=events))
    return batches


async def _stream(
    stub: events_pb2_grpc.EventStoreServiceAsyncStub, batches: list[pb.IngestEventsRequest]
) -> int:
    """Send the batches with IN_FLIGHT unacknowledged at most; return the events acknowledged."""
    call = stub.IngestEvents(metadata=(("stord-namespace", INGEST_NAMESPACE),))
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def acknowledgements() -> int:
        stored = 0
        async for response in call:
            stored += response.accepted
            slots.release()
        return stored

    reader = asyncio.create_task(acknowledgements())
    for batch in batches:
        await slots.acquire()
        await call.write(batch)
    await call.done_writing()
    return await reader


async def _stord_ingest(address: str, streams: list[list[pb.IngestEventsRequest]]) -> tuple[int, float]:
    """Send each stream's batches over a stream of its own, together; return the events stored and seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = events_pb2_grpc.EventStoreServiceStub(channel)
        started = time.perf_counter()
        stored = await asyncio.gather(*(_stream(stub, batches) for batches in streams))
        return sum(stored), time.perf_counter() - started


def _stored_rows(url: str, batches: Sequence[pb.IngestEventsRequest]) -> list[list[tuple[Any, ...]]]:
    """The rows stord stored for these batches, read back from its database, batch by batch, for the raw
    side to write again (namespace `raw`): the same rows, hashes and all."""
    sql = f"SELECT {_COLUMNS} FROM events WHERE namespace = '{INGEST_NAMESPACE}'"
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            stored = connection.execute(sql).fetchall()
    else:
        with psycopg.connect(url) as connection:
            stored = connection.execute(sql.encode()).fetchall()
    by_id = {row[1]: ("raw", *row[1:]) for row in stored}
    return [[by_id[event.id] for event in batch.events] for batch in batches]


def _raw_sqlite(url: str, batches: list[list[tuple[Any, ...]]]) -> float:
    """Write the batches as stord's writer would, a transaction each; return the seconds it took."""
    # The daemon's own connection settings: WAL, synchronous, page cache, busy timeout, foreign keys.
    connection = sqlite_connect(Path(url.removeprefix("sqlite:///")), SqliteOptions())
    insert = f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"
    started = time.perf_counter()
    for rows in batches:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, rows)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def _raw_postgres(url: str, batches: list[list[tuple[Any, ...]]]) -> float:
    """COPY the batches in binary, a transaction each; return the seconds it took."""
    with psycopg.connect(url, autocommit=True) as connection:
        started = time.perf_counter()
        for rows in batches:
            with (
                connection.transaction(),
                connection.cursor().copy(f"COPY events ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        return time.perf_counter() - started


def _bench_ingest(
    name: str, daemon: StordDaemon, deployment: Deployment, events: int, profiles: Path
) -> list[IngestRow]:
    """Per batch size, ROUNDS rounds of stord then raw on the next share of the batches: on a busy machine
    the load drifts within seconds, and alternating lets both sides meet it alike."""
    assert deployment.raw_url is not None
    raw_url = deployment.raw_url
    raw_write = _raw_sqlite if raw_url.startswith("sqlite") else _raw_postgres
    results = []
    for size in (100, 1000):
        _progress(f"  {name}: ingest, batches of {size}")
        per_round = max(events // STREAMS // ROUNDS // size, 1)
        streams = [_batches((1 + ROUNDS * per_round) * size, size, stream) for stream in range(STREAMS)]
        run(_stord_ingest(daemon.address, [batches[:1] for batches in streams]))  # warm-up: connections
        stord_events = raw_events = 0
        stord_seconds = raw_seconds = 0.0
        profile = Profile()
        for number in range(ROUNDS):
            part = [batches[1 + number * per_round : 1 + (number + 1) * per_round] for batches in streams]
            with Profile.attach(daemon.pid, profiles / f"py-spy-{name}-{size}-{number}.txt") as round_profile:
                stored, seconds = run(_stord_ingest(daemon.address, part))
            profile.stacks += round_profile.stacks
            profile.problem = profile.problem or round_profile.problem
            stord_events, stord_seconds = stord_events + stored, stord_seconds + seconds
            rows = _stored_rows(deployment.stord_url, [batch for batches in part for batch in batches])
            raw_events += sum(len(batch) for batch in rows)
            raw_seconds += raw_write(raw_url, rows)
        results.append(IngestRow(name, size, stord_events / stord_seconds, raw_events / raw_seconds, profile))
    return results


# Queries over 1M events ------------------------------------------------------------------------------------


def _query_rows(count: int, now_ms: int) -> Iterator[tuple[Any, ...]]:
    """`count` events over the last 30 days in QUERY_SESSIONS sessions, oldest first, as stord stores them."""
    generator = random.Random(42)
    weights = [3 if kind in ("tool_call", "tool_response") else 1 for kind in _TYPES]
    kinds = generator.choices(_TYPES, weights, k=count)
    severities = generator.choices(["debug", "info", "warn", "error", "critical"], [5, 80, 10, 4, 1], k=count)
    start, step = now_ms - 30 * DAY_MS, 30 * DAY_MS // count
    per_session = max(count // QUERY_SESSIONS, 1)
    for index in range(count):
        # A session is a run of consecutive events (about four minutes of them), as an agent's run is.
        session = index // per_session
        kind = kinds[index]
        duration = 5 + index % 500
        payload = f'{{"callId":"call-{index}","durationMs":{duration},"toolName":"tool-{index % 40}"}}'
        yield (
            QUERY_NAMESPACE, f"event-{index:08d}", start + index * step, f"session-{session:05d}",
            f"agent-{session % AGENTS:02d}", kind, severities[index], payload, "{}", None, "f" * 64,
            index % per_session, 0.001 if kind == "cost_tracked" else None,
            float(duration) if kind == "tool_response" else None,
        )  # fmt: skip


_DERIVE = [
    f"""
    INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status,
                                event_count, tool_call_count, error_count, total_cost_usd, tags,
                                chain_length, last_hash)
    SELECT namespace, session_id, min(agent_id), NULL, min(timestamp), NULL, 'active', count(*),
           sum(CASE WHEN event_type = 'tool_call' THEN 1 ELSE 0 END),
           sum(CASE WHEN severity IN ('error', 'critical') OR event_type = 'tool_error' THEN 1 ELSE 0 END),
           coalesce(sum(cost_usd), 0), {{tags}}, count(*), min(hash)
    FROM events WHERE namespace = '{QUERY_NAMESPACE}' GROUP BY namespace, session_id
    """,
    f"""
    INSERT INTO event_agents (namespace, id, name, description, first_seen_at, last_seen_at, session_count)
    SELECT namespace, agent_id, agent_id, NULL, min(timestamp), max(timestamp), count(DISTINCT session_id)
    FROM events WHERE namespace = '{QUERY_NAMESPACE}' GROUP BY namespace, agent_id
    """,
]


def _load_sqlite(url: str, count: int, now_ms: int) -> None:
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
    insert = f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"
    rows = _query_rows(count, now_ms)
    while chunk := list(itertools.islice(rows, 100_000)):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, chunk)
        connection.execute("COMMIT")
    for statement in _DERIVE:
        connection.execute(statement.replace("{tags}", "'[]'"))
    connection.execute("ANALYZE")
    connection.close()


def _load_postgres(url: str, count: int, now_ms: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        with (
            connection.transaction(),
            connection.cursor().copy(f"COPY events ({_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in _query_rows(count, now_ms):
                copy.write_row(row)
        for statement in _DERIVE:
            connection.execute(statement.replace("{tags}", "'{}'::text[]").encode())
        connection.execute("VACUUM ANALYZE events")


async def _latencies(call: Callable[[], Awaitable[int]], repeat: int) -> tuple[list[float], int]:
    await call()  # warm-up
    latencies, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = await call()
        latencies.append(time.perf_counter() - started)
    return latencies, rows


def _percentile(latencies: list[float], fraction: float) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, int(fraction * len(ordered) + 0.999999) - 1)] * 1000


async def _bench_queries(name: str, address: str, now_ms: int, repeat: int) -> list[QueryRow]:
    now = now_ms / 1000
    async with AsyncClient(address, namespace=QUERY_NAMESPACE, timeout=60) as client:
        events = client.events

        async def page(**arguments: Any) -> int:
            return len((await events.query(**arguments)).events)

        async def timeline() -> int:
            return len([event async for event in events.timeline("session-04242")])

        async def analytics(agent_id: str | None = None) -> int:
            result = await events.analytics(
                from_time=now - 30 * 86_400, to_time=now, granularity="hour", agent_id=agent_id
            )
            return len(result.buckets)

        scenarios: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("QueryEvents agent + type, last 24 h", lambda: page(
                agent_id="agent-07", event_types=["tool_call"], from_time=now - 86_400)),
            ("QueryEvents session", lambda: page(session_id="session-01234")),
            ("QueryEvents type tool_error, last 7 days", lambda: page(
                event_types=["tool_error"], from_time=now - 7 * 86_400)),
            ("QueryEvents last hour", lambda: page(from_time=now - 3600)),
            ("QueryEvents agent + search, last 24 h", lambda: page(
                agent_id="agent-07", search="TOOL-27", from_time=now - 86_400)),
            ("GetSessionTimeline (100 events)", timeline),
            ("GetAnalytics 30 days hourly", analytics),
            ("GetAnalytics 30 days hourly, one agent", lambda: analytics("agent-07")),
        ]  # fmt: skip
        rows = []
        for scenario, call in scenarios:
            _progress(f"  {name}: {scenario}")
            times = repeat if "Analytics" not in scenario else max(repeat // 4, 5)
            latencies, found = await _latencies(call, times)
            rows.append(
                QueryRow(name, scenario, _percentile(latencies, 0.5), _percentile(latencies, 0.95), found)
            )
        return rows


# The run ---------------------------------------------------------------------------------------------------


def _bench_backend(
    name: str, workdir: Path, arguments: argparse.Namespace
) -> tuple[list[IngestRow], list[QueryRow]]:
    backend = BACKENDS[name]
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        _progress(f"{name}: starting")
        deployment = backend.deploy(workdir, stack)
        assert deployment.raw_url is not None
        create_schema(deployment.raw_url)
        daemon = stack.enter_context(StordDaemon.serving(deployment.stord_url, backend.kind, workdir))
        profiles = Path(arguments.profile_dir) if arguments.profile_dir else workdir
        profiles.mkdir(parents=True, exist_ok=True)
        ingest = _bench_ingest(name, daemon, deployment, arguments.ingest_events, profiles)
        if not arguments.query_events:
            return ingest, []
        now_ms = int(time.time() * 1000)
        _progress(f"  {name}: loading {arguments.query_events:,} events for the queries")
        started = time.perf_counter()
        stord_path = deployment.stord_url
        if name == "sqlite":
            _load_sqlite(stord_path, arguments.query_events, now_ms)
        else:
            _load_postgres(stord_path, arguments.query_events, now_ms)
        _progress(f"  {name}: loaded in {time.perf_counter() - started:.0f} s")
        queries = run(_bench_queries(name, daemon.address, now_ms, arguments.repeat))
    return ingest, queries


def _render(ingest: list[IngestRow], queries: list[QueryRow], load_before: float) -> str:
    lines = [
        f"{'backend':<9} {'batch':>5} {'stord events/s':>15} {'raw events/s':>13} {'ratio':>6}",
        *(
            f"{row.backend:<9} {row.batch:>5} {row.stord:>15,.0f} {row.raw:>13,.0f} {row.ratio:>6.2f}"
            for row in ingest
        ),
        "",
    ]
    for row in ingest:
        lines += row.profile.render(
            f"Daemon CPU, {row.backend} ingest, batches of {row.batch}", INGEST_CATEGORIES
        )
    if queries:
        lines += [
            "",
            f"{'backend':<9} {'over 1M events':<42} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}",
            *(
                f"{row.backend:<9} {row.name:<42} {row.p50_ms:>8.1f} {row.p95_ms:>8.1f} {row.rows:>6}"
                for row in queries
            ),
        ]
    lines += [
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before the run and"
        f" {os.getloadavg()[0]:.1f} after (on a busy machine the figures say little). Ingest:"
        f" {STREAMS} IngestEvents streams from one client process, {IN_FLIGHT} batches in flight each, each"
        f" stream's events spread at random over its {SESSIONS_PER_STREAM:,} sessions and {AGENTS} agents,"
        " nested payloads of about 400 bytes; raw: the rows stord stored, read back and written again from"
        " one connection, a transaction per batch (SQLite executemany with the daemon's pragmas; PostgreSQL"
        f" binary COPY); the two sides take turns, {ROUNDS} rounds each. Queries: pages of 50, with `total`;"
        " timelines and analytics in full; one request at a time.",
        "Targets (measured, not asserted): ingest >= 0.75 of raw and >= 100,000 events/s on SQLite and"
        " PostgreSQL; filtered QueryEvents p95 <= 10 ms.",
    ]
    return "\n".join(lines)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="from sqlite, postgres (default: both)")
    parser.add_argument("--ingest-events", type=int, default=60_000, help="events per ingest figure")
    parser.add_argument(
        "--query-events", type=int, default=1_000_000, help="events stored for the queries (0: ingest only)"
    )
    parser.add_argument("--profile-dir", help="keep py-spy's raw profiles there (flamegraph.pl's input)")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per query")
    arguments = parser.parse_args(argv)
    unknown = set(arguments.backends.split(",")) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return arguments


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so servers and daemons stop


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    load_before = os.getloadavg()[0]
    ingest: list[IngestRow] = []
    queries: list[QueryRow] = []
    with tempfile.TemporaryDirectory(prefix="stord-bench-events-") as workdir:
        for name in arguments.backends.split(","):
            backend_ingest, backend_queries = _bench_backend(name, Path(workdir) / name, arguments)
            ingest += backend_ingest
            queries += backend_queries
    print(_render(ingest, queries, load_before))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
