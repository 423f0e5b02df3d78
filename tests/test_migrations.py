"""Migrations: numbered alike in both dialects, applied once even by daemons starting together."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.server.backends.sqlite._engine import connect
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
    "event_rollups",
    "event_rollup_sessions",
}
SQLITE_SEARCH_TABLES = {"events_search", "events_search_data", "events_search_config", "events_search_idx"}
"""The FTS5 table of payload search and the shadow tables SQLite keeps for it."""


def test_both_dialects_have_the_same_numbered_steps() -> None:
    sqlite_steps = [(step.version, step.name) for step in load_migrations("sqlite")]
    postgres_steps = [(step.version, step.name) for step in load_migrations("postgres")]
    assert sqlite_steps == postgres_steps
    assert [version for version, _ in sqlite_steps] == list(range(1, len(sqlite_steps) + 1))


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
