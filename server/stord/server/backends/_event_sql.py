"""SQL the SQLite and PostgreSQL event stores share: columns, row readers, filters and analytics aggregates.

Both dialects store the same columns with the same meaning, so one builder writes the WHERE clauses; only
placeholders, list membership and case-insensitive LIKE differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stord.server.backends._event_search import search_conditions, search_index_leads
from stord.server.events.port import (
    AlertCondition,
    AlertHistoryEntry,
    AlertRule,
    Analytics,
    AnalyticsFigures,
    Event,
    EventAgent,
    EventFilter,
    EventPosition,
    EventType,
    Granularity,
    Session,
    SessionStatus,
    Severity,
)

__all__ = [
    "AGENT_COLUMNS",
    "BUCKET_ORIGINS",
    "BUCKET_WIDTHS",
    "EVENT_COLUMNS",
    "HISTORY_COLUMNS",
    "POSTGRES",
    "RULE_COLUMNS",
    "SESSION_COLUMNS",
    "SQLITE",
    "Conditions",
    "Dialect",
    "analytics_query",
    "bucket_expression",
    "read_agent",
    "read_analytics",
    "read_entry",
    "read_event",
    "read_rule",
    "read_session",
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL dialect writes a parameter, membership in a list and a case-insensitive LIKE."""

    placeholder: str
    case_insensitive_like: str
    """SQLite's LIKE folds ASCII letters only; PostgreSQL's ILIKE on COLLATE "C" text does the same."""
    binds_lists: bool
    """True: a list is one parameter (`= ANY(%s)`); False: one placeholder per item (`IN (?, ?)`)."""
    modulo: str
    """The remainder of {0} divided by {1}, truncated toward zero (psycopg reserves `%` for parameters)."""
    read_strings: Callable[[Any], tuple[str, ...]]
    """A column of strings as read: SQLite keeps a JSON array as text, PostgreSQL a text[]."""


def _json_strings(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


SQLITE = Dialect("?", "LIKE", binds_lists=False, modulo="(({0}) % {1})", read_strings=_json_strings)
POSTGRES = Dialect("%s", "ILIKE", binds_lists=True, modulo="mod({0}, {1})", read_strings=tuple)

# The columns both dialects read, in the order the readers below take them.
EVENT_COLUMNS = (
    "id, timestamp, session_id, agent_id, event_type, severity, payload, metadata, prev_hash, hash, "
    "chain_index"
)
SESSION_COLUMNS = (
    "id, agent_id, agent_name, started_at, ended_at, status, event_count, tool_call_count, error_count, "
    "total_cost_usd, tags"
)
AGENT_COLUMNS = "id, name, description, first_seen_at, last_seen_at, session_count"
RULE_COLUMNS = (
    "id, name, enabled, condition, threshold, window_minutes, scope_agent_id, scope_tags, notify_channels, "
    "created_at, updated_at"
)
HISTORY_COLUMNS = "id, rule_id, triggered_at, resolved_at, current_value, threshold, message"
BUCKET_WIDTHS = {Granularity.HOUR: 3_600_000, Granularity.DAY: 86_400_000, Granularity.WEEK: 604_800_000}
BUCKET_ORIGINS = {Granularity.HOUR: 0, Granularity.DAY: 0, Granularity.WEEK: -259_200_000}
"""Where buckets start: hours and days at the epoch's grid, weeks on Mondays (ISO weeks)."""

_TYPES = {member.value: member for member in EventType}
_SEVERITIES = {member.value: member for member in Severity}


def read_event(row: Sequence[Any]) -> Event:
    """Return the event of a row of EVENT_COLUMNS."""
    return Event(row[0], row[1], row[2], row[3], _TYPES[row[4]], _SEVERITIES[row[5]], *row[6:11])


def read_session(dialect: Dialect, row: Sequence[Any]) -> Session:
    """Return the session of a row of SESSION_COLUMNS."""
    return Session(
        id=row[0],
        agent_id=row[1],
        agent_name=row[2],
        started_at=row[3],
        ended_at=row[4],
        status=SessionStatus(row[5]),
        event_count=row[6],
        tool_call_count=row[7],
        error_count=row[8],
        total_cost_usd=row[9],
        tags=dialect.read_strings(row[10]),
    )


def read_agent(row: Sequence[Any]) -> EventAgent:
    """Return the agent of a row of AGENT_COLUMNS."""
    return EventAgent(*row)


def read_rule(dialect: Dialect, row: Sequence[Any]) -> AlertRule:
    """Return the alert rule of a row of RULE_COLUMNS."""
    return AlertRule(
        id=row[0],
        name=row[1],
        enabled=bool(row[2]),
        condition=AlertCondition(row[3]),
        threshold=row[4],
        window_minutes=row[5],
        scope_agent_id=row[6],
        scope_tags=dialect.read_strings(row[7]),
        notify_channels=dialect.read_strings(row[8]),
        created_at=row[9],
        updated_at=row[10],
    )


def read_entry(row: Sequence[Any]) -> AlertHistoryEntry:
    """Return the alert history entry of a row of HISTORY_COLUMNS."""
    return AlertHistoryEntry(*row)


@dataclass(slots=True)
class Conditions:
    """A WHERE clause under construction and its parameters, in order."""

    dialect: Dialect
    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, clause: str, *values: object) -> None:
        """Add a clause whose `{}` marks take `values`, in order."""
        self.clauses.append(clause.format(*(self.dialect.placeholder for _ in values)))
        self.params.extend(values)

    def any_of(self, column: str, values: Sequence[object]) -> None:
        """Add `column` equal to any of `values`."""
        if self.dialect.binds_lists:
            self.add(f"{column} = ANY({{}})", list(values))
        else:
            self.add(f"{column} IN ({', '.join('{}' for _ in values)})", *values)

    def where(self) -> str:
        return " AND ".join(self.clauses)

    def events(self, namespace: str, event_filter: EventFilter) -> Conditions:
        """Add the conditions that select a namespace's events passing the filter."""
        f = event_filter
        # When SQLite's search index leads, `+` keeps the indexes (all start with namespace) out
        indexed = self.dialect is SQLITE and search_index_leads(f)
        self.add("+namespace = {}" if indexed else "namespace = {}", namespace)
        if f.session_id is not None:
            self.add("session_id = {}", f.session_id)
        if f.agent_id is not None:
            self.add("agent_id = {}", f.agent_id)
        if f.event_types:
            self.any_of("event_type", sorted(kind.value for kind in f.event_types))
        if f.severities:
            self.any_of("severity", sorted(severity.value for severity in f.severities))
        if f.from_time is not None:
            self.add("timestamp >= {}", f.from_time)
        if f.to_time is not None:
            self.add("timestamp <= {}", f.to_time)
        if f.search is not None:  # the exact LIKE decides; the search index narrows
            like = self.dialect.case_insensitive_like
            for clause, value in search_conditions(f.search, case_insensitive_like=like, fts_table=indexed):
                self.add(clause, value)
        return self

    def after(self, position: EventPosition | None, *, descending: bool) -> Conditions:
        """Add the keyset condition that resumes after `position` in (timestamp, id) order."""
        if position is not None:
            self.add(
                f"(timestamp, id) {'<' if descending else '>'} ({{}}, {{}})", position.timestamp, position.id
            )
        return self


def bucket_expression(dialect: Dialect, granularity: Granularity) -> str:
    """The start of the bucket of `timestamp`, floored also before the epoch (the remainder truncates)."""
    width, origin = BUCKET_WIDTHS[granularity], BUCKET_ORIGINS[granularity]
    remainder = dialect.modulo.format(f"timestamp - ({origin})", width)
    return f"timestamp - {dialect.modulo.format(f'{remainder} + {width}', width)}"


def analytics_query(dialect: Dialect, bucket: str, where: str) -> str:
    """One scan for the figures of DESIGN 4.4: a row per non-empty bucket by start, then the totals' row.

    The events are first folded per (bucket, session, agent); buckets and totals then aggregate those few
    groups, so the distinct counts no longer sort a million events twice. The totals' row has bucket NULL.
    """
    total = "total" if dialect is SQLITE else "sum"  # SQLite's total() is 0.0, not NULL, over no rows
    figures = f"""sum(events), sum(tool_calls), sum(errors),
            coalesce({total}(latency) / nullif(sum(latencies), 0), 0), coalesce({total}(cost), 0),
            count(DISTINCT session_id)"""
    return f"""
        WITH folded AS MATERIALIZED (
            SELECT {bucket} AS bucket, session_id, agent_id, count(*) AS events,
                   sum(CASE WHEN event_type = 'tool_call' THEN 1 ELSE 0 END) AS tool_calls,
                   sum(CASE WHEN severity IN ('error', 'critical') OR event_type = 'tool_error'
                       THEN 1 ELSE 0 END) AS errors,
                   {total}(latency_ms) AS latency, count(latency_ms) AS latencies, {total}(cost_usd) AS cost
            FROM events WHERE {where}
            GROUP BY 1, session_id, agent_id
        )
        SELECT bucket, {figures}, NULL FROM folded GROUP BY bucket
        UNION ALL
        SELECT NULL, {figures}, count(DISTINCT agent_id) FROM folded
        ORDER BY 1 NULLS LAST
    """


def read_analytics(rows: Sequence[Sequence[Any]]) -> Analytics:
    """Read the rows of `analytics_query`: the buckets, then the totals (their sums NULL without events)."""
    *buckets, totals = rows
    return Analytics(
        [(int(row[0]), _figures(row[1:])) for row in buckets], _figures(totals[1:]), int(totals[7])
    )


def _figures(row: Sequence[Any]) -> AnalyticsFigures:
    return AnalyticsFigures(
        int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), float(row[3]), float(row[4]), int(row[5])
    )
