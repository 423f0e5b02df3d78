"""`make bench`: analytics, payload search and filtered queries over 1M events loaded as users load them.

Run from the repository root (`python -m bench.events_queries`; `--events 100000` for a quick run). Per
database (SQLite, PostgreSQL):

- load: `--events` events over the last 30 days (24 agents, sessions of ~200 events over ~2 hours, nested
  payloads of ~300 bytes) through IngestEvents into a `stord serve` subprocess, with EventIngestor (batches
  of 1000, 4 in flight), exactly as a client stores them: rollups and search index kept on the way;
- queries, IMMEDIATELY after (no ANALYZE, no warm-up call, nothing the daemon does not do itself): p50 and
  p95 of GetAnalytics, payload search and filtered QueryEvents through AsyncClient, each beside the very
  SQL the daemon runs, sent straight to the same database (`raw`), and GetAnalytics beside the direct scan
  of the events it replaced (`scan`);
- index cost: raw inserts of the same prepared rows (a transaction per 1000) into the schema without
  migration 0006, with its search index, and with the index and the rollup statements.

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
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

import orjson
import psycopg

from bench._deploy import BACKENDS, StordDaemon
from bench._load import run
from stord.client import AsyncClient, EventIngestor, make_event, new_event_id
from stord.server.backends._event_rollups import rollup_analytics
from stord.server.backends._event_sql import (
    POSTGRES,
    SQLITE,
    Conditions,
    Dialect,
    analytics_query,
    bucket_expression,
)
from stord.server.backends.postgres import _event_rollups as postgres_rollups
from stord.server.backends.sqlite import _event_rollups as sqlite_rollups
from stord.server.events.port import EventFilter, EventType, Granularity
from stord.server.events.rollups import bucket_grid, split_range
from stord.server.schema import load_migrations

__all__ = ["main"]

NAMESPACE = "bench-queries"
AGENTS = 24
SESSION_EVENTS = 200
CONCURRENT_SESSIONS = 16
"""Sessions running at once: each takes every 16th event of its stretch of time."""
DAY_MS = 86_400_000
RARE_EVERY = 1000
"""One event in this many carries the `upstream timeout` error the uncommon search finds."""

_TYPES = ["tool_call", "tool_response", "tool_call", "tool_response", "custom", "cost_tracked", "tool_error"]
_WORDS = [
    "alpha", "invoice", "weather", "paris", "tokyo", "refund", "ticket", "deploy", "latency", "kernel",
    "ledger", "orbit", "quartz", "harbor", "meadow", "signal", "vector", "copper", "lantern", "summit",
    "glacier", "pepper", "violet", "tundra", "ember", "falcon", "marble", "nectar", "pixel", "rocket",
]  # fmt: skip
_COLUMNS = (
    "id, timestamp, session_id, agent_id, event_type, severity, payload, metadata, prev_hash, hash, "
    "chain_index"
)
_INSERT_COLUMNS = f"namespace, {_COLUMNS}, cost_usd, latency_ms"
_COPY = f"COPY events ({_INSERT_COLUMNS}) FROM STDIN".encode()


@dataclass(frozen=True)
class QueryRow:
    backend: str
    name: str
    stord: tuple[float, float, float]
    """p50, p95 and the first call's milliseconds."""
    raw: tuple[float, float, float]
    scan: tuple[float, float, float] | None
    rows: int


@dataclass(frozen=True)
class CostRow:
    backend: str
    base: float
    search_index: float
    index_and_rollups: float


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The data ------------------------------------------------------------------------------------------------


def _payload(index: int, kind: str, generator: random.Random) -> dict[str, Any]:
    """A nested payload of about 300 bytes, as an agent's tool call records it."""
    words = generator.sample(_WORDS, 5)
    failed = index % RARE_EVERY == 7
    payload: dict[str, Any] = {
        "toolName": f"tool-{index % 40}",
        "callId": f"call-{index:07d}",
        "args": {
            "query": " ".join(words[:3]),
            "limit": 10 + index % 7,
            "filters": {"lang": ("en", "fr", "ja")[index % 3], "tags": words[3:]},
        },
        "result": {
            "status": "error" if failed else "ok",
            "message": "Upstream timeout after 30s" if failed else f"{words[0]} answered",
            "items": [index % 97, index % 89, index % 83],
        },
    }
    if kind == "tool_response":
        payload["durationMs"] = 5 + index % 500
    elif kind == "cost_tracked":
        payload["costUsd"] = (index % 50) / 1000
    return payload


def _events(count: int, now_ms: int) -> Iterator[tuple[int, str, str, str, str, dict[str, Any]]]:
    """(timestamp, session, agent, type, severity, payload) oldest first, over the 30 days before now."""
    generator = random.Random(42)
    start, step = now_ms - 30 * DAY_MS, 30 * DAY_MS // count
    stretch = SESSION_EVENTS * CONCURRENT_SESSIONS
    for index in range(count):
        session = index // stretch * CONCURRENT_SESSIONS + index % CONCURRENT_SESSIONS
        kind = _TYPES[index % len(_TYPES)] if index % RARE_EVERY != 7 else "tool_error"
        severity = "error" if kind == "tool_error" else ("info", "info", "info", "debug", "warn")[index % 5]
        yield (
            start + index * step,
            f"session-{session:06d}",
            f"agent-{session % AGENTS:02d}",
            kind,
            severity,
            _payload(index, kind, generator),
        )


def _load(address: str, count: int, now_ms: int) -> float:
    """Store the events through IngestEvents, as a client does; return events per second."""
    started = time.perf_counter()
    with EventIngestor(address, namespace=NAMESPACE, batch_size=1000, max_in_flight=4) as ingestor:
        for done, (timestamp, session, agent, kind, severity, payload) in enumerate(_events(count, now_ms)):
            ingestor.add(
                make_event(
                    session, agent, kind, severity=severity, payload=payload, at=timestamp / 1000,
                    event_id=new_event_id(),
                )
            )  # fmt: skip
            if done % 100_000 == 99_999:
                _progress(f"    {done + 1:,} events sent")
        ingestor.flush()
    return count / (time.perf_counter() - started)


# The two sides of each query -----------------------------------------------------------------------------


class RawDatabase:
    """The daemon's own database, queried directly with the SQL the daemon sends."""

    def __init__(self, url: str) -> None:
        self.dialect: Dialect = SQLITE if url.startswith("sqlite") else POSTGRES
        if self.dialect is SQLITE:
            self._sqlite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            self._postgres = psycopg.connect(url, autocommit=True)

    def rows(self, sql: str, params: Sequence[object]) -> list[Any]:
        if self.dialect is SQLITE:
            return self._sqlite.execute(sql, params).fetchall()
        return self._postgres.execute(sql.encode(), params).fetchall()

    def close(self) -> None:
        if self.dialect is SQLITE:
            self._sqlite.close()
        else:
            self._postgres.close()

    def page(self, event_filter: EventFilter) -> int:
        """QueryEvents' two statements: a page of 50, newest first, and the total."""
        p = self.dialect.placeholder
        matching = Conditions(self.dialect).events(NAMESPACE, event_filter)
        select = f"""
            SELECT {_COLUMNS} FROM events WHERE {matching.where()}
            ORDER BY timestamp DESC, id DESC LIMIT {p} OFFSET {p}
        """
        found = len(self.rows(select, [*matching.params, 50, 0]))
        self.rows(f"SELECT count(*) FROM events WHERE {matching.where()}", matching.params)
        return found

    def analytics(self, from_ms: int, to_ms: int, agent_id: str | None) -> int:
        split = split_range(from_ms, to_ms)
        sql, params = rollup_analytics(
            self.dialect, NAMESPACE, split, bucket_grid(Granularity.HOUR), agent_id
        )
        return len(self.rows(sql, params)) - 1

    def scan(self, from_ms: int, to_ms: int, agent_id: str | None) -> int:
        """The direct scan of the events that GetAnalytics ran before the rollups."""
        matching = Conditions(self.dialect)
        matching.add("namespace = {}", NAMESPACE)
        matching.add("timestamp BETWEEN {} AND {}", from_ms, to_ms)
        if agent_id is not None:
            matching.add("agent_id = {}", agent_id)
        bucket = bucket_expression(self.dialect, Granularity.HOUR)
        return len(self.rows(analytics_query(self.dialect, bucket, matching.where()), matching.params)) - 1


async def _timed(call: Callable[[], Awaitable[int]], repeat: int) -> tuple[tuple[float, float, float], int]:
    """p50, p95 and first call of `repeat` calls, in milliseconds; no warm-up call."""
    latencies, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = await call()
        latencies.append((time.perf_counter() - started) * 1000)
    ordered = sorted(latencies)
    return (ordered[len(ordered) // 2], ordered[max(0, -(-95 * len(ordered) // 100) - 1)], latencies[0]), rows


async def _bench_queries(
    name: str, address: str, raw: RawDatabase, now_ms: int, repeat: int
) -> list[QueryRow]:
    now = now_ms / 1000
    month, day, week, hour = now_ms - 30 * DAY_MS, now_ms - DAY_MS, now_ms - 7 * DAY_MS, now_ms - 3_600_000
    filters: list[tuple[str, dict[str, Any], EventFilter]] = [
        ("QueryEvents agent + type, last 24 h", {"agent_id": "agent-07", "event_types": ["tool_call"],
         "from_time": now - 86_400},
         EventFilter(agent_id="agent-07", event_types=frozenset({EventType.TOOL_CALL}), from_time=day)),
        ("QueryEvents session", {"session_id": "session-001234"}, EventFilter(session_id="session-001234")),
        ("QueryEvents type tool_error, last 7 days",
         {"event_types": ["tool_error"], "from_time": now - 7 * 86_400},
         EventFilter(event_types=frozenset({EventType.TOOL_ERROR}), from_time=week)),
        ("QueryEvents last hour", {"from_time": now - 3600}, EventFilter(from_time=hour)),
        ("search: one event's call id", {"search": "CALL-0421337"}, EventFilter(search="CALL-0421337")),
        ("search: upstream timeout (1 in 1000)", {"search": "upstream timeout"},
         EventFilter(search="upstream timeout")),
        ("search + agent, last 24 h",
         {"search": "timeout", "agent_id": "agent-07", "from_time": now - 86_400},
         EventFilter(search="timeout", agent_id="agent-07", from_time=day)),
    ]  # fmt: skip
    rows: list[QueryRow] = []
    async with AsyncClient(address, namespace=NAMESPACE, timeout=120) as client:
        for scenario, arguments, event_filter in filters:
            _progress(f"  {name}: {scenario}")

            async def stord_page(arguments: dict[str, Any] = arguments) -> int:
                return len((await client.events.query(**arguments)).events)

            async def raw_page(event_filter: EventFilter = event_filter) -> int:
                return raw.page(event_filter)

            stord, found = await _timed(stord_page, repeat)
            direct, _ = await _timed(raw_page, repeat)
            rows.append(QueryRow(name, scenario, stord, direct, None, found))
        analytics = (
            ("GetAnalytics 30 days hourly", None),
            ("GetAnalytics 30 days hourly, one agent", "agent-07"),
        )
        for scenario, agent_id in analytics:
            _progress(f"  {name}: {scenario}")

            async def stord_analytics(agent_id: str | None = agent_id) -> int:
                result = await client.events.analytics(
                    from_time=now - 30 * 86_400, to_time=now, granularity="hour", agent_id=agent_id
                )
                return len(result.buckets)

            async def raw_analytics(agent_id: str | None = agent_id) -> int:
                return raw.analytics(month, now_ms, agent_id)

            async def scan_analytics(agent_id: str | None = agent_id) -> int:
                return raw.scan(month, now_ms, agent_id)

            stord, found = await _timed(stord_analytics, repeat)
            direct, _ = await _timed(raw_analytics, repeat)
            scan, _ = await _timed(scan_analytics, max(3, repeat // 8))
            rows.append(QueryRow(name, scenario, stord, direct, scan, found))
    return rows


# What the search index and the rollups cost an insert ----------------------------------------------------


def _prepared_rows(count: int, now_ms: int) -> list[list[tuple[Any, ...]]]:
    """Rows as stord stores them (canonical JSON payloads, hashes), in batches of 1000."""
    rows = []
    for index, (timestamp, session, agent, kind, severity, payload) in enumerate(_events(count, now_ms)):
        rows.append(
            (NAMESPACE, f"event-{index:08d}", timestamp, session, agent, kind, severity,
             orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(), "{}", None, "f" * 64, index,
             payload.get("costUsd"), payload.get("durationMs"))
        )  # fmt: skip
    return [rows[start : start + 1000] for start in range(0, len(rows), 1000)]


def _sqlite_insert_rate(
    path: Path, batches: list[list[tuple[Any, ...]]], *, migrations: int, rollups: bool
) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    for migration in load_migrations("sqlite")[:migrations]:
        connection.executescript(migration.sql)
    insert = f"INSERT INTO events ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * 14)})"
    search = migrations >= 6
    started = time.perf_counter()
    for rows in batches:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, rows)
        if rollups:  # the daemon's own call, the search index included
            sqlite_rollups.add_batch(connection, NAMESPACE, [row[1] for row in rows])
        elif search:  # the search index alone: the batch's rows are the newest rowids
            (high,) = connection.execute("SELECT max(rowid) FROM events").fetchone()
            connection.execute(
                "INSERT INTO events_search (rowid, payload) SELECT rowid, payload FROM events"
                " WHERE rowid > ?",
                (high - len(rows),),
            )
        if rollups:  # the daemon's own call, the search index included
            sqlite_rollups.add_batch(connection, NAMESPACE, [row[1] for row in rows])
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return sum(len(rows) for rows in batches) / elapsed


async def _postgres_insert_rate(
    admin_url: str, name: str, batches: list[list[tuple[Any, ...]]], *, migrations: int, rollups: bool
) -> float:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        for migration in load_migrations("postgres")[:migrations]:
            await connection.execute(migration.sql.encode())
        started = time.perf_counter()
        for rows in batches:
            async with connection.transaction():
                async with connection.cursor() as cursor, cursor.copy(_COPY) as copy:
                    for row in rows:
                        await copy.write_row(row)
                if rollups:  # the daemon's own call
                    await postgres_rollups.add_batch(connection, NAMESPACE, [row[1] for row in rows])
        elapsed = time.perf_counter() - started
    return sum(len(rows) for rows in batches) / elapsed


def _index_cost(name: str, raw_url: str, workdir: Path, count: int, now_ms: int) -> CostRow:
    batches = _prepared_rows(count, now_ms)
    _progress(f"  {name}: insert cost of the search index and rollups, {count:,} rows")
    if name == "sqlite":
        rates = [
            _sqlite_insert_rate(workdir / f"cost-{index}.db", batches, migrations=migrations, rollups=rollups)
            for index, (migrations, rollups) in enumerate(((5, False), (6, False), (6, True)))
        ]
    else:
        rates = [
            run(_postgres_insert_rate(raw_url, f"cost_{index}", batches, migrations=steps, rollups=rollups))
            for index, (steps, rollups) in enumerate(((5, False), (6, False), (6, True)))
        ]
    return CostRow(name, *rates)


# The run ---------------------------------------------------------------------------------------------------


def _bench_backend(
    name: str, workdir: Path, arguments: argparse.Namespace
) -> tuple[float, list[QueryRow], CostRow]:
    backend = BACKENDS[name]
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        _progress(f"{name}: starting")
        deployment = backend.deploy(workdir, stack)
        assert deployment.raw_url is not None
        daemon = stack.enter_context(StordDaemon.serving(deployment.stord_url, backend.kind, workdir))
        now_ms = int(time.time() * 1000)
        _progress(f"  {name}: loading {arguments.events:,} events through IngestEvents")
        rate = _load(daemon.address, arguments.events, now_ms)
        _progress(f"  {name}: loaded at {rate:,.0f} events/s; querying at once")
        raw = RawDatabase(deployment.stord_url)
        try:
            queries = run(_bench_queries(name, daemon.address, raw, now_ms, arguments.repeat))
        finally:
            raw.close()
        cost = _index_cost(name, deployment.raw_url, workdir, arguments.insert_events, now_ms)
    return rate, queries, cost


def _ms(figures: tuple[float, float, float] | None) -> str:
    return "-" if figures is None else f"{figures[0]:.1f} / {figures[1]:.1f} / {figures[2]:.0f}"


def _render(
    loads: dict[str, float], queries: list[QueryRow], costs: list[CostRow], load_before: float, events: int
) -> str:
    lines = [
        f"Loaded {events:,} events through IngestEvents: "
        + ", ".join(f"{name} {rate:,.0f} events/s" for name, rate in loads.items()),
        "",
        f"{'backend':<9} {'query':<40} {'stord p50/p95/first':>20} {'raw p50/p95/first':>20}"
        f" {'p95 ratio':>9} {'scan p50/p95/first':>20} {'rows':>5}",
        *(
            f"{row.backend:<9} {row.name:<40} {_ms(row.stord):>20} {_ms(row.raw):>20}"
            f" {row.stord[1] / row.raw[1] if row.raw[1] else 0:>9.2f} {_ms(row.scan):>20} {row.rows:>5}"
            for row in queries
        ),
        "",
        f"{'backend':<9} {'raw inserts/s: schema 0005':>27} {'+ search index':>15} {'+ rollups':>10}"
        f" {'index cost':>10} {'both cost':>10}",
        *(
            f"{row.backend:<9} {row.base:>27,.0f} {row.search_index:>15,.0f} {row.index_and_rollups:>10,.0f}"
            f" {row.base / row.search_index:>9.2f}x {row.base / row.index_and_rollups:>9.2f}x"
            for row in costs
        ),
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before the run,"
        f" {os.getloadavg()[0]:.1f} after. Milliseconds; `raw` is the SQL the daemon sends, straight to the"
        " same database; `scan` is GetAnalytics' former direct scan of the events. Queries start right after"
        " the load: no ANALYZE, no warm-up call (the first call is in the figures). QueryEvents: pages of 50"
        " with `total`.",
        "Targets (measured, not asserted): GetAnalytics p95 < 100 ms; search p95 < 10 ms; filtered < 10 ms.",
    ]
    return "\n".join(lines)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.events_queries", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--backends", default="sqlite,postgres", help="from sqlite, postgres (default: both)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events loaded for the queries")
    parser.add_argument("--insert-events", type=int, default=100_000, help="rows per index-cost figure")
    parser.add_argument("--repeat", type=int, default=40, help="timed requests per query and side")
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
    loads: dict[str, float] = {}
    queries: list[QueryRow] = []
    costs: list[CostRow] = []
    with tempfile.TemporaryDirectory(prefix="stord-bench-events-queries-") as workdir:
        for name in arguments.backends.split(","):
            rate, backend_queries, cost = _bench_backend(name, Path(workdir) / name, arguments)
            loads[name] = rate
            queries += backend_queries
            costs.append(cost)
    print(_render(loads, queries, costs, load_before, arguments.events))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
