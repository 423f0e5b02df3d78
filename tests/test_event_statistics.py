"""PostgreSQL: the event store analyzes its tables itself after large ingests (see _event_statistics)."""

from __future__ import annotations

import asyncio

import psycopg

from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.postgres._event_statistics import ANALYZE_AFTER_EVENTS, EventStatistics
from stord.server.config import PostgresOptions
from tests.harness.postgres import PostgresServer

_LAST_ANALYZE = "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s"


def under_way(statistics: EventStatistics) -> asyncio.Task[None] | None:
    return statistics._pass


def test_a_pass_starts_after_enough_events_and_analyzes_the_event_tables(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database("event_statistics")

    async def scenario() -> None:
        backend = PostgresBackend(url, options=PostgresOptions())
        await backend.open()
        try:
            statistics = EventStatistics(backend.pool)
            statistics.stored(ANALYZE_AFTER_EVENTS - 1)
            assert under_way(statistics) is None  # not enough yet
            statistics.stored(1)
            analyzing = under_way(statistics)
            assert analyzing is not None
            await analyzing
            assert under_way(statistics) is None  # done, ready for the next one
        finally:
            await backend.close()

    asyncio.run(scenario())
    with psycopg.connect(url) as connection:
        for table in ("events", "event_rollups", "event_rollup_sessions"):
            row = connection.execute(_LAST_ANALYZE, (table,)).fetchone()
            assert row is not None, table
            assert row[0] is not None, table
