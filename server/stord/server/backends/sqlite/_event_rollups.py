"""Rollups and the payload search index of the SQLite event store (0006_event_rollups_search.sql).

Every function runs inside the caller's transaction on the writer connection (analytics on a reader): the
batch's insert, retention's delete, a restore. Rows are aggregated in SQL, never event by event in Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from stord.server.backends._event_rollups import rollup_analytics
from stord.server.backends._event_sql import SQLITE, read_analytics
from stord.server.events.port import Analytics, AnalyticsQuery
from stord.server.events.rollups import HOUR_MS, bucket_grid, hour_of, split_range

__all__ = ["add_batch", "analytics", "correct_after_retention", "rebuild_namespace"]

_HOUR = "timestamp - ((timestamp % 3600000) + 3600000) % 3600000"

# `{rows}` selects events by rowid: the batch's rows, or a namespace's rows of some hours.
_ADD_ROLLUPS = f"""
INSERT INTO event_rollups (namespace, hour, agent_id, event_count, tool_call_count, error_count, latency_sum,
                           latency_count, cost_sum)
SELECT :namespace, {_HOUR}, agent_id, count(*), sum(event_type = 'tool_call'),
       sum(severity IN ('error', 'critical') OR event_type = 'tool_error'), total(latency_ms),
       count(latency_ms), total(cost_usd)
FROM events WHERE {{rows}} GROUP BY 2, 3
ON CONFLICT (namespace, hour, agent_id) DO UPDATE SET
    event_count = event_count + excluded.event_count,
    tool_call_count = tool_call_count + excluded.tool_call_count,
    error_count = error_count + excluded.error_count,
    latency_sum = latency_sum + excluded.latency_sum,
    latency_count = latency_count + excluded.latency_count,
    cost_sum = cost_sum + excluded.cost_sum
"""
_ADD_SESSIONS = f"""
INSERT OR IGNORE INTO event_rollup_sessions (namespace, hour, agent_id, session_id)
SELECT DISTINCT :namespace, {_HOUR}, agent_id, session_id FROM events WHERE {{rows}}
"""
_ADD_TO_SEARCH = "INSERT INTO events_search (rowid, payload) SELECT rowid, payload FROM events WHERE {rows}"

_BATCH_BY_RANGE = "rowid BETWEEN :low AND :high"
_BATCH_BY_ID = """
rowid IN (SELECT rowid FROM events WHERE namespace = :namespace AND id IN (SELECT value FROM json_each(:ids)))
"""
_BATCH_ROWIDS = """
SELECT min(rowid), max(rowid), count(*) FROM events
WHERE namespace = :namespace AND id IN (SELECT value FROM json_each(:ids))
"""
_HOURS = "namespace = :namespace AND timestamp BETWEEN :low AND :high"

_OLDEST = "SELECT min(timestamp) FROM events WHERE namespace = ?"
_DROP_ROLLUPS = "DELETE FROM event_rollups WHERE namespace = :namespace AND hour <= :hour"
_DROP_SESSIONS = "DELETE FROM event_rollup_sessions WHERE namespace = :namespace AND hour <= :hour"
_LAST_HOUR = 1 << 62
"""Later than any stored hour."""


def add_batch(connection: sqlite3.Connection, namespace: str, event_ids: Sequence[str]) -> None:
    """Add a batch just inserted into `events` (its new events' ids) to the rollups and the search index."""
    if not event_ids:
        return
    ids = json.dumps(event_ids)
    low, high, count = connection.execute(_BATCH_ROWIDS, {"namespace": namespace, "ids": ids}).fetchone()
    # One executemany gives a batch consecutive rowids, so a range selects it without another id lookup;
    # the range is used only when it holds exactly the batch's rows.
    rows, parameters = (
        (_BATCH_BY_RANGE, {"namespace": namespace, "low": low, "high": high})
        if high - low + 1 == count
        else (_BATCH_BY_ID, {"namespace": namespace, "ids": ids})
    )
    _add(connection, rows, parameters, search=True)


def correct_after_retention(connection: sqlite3.Connection, namespace: str) -> None:
    """Correct the rollups after deleting some of the namespace's oldest events, in timestamp order.

    Whatever was deleted is older than the oldest event left (or at its time): hours before that one's
    hour have nothing left, and its own hour is counted again from its events.
    """
    (oldest,) = connection.execute(_OLDEST, (namespace,)).fetchone()
    hour = _LAST_HOUR if oldest is None else hour_of(oldest)
    connection.execute(_DROP_ROLLUPS, {"namespace": namespace, "hour": hour})
    connection.execute(_DROP_SESSIONS, {"namespace": namespace, "hour": hour})
    if oldest is not None:
        parameters = {"namespace": namespace, "low": hour, "high": hour + HOUR_MS - 1}
        _add(connection, _HOURS, parameters, search=False)


def rebuild_namespace(connection: sqlite3.Connection, namespace: str) -> None:
    """Count a namespace's rollups again from its events and index them all: after a restore into it.

    Its events must not be in the search index yet (a restore writes into an empty namespace).
    """
    connection.execute(_DROP_ROLLUPS, {"namespace": namespace, "hour": _LAST_HOUR})
    connection.execute(_DROP_SESSIONS, {"namespace": namespace, "hour": _LAST_HOUR})
    parameters = {"namespace": namespace, "low": -_LAST_HOUR, "high": _LAST_HOUR}
    _add(connection, _HOURS, parameters, search=True)


def analytics(connection: sqlite3.Connection, namespace: str, query: AnalyticsQuery) -> Analytics:
    """Return GetAnalytics' answer from the rollups and the range's partial edge hours."""
    split = split_range(query.from_time, query.to_time)
    sql, parameters = rollup_analytics(
        SQLITE, namespace, split, bucket_grid(query.granularity), query.agent_id
    )
    return read_analytics(connection.execute(sql, parameters).fetchall())


def _add(connection: sqlite3.Connection, rows: str, parameters: dict[str, Any], *, search: bool) -> None:
    connection.execute(_ADD_ROLLUPS.format(rows=rows), parameters)
    connection.execute(_ADD_SESSIONS.format(rows=rows), parameters)
    if search:
        connection.execute(_ADD_TO_SEARCH.format(rows=rows), parameters)
