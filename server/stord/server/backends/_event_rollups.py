"""SQL the SQLite and PostgreSQL event stores share for rollups (0006_event_rollups_search.sql).

GetAnalytics reads the hours a range covers whole from `event_rollups` and `event_rollup_sessions`, and its
partial first and last hours from `events`, in one statement; both dialects write it alike but for
placeholders and the remainder function. Keeping the rollups (per batch, after retention, after a
restore) is written per dialect, beside each store.
"""

from __future__ import annotations

from stord.server.backends._event_sql import Dialect
from stord.server.events.rollups import BucketGrid, RollupSplit

__all__ = ["floor_start", "rollup_analytics"]

_IS_ERROR = "severity IN ('error', 'critical') OR event_type = 'tool_error'"
_FIGURES = """sum(events), sum(tool_calls), sum(errors),
           coalesce(sum(latency) / CAST(nullif(sum(latencies), 0) AS DOUBLE PRECISION), 0),
           coalesce(sum(cost), 0)"""


def floor_start(dialect: Dialect, column: str, width: int, origin: int) -> str:
    """The start of the bucket of `column`, floored also before the epoch (the remainder truncates)."""
    remainder = dialect.modulo.format(f"{column} - ({origin})", width)
    return f"{column} - {dialect.modulo.format(f'{remainder} + {width}', width)}"


def rollup_analytics(
    dialect: Dialect, namespace: str, split: RollupSplit, grid: BucketGrid, agent_id: str | None
) -> tuple[str, list[object]]:
    """Return the analytics statement and its parameters: the rows `read_analytics` reads.

    A row per non-empty bucket by start, then the totals' row (bucket NULL, with the distinct agents).
    """
    p = dialect.placeholder
    agent = "" if agent_id is None else f" AND agent_id = {p}"
    agent_params: list[object] = [] if agent_id is None else [agent_id]
    hour_bucket = floor_start(dialect, "hour", grid.width, grid.origin)
    event_bucket = floor_start(dialect, "timestamp", grid.width, grid.origin)
    whole_hours = f"namespace = {p} AND hour >= {p} AND hour < {p}{agent}"
    whole_params = [namespace, split.first_hour, split.end_hour, *agent_params]
    edge = f"""
            SELECT {event_bucket} AS bucket, session_id, agent_id, event_type, severity, latency_ms, cost_usd
            FROM events WHERE namespace = {p} AND timestamp BETWEEN {p} AND {p}{agent}"""
    sql = f"""
        WITH edges AS MATERIALIZED ({edge}
            UNION ALL{edge}
        ), sums AS MATERIALIZED (
            SELECT bucket, sum(events) AS events, sum(tool_calls) AS tool_calls, sum(errors) AS errors,
                   sum(latency) AS latency, sum(latencies) AS latencies, sum(cost) AS cost
            FROM (
                SELECT {hour_bucket} AS bucket, event_count AS events, tool_call_count AS tool_calls,
                       error_count AS errors, latency_sum AS latency, latency_count AS latencies,
                       cost_sum AS cost
                FROM event_rollups WHERE {whole_hours}
                UNION ALL
                SELECT bucket, 1, CASE WHEN event_type = 'tool_call' THEN 1 ELSE 0 END,
                       CASE WHEN {_IS_ERROR} THEN 1 ELSE 0 END, coalesce(latency_ms, 0),
                       CASE WHEN latency_ms IS NULL THEN 0 ELSE 1 END, coalesce(cost_usd, 0)
                FROM edges
            ) AS parts
            GROUP BY bucket
        ), sessions AS MATERIALIZED (
            SELECT {hour_bucket} AS bucket, session_id FROM event_rollup_sessions WHERE {whole_hours}
            UNION ALL
            SELECT bucket, session_id FROM edges
        ), bucket_sessions AS (
            SELECT bucket, count(DISTINCT session_id) AS sessions FROM sessions GROUP BY bucket
        )
        SELECT sums.bucket, {_FIGURES}, max(bucket_sessions.sessions), NULL
        FROM sums JOIN bucket_sessions ON bucket_sessions.bucket = sums.bucket
        GROUP BY sums.bucket
        UNION ALL
        SELECT NULL, {_FIGURES}, (SELECT count(DISTINCT session_id) FROM sessions), (
            SELECT count(*) FROM (
                SELECT agent_id FROM event_rollups WHERE {whole_hours} UNION SELECT agent_id FROM edges
            ) AS agents
        )
        FROM sums
        ORDER BY 1 NULLS LAST
    """
    params: list[object] = [
        namespace, *split.head, *agent_params,
        namespace, *split.tail, *agent_params,
        *whole_params,
        *whole_params,
        *whole_params,
    ]  # fmt: skip
    return sql, params
