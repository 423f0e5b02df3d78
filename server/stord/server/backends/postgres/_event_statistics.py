"""Planner statistics for the event tables after large ingests: the daemon analyzes them itself.

autovacuum analyzes a table once a tenth of it changed, looking every minute: a table loaded from empty
within that minute is planned without statistics, and PostgreSQL then takes `namespace = ...` for selective,
walking the time index for a search that the trigram index answers in a millisecond. Likewise the trigram
index's pending list (fast update) is merged by autovacuum's analyze, not by ours: until then every search
reads it whole. So the event store counts the events it stores, and once they reach a tenth of what the
table held at its last analyze (at least ANALYZE_AFTER_EVENTS), analyzes the event tables and merges the
pending list, in the background, one pass at a time per daemon.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import structlog

from stord.server.backends.postgres._pool import Pool
from stord.server.ports import Unavailable

__all__ = ["ANALYZE_AFTER_EVENTS", "EventStatistics"]

_log = structlog.get_logger("stord.postgres")

ANALYZE_AFTER_EVENTS = 20_000
"""Fewest events stored between two passes."""

_ANALYZE = "ANALYZE events, event_rollups, event_rollup_sessions"
_MERGE_PENDING = "SELECT gin_clean_pending_list('events_payload_trgm'::regclass)"
_EVENTS = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'events'::regclass"


class EventStatistics:
    """Counts stored events; analyzes the event tables in the background once enough were stored."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._stored = 0
        self._known = 0
        """The events table's rows at the last pass, as the planner estimated them."""
        self._pass: asyncio.Task[None] | None = None

    def stored(self, count: int) -> None:
        """Note `count` events stored; start a pass when enough were."""
        self._stored += count
        if self._pass is None and self._stored >= max(ANALYZE_AFTER_EVENTS, self._known // 10):
            self._stored = 0
            self._pass = asyncio.create_task(self._analyze(), name="stord-events-analyze")

    async def close(self) -> None:
        """Stop a pass under way."""
        if self._pass is not None:
            self._pass.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pass

    async def _analyze(self) -> None:
        try:
            async with self._pool.connection() as connection:
                await connection.execute(_ANALYZE)
                await connection.execute(_MERGE_PENDING)
                row = await (await connection.execute(_EVENTS)).fetchone()
            self._known = 0 if row is None else max(int(row[0]), 0)
        except (psycopg.Error, Unavailable) as error:  # the next pass tries again; plans only get slower
            _log.warning("events_analyze_failed", error=str(error))
        finally:
            self._pass = None
