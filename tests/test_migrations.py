"""Migrations: numbered alike in both dialects, applied once even by daemons starting together."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.server.backends.sqlite._connect import connect
from stord.server.config import PostgresOptions, SqliteOptions
from stord.server.schema import load_migrations
from tests.harness.postgres import PostgresServer

EXPECTED_TABLES = {
    "schema_migrations",
    "kv_values",
    "kv_lists",
    "kv_list_items",
    "agents",
    "handler_manifests",
    "manifest_transformers",
    "manifest_documents",
    "documents",
    "jobs",
    "events",
    "event_sessions",
    "event_agents",
    "event_alert_rules",
    "event_alert_history",
    "event_feed_heads",
    "event_feed",
    "alert_evaluations",
    "alert_deliveries",
    "page_token_key",
    "event_rollups",
    "event_rollup_sessions",
}
SQLITE_SEARCH_TABLES = {"events_search", "events_search_data", "events_search_config", "events_search_idx"}
"""The FTS5 table of payload search and the shadow tables SQLite keeps for it."""


def test_both_dialects_have_the_same_numbered_steps() -> None:
    sqlite_steps = [(step.version, step.name) for step in load_migrations("sqlite")]
    postgres_steps = [(step.version, step.name) for step in load_migrations("postgres")]
    assert sqlite_steps == postgres_steps
    # Parallel branches reserve their numbers, so a branch may skip one another branch holds.
    versions = [version for version, _ in sqlite_steps]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


@pytest.mark.parametrize("round_", range(8))
def test_sqlite_daemons_starting_together_migrate_once(tmp_path: Path, round_: int) -> None:
    # Several rounds on fresh files: switching a new file to WAL from two connections at once used to fail
    # with "database is locked" about one time in four.
    path = tmp_path / "stord.db"

    async def open_three() -> None:
        backends = [SqliteBackend(path, options=SqliteOptions()) for _ in range(3)]
        await asyncio.gather(*(backend.open() for backend in backends))
        for backend in backends:
            await backend.close()

    asyncio.run(open_three())
    asyncio.run(open_three())  # and again: nothing left to do
    with sqlite3.connect(path) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations")]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert versions == [step.version for step in load_migrations("sqlite")]
    assert tables == EXPECTED_TABLES | SQLITE_SEARCH_TABLES


def test_postgres_daemons_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("migrations_race")

    async def open_three() -> None:
        backends = [PostgresBackend(url, options=PostgresOptions()) for _ in range(3)]
        await asyncio.gather(*(backend.open() for backend in backends))
        for backend in backends:
            await backend.close()

    asyncio.run(open_three())
    asyncio.run(open_three())
    with psycopg.connect(url) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        tables = {
            row[0]
            for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert versions == [step.version for step in load_migrations("postgres")]
    assert tables == EXPECTED_TABLES


def test_sqlite_connections_switching_a_new_file_to_wal_together_all_succeed(tmp_path: Path) -> None:
    # SQLite answers SQLITE_BUSY at once, without its busy handler, to the losers of this race; `connect`
    # must wait instead. Without that, about one round in four fails.
    for round_ in range(30):
        path = tmp_path / f"race-{round_}.db"
        start = threading.Barrier(3)
        failures: list[BaseException] = []

        def open_writer(
            path: Path = path, start: threading.Barrier = start, failures: list[BaseException] = failures
        ) -> None:
            start.wait()
            try:
                connect(path, SqliteOptions()).close()
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=open_writer) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures


# 0008: job instants become integer microseconds ----------------------------------------------------------

_JOB_COLUMNS = "namespace, id, queue, status, priority, run_at, attempts, max_attempts, payload, last_error,"
_JOB_COLUMNS += " lease_token, lease_expires_at, create_time, update_time"
_CREATED = 1_718_000_000.123456  # seconds, as the stores kept them before
_LAST = 253_402_300_799.999999999  # rounds up to 253402300800.0 as a float: past the last Timestamp
_LAST_MICROS = 253_402_300_799_999_999


async def _stored_jobs(backend: SqliteBackend | PostgresBackend) -> dict[str, tuple[Any, ...]]:
    await backend.open()  # applies 0008
    try:
        jobs = backend.jobs()
        found = {}
        for job_id in ("pending", "running"):
            job = await jobs.get("ns", job_id)
            assert job is not None
            found[job_id] = (job.run_at, job.lease_expires_at, job.create_time, job.update_time)
        return found
    finally:
        await backend.close()


_EXPECTED = {
    "pending": (_LAST_MICROS, None, 1_718_000_000_123_456, 1_718_000_000_123_456),
    "running": (1_718_000_000_123_456, 1_718_000_060_123_456, 1_718_000_000_123_456, 1_718_000_000_123_456),
}


def test_sqlite_job_instants_become_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "stord.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    for step in load_migrations("sqlite"):
        if step.version < 8:
            connection.executescript(step.sql)
            connection.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, 'then')", (step.version, step.name)
            )
    rows = [
        ("ns", "pending", "q", "pending", 0, _LAST, 0, 3, "{}", None, None, None, _CREATED, _CREATED),
        (
            "ns",
            "running",
            "q",
            "running",
            0,
            _CREATED,
            1,
            3,
            "{}",
            None,
            "t",
            _CREATED + 60,
            _CREATED,
            _CREATED,
        ),
    ]
    connection.executemany(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 14)})", rows)
    connection.close()
    assert asyncio.run(_stored_jobs(SqliteBackend(path, options=SqliteOptions()))) == _EXPECTED


def test_postgres_job_instants_become_microseconds(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("job_instants")
    at = datetime.datetime.fromtimestamp(_CREATED, datetime.UTC)
    last = datetime.datetime.max.replace(tzinfo=datetime.UTC)  # what the store wrote for a later instant
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for step in load_migrations("postgres"):
            if step.version < 8:
                connection.execute(step.sql.encode())
                connection.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (step.version, step.name))
        rows = [
            ("ns", "pending", "q", "pending", 0, last, 0, 3, "{}", None, None, None, at, at),
            (
                "ns",
                "running",
                "q",
                "running",
                0,
                at,
                1,
                3,
                "{}",
                None,
                "t",
                at + datetime.timedelta(seconds=60),
                at,
                at,
            ),
        ]
        values = ", ".join(["%s"] * 14)
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({values})", rows)
    assert asyncio.run(_stored_jobs(PostgresBackend(url, options=PostgresOptions()))) == _EXPECTED


_EVENT_ROWS = [  # namespace, id, timestamp, session, agent, type, severity, payload, cost_usd, latency_ms
    ("n1", "e1", 3_600_000 * 10 + 5, "s1", "a1", "tool_call", "info", '{"q":"Needle"}', None, None),
    ("n1", "e2", 3_600_000 * 10 + 9, "s2", "a1", "tool_response", "error", '{"durationMs":40}', None, 40.0),
    ("n1", "e3", 3_600_000 * 11, "s1", "a2", "cost_tracked", "info", '{"costUsd":0.5}', 0.5, None),
    ("n2", "e1", -1, "s9", "a1", "tool_error", "warn", '{"x":"needle"}', None, None),
]
_ROLLUPS = [  # what 0006 must derive from _EVENT_ROWS
    ("n1", 3_600_000 * 10, "a1", 2, 1, 1, 40.0, 1, 0.0),
    ("n1", 3_600_000 * 11, "a2", 1, 0, 0, 0.0, 0, 0.5),
    ("n2", -3_600_000, "a1", 1, 0, 1, 0.0, 0, 0.0),
]
_ROLLUP_SESSIONS = [
    ("n1", 3_600_000 * 10, "a1", "s1"),
    ("n1", 3_600_000 * 10, "a1", "s2"),
    ("n1", 3_600_000 * 11, "a2", "s1"),
    ("n2", -3_600_000, "a1", "s9"),
]
_ROLLUP_QUERIES = (
    "SELECT namespace, hour, agent_id, event_count, tool_call_count, error_count, latency_sum, latency_count,"
    " cost_sum FROM event_rollups ORDER BY 1, 2, 3",
    "SELECT namespace, hour, agent_id, session_id FROM event_rollup_sessions ORDER BY 1, 2, 3, 4",
)
_INSERT_EVENT = (
    "INSERT INTO events (namespace, id, timestamp, session_id, agent_id, event_type, severity, payload,"
    " metadata, prev_hash, hash, chain_index, cost_usd, latency_ms)"
    " VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, '{{}}', NULL, 'h', 0, {0}, {0})"
)


def test_sqlite_0006_derives_rollups_and_search_from_stored_events(tmp_path: Path) -> None:
    steps = load_migrations("sqlite")
    with sqlite3.connect(tmp_path / "old.db") as connection:
        for step in steps[:5]:
            connection.executescript(step.sql)
        connection.executemany(_INSERT_EVENT.format("?"), _EVENT_ROWS)
        connection.executescript(steps[5].sql)
        assert connection.execute(_ROLLUP_QUERIES[0]).fetchall() == _ROLLUPS
        assert connection.execute(_ROLLUP_QUERIES[1]).fetchall() == _ROLLUP_SESSIONS
        found = connection.execute(
            "SELECT events.id FROM events_search JOIN events ON events.rowid = events_search.rowid"
            ' WHERE events_search MATCH \'"eed" AND "dle"\' ORDER BY 1'
        )
        assert [row[0] for row in found] == ["e1", "e1"]  # both needles, any case, in n1 and n2


def test_postgres_0006_derives_rollups_from_stored_events(postgres_server: PostgresServer) -> None:
    steps = load_migrations("postgres")
    with psycopg.connect(postgres_server.create_database("backfill"), autocommit=True) as connection:
        for step in steps[:5]:
            connection.execute(step.sql.encode())
        with connection.cursor() as cursor:
            cursor.executemany(_INSERT_EVENT.format("%s").encode(), _EVENT_ROWS)
        connection.execute(steps[5].sql.encode())
        assert connection.execute(_ROLLUP_QUERIES[0].encode()).fetchall() == _ROLLUPS
        assert connection.execute(_ROLLUP_QUERIES[1].encode()).fetchall() == _ROLLUP_SESSIONS
        connection.execute(b"SET enable_seqscan = off")  # a table this small is otherwise scanned
        plan = connection.execute(b"EXPLAIN SELECT id FROM events WHERE payload ILIKE '%needle%'").fetchall()
        assert "events_payload_trgm" in " ".join(row[0] for row in plan)  # the index serves ILIKE
