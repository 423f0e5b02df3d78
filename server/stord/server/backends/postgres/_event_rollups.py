"""Rollups of the PostgreSQL event store (0006_event_rollups_search.sql); search needs no code here.

Every function runs inside the caller's transaction: the batch's insert, retention's delete, a restore.
Rows are aggregated in SQL, never event by event in Python. A batch updates its rollup rows in (hour,
agent) order after its agents' rows, which every batch locks in agent order first: concurrent batches
sharing an agent take turns there, so their rollup updates cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stord.server.backends._event_rollups import rollup_analytics
from stord.server.backends._event_sql import POSTGRES, read_analytics
from stord.server.backends.postgres._pool import Connection
from stord.server.events.port import Analytics, AnalyticsQuery
from stord.server.events.rollups import HOUR_MS, bucket_grid, hour_of, split_range

__all__ = ["add_batch", "analytics", "correct_after_retention", "rebuild_namespace"]

_HOUR = "timestamp - mod(mod(timestamp, 3600000) + 3600000, 3600000)"

# `{rows}` selects the events to add: the batch's, or a namespace's of some hours.
_ADD = f"""
WITH added AS MATERIALIZED (
    SELECT {_HOUR} AS hour, agent_id, session_id, event_type, severity, latency_ms, cost_usd
    FROM events WHERE {{rows}}
), rolled AS (
    INSERT INTO event_rollups AS r (namespace, hour, agent_id, event_count, tool_call_count, error_count,
                                    latency_sum, latency_count, cost_sum)
    SELECT %(namespace)s, hour, agent_id, count(*), count(*) FILTER (WHERE event_type = 'tool_call'),
           count(*) FILTER (WHERE severity IN ('error', 'critical') OR event_type = 'tool_error'),
           coalesce(sum(latency_ms), 0), count(latency_ms), coalesce(sum(cost_usd), 0)
    FROM added GROUP BY hour, agent_id ORDER BY hour, agent_id
    ON CONFLICT (namespace, hour, agent_id) DO UPDATE SET
        event_count = r.event_count + excluded.event_count,
        tool_call_count = r.tool_call_count + excluded.tool_call_count,
        error_count = r.error_count + excluded.error_count,
        latency_sum = r.latency_sum + excluded.latency_sum,
        latency_count = r.latency_count + excluded.latency_count,
        cost_sum = r.cost_sum + excluded.cost_sum
)
INSERT INTO event_rollup_sessions (namespace, hour, agent_id, session_id)
SELECT DISTINCT %(namespace)s, hour, agent_id, session_id FROM added ORDER BY 2, 3, 4
ON CONFLICT DO NOTHING
"""
_BATCH = "namespace = %(namespace)s AND id = ANY(%(ids)s)"
_HOURS = "namespace = %(namespace)s AND timestamp BETWEEN %(low)s AND %(high)s"

_OLDEST = "SELECT min(timestamp) FROM events WHERE namespace = %s"
_DROP = """
WITH sessions AS (
    DELETE FROM event_rollup_sessions WHERE namespace = %(namespace)s AND hour <= %(hour)s
)
DELETE FROM event_rollups WHERE namespace = %(namespace)s AND hour <= %(hour)s
"""
_LAST_HOUR = 1 << 62
"""Later than any stored hour."""


async def add_batch(connection: Connection, namespace: str, event_ids: Sequence[str]) -> None:
    """Add a batch just inserted into `events` (its new events' ids) to the rollups."""
    if event_ids:
        parameters = {"namespace": namespace, "ids": list(event_ids)}
        await connection.execute(_ADD.format(rows=_BATCH), parameters)


async def correct_after_retention(connection: Connection, namespace: str) -> None:
    """Correct the rollups after deleting some of the namespace's oldest events, in timestamp order.

    Whatever was deleted is older than the oldest event left (or at its time): hours before that one's
    hour have nothing left, and its own hour is counted again from its events.
    """
    row = await (await connection.execute(_OLDEST, (namespace,))).fetchone()
    oldest = None if row is None else row[0]
    hour = _LAST_HOUR if oldest is None else hour_of(oldest)
    await connection.execute(_DROP, {"namespace": namespace, "hour": hour})
    if oldest is not None:
        parameters = {"namespace": namespace, "low": hour, "high": hour + HOUR_MS - 1}
        await connection.execute(_ADD.format(rows=_HOURS), parameters)


async def rebuild_namespace(connection: Connection, namespace: str) -> None:
    """Count a namespace's rollups again from its events: after a restore into it."""
    await connection.execute(_DROP, {"namespace": namespace, "hour": _LAST_HOUR})
    parameters = {"namespace": namespace, "low": -_LAST_HOUR, "high": _LAST_HOUR}
    await connection.execute(_ADD.format(rows=_HOURS), parameters)


async def analytics(connection: Connection, namespace: str, query: AnalyticsQuery) -> Analytics:
    """Return GetAnalytics' answer from the rollups and the range's partial edge hours."""
    split = split_range(query.from_time, query.to_time)
    sql, parameters = rollup_analytics(
        POSTGRES, namespace, split, bucket_grid(query.granularity), query.agent_id
    )
    cursor = await connection.execute(sql, parameters)
    rows: list[Any] = await cursor.fetchall()
    return read_analytics(rows)
