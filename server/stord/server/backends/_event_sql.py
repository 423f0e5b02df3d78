"""SQL the SQLite and PostgreSQL event stores share: the filter conditions and the analytics aggregates.

Both dialects store the same columns with the same meaning, so one builder writes the WHERE clauses; only
placeholders, list membership and case-insensitive LIKE differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stord.server.backends._event_search import search_conditions, search_index_leads
from stord.server.ports import Analytics, AnalyticsFigures, EventFilter, EventPosition

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Conditions",
    "Dialect",
    "analytics_query",
    "bucket_expression",
    "read_analytics",
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


SQLITE = Dialect("?", "LIKE", binds_lists=False, modulo="(({0}) % {1})")
POSTGRES = Dialect("%s", "ILIKE", binds_lists=True, modulo="mod({0}, {1})")


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
        # events-read: when SQLite's search index leads, `+` keeps the indexes (all start with namespace) out
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
        if f.search is not None:  # events-read: the exact LIKE, narrowed by the search index
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


def bucket_expression(dialect: Dialect, width: int, origin: int) -> str:
    """The start of the bucket of `timestamp`, floored also before the epoch (the remainder truncates)."""
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
