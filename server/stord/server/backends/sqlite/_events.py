"""The event store (DESIGN 4.4) over the tables of migrations/sqlite/0002_events.sql.

A batch is one write on the engine's writer thread, running events.ingest over `_IngestTransaction`: the
session heads are read, the batch linked and inserted with one executemany, sessions and agents updated and
the batch appended to the namespace's event feed, all in the write's transaction. SQLite runs one write
transaction at a time on a file (other processes on the same file wait for its lock), so nothing can move a
head between the read and the insert, and feed positions follow commit order. Followers notice commits by
polling `PRAGMA data_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from stord.server.backends._event_sql import (
    AGENT_COLUMNS,
    EVENT_COLUMNS,
    HISTORY_COLUMNS,
    RULE_COLUMNS,
    SESSION_COLUMNS,
    SQLITE,
    Conditions,
    read_agent,
    read_entry,
    read_event,
    read_rule,
    read_session,
)
from stord.server.backends.sqlite import _event_rollups
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.events.chain import ChainHead, verify_chain
from stord.server.events.ingest import EVENT_ROW_COLUMNS, EventRow, HeadGuesses, store_batch
from stord.server.events.model import AgentChange, SessionChange
from stord.server.events.port import (
    FEED_KEEP_SECONDS,
    AlertHistoryEntry,
    AlertHistoryPage,
    AlertRule,
    Analytics,
    AnalyticsQuery,
    ChainVerification,
    CommitListener,
    Event,
    EventAgent,
    EventAgentUpdate,
    EventFilter,
    EventInput,
    EventPage,
    EventPosition,
    EventQuery,
    EventStats,
    FeedBatch,
    FeedPage,
    InsertOutcome,
    RetentionOutcome,
    Session,
    SessionPage,
    SessionQuery,
    SessionUpdate,
)
from stord.server.ports import AlreadyExists, Clock, NotFound, Unavailable

__all__ = ["INSERT_EVENT", "SqliteEventStore", "rule_values"]

RETENTION_BATCH = 5000
"""Events deleted per write: a long retention pass must not hold the writer from ingest for long."""

FEED_POLL_SECONDS = 0.025
"""How often a watch of the event feed asks SQLite whether another connection committed (only while
someone tails): the delay before a tail sees what another process stored."""

FEED_PRUNE = 4
"""Expired feed batches a write removes at most: one in, one out in a steady state, the rest to catch up."""

_FEED_NEXT = """
INSERT INTO event_feed_heads (namespace, position) VALUES (?, 1)
ON CONFLICT (namespace) DO UPDATE SET position = position + 1
RETURNING position
"""
_FEED_APPEND = "INSERT INTO event_feed (namespace, position, committed_at, event_ids) VALUES (?, ?, ?, ?)"
_FEED_PRUNE = f"""
DELETE FROM event_feed WHERE namespace = ? AND committed_at < ? AND position IN (
    SELECT position FROM event_feed WHERE namespace = ? ORDER BY position LIMIT {FEED_PRUNE}
)
"""
_FEED_HEAD = "SELECT position FROM event_feed_heads WHERE namespace = ?"
_FEED_BATCHES = """
SELECT position, event_ids FROM event_feed WHERE namespace = ? AND position > ? ORDER BY position LIMIT ?
"""

_QUALIFIED_EVENT_COLUMNS = ", ".join(f"events.{column}" for column in EVENT_COLUMNS.split(", "))
INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_ROW_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_ROW_COLUMNS))})"
)

# A batch's effect on each session: counters add up, the latest status/end/name/tags win, the head moves.
_APPLY_SESSION = """
INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status, event_count,
                            tool_call_count, error_count, total_cost_usd, tags, chain_length, last_hash)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, coalesce(?7, 'active'), ?8, ?9, ?10, ?11, coalesce(?12, '[]'), ?13, ?14)
ON CONFLICT (namespace, id) DO UPDATE SET
    agent_name = coalesce(?4, agent_name),
    started_at = min(started_at, ?5),
    ended_at = coalesce(?6, ended_at),
    status = coalesce(?7, status),
    event_count = event_count + ?8,
    tool_call_count = tool_call_count + ?9,
    error_count = error_count + ?10,
    total_cost_usd = total_cost_usd + ?11,
    tags = coalesce(?12, tags),
    chain_length = ?13,
    last_hash = ?14
"""
_APPLY_AGENT = """
INSERT INTO event_agents (namespace, id, name, description, first_seen_at, last_seen_at, session_count)
VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6)
ON CONFLICT (namespace, id) DO UPDATE SET
    first_seen_at = min(first_seen_at, ?4),
    last_seen_at = max(last_seen_at, ?5),
    session_count = session_count + ?6
"""


def _in(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


class SqliteEventStore:
    """Events, sessions, agents and alert rules in one SQLite file."""

    def __init__(
        self, engine: SqliteEngine, clock: Clock, *, feed_keep_seconds: float = FEED_KEEP_SECONDS
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._feed_keep_ms = int(feed_keep_seconds * 1000)
        self._head_guesses = HeadGuesses()

    @property
    def clock(self) -> Clock:
        return self._clock

    # Writing events --------------------------------------------------------------------------------------

    async def insert_events(self, namespace: str, events: Sequence[EventInput]) -> InsertOutcome:
        now = int(self._clock() * 1000)
        expired = now - self._feed_keep_ms
        # Linked here, on the event loop, so that the writer thread only checks the heads and writes.
        guess = self._head_guesses.link(namespace, events)
        outcome = await self._engine.write(
            lambda connection: store_batch(
                _IngestTransaction(connection, namespace, now, expired), namespace, events, guess=guess
            )
        )
        self._head_guesses.committed(namespace, outcome.stored)
        return outcome

    # Following the feed ----------------------------------------------------------------------------------

    async def feed_position(self, namespace: str) -> int:
        return await self._engine.lookup(lambda connection: _feed_head(connection, namespace))

    async def read_feed(self, namespace: str, *, after: int, limit: int) -> FeedPage:
        return await self._engine.read(lambda connection: _read_feed(connection, namespace, after, limit))

    @contextlib.asynccontextmanager
    async def watch_feed(self, listener: CommitListener) -> AsyncIterator[None]:
        poller = asyncio.create_task(self._poll_commits(listener), name="stord-sqlite-feed-watch")
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _poll_commits(self, listener: CommitListener) -> None:
        """Tell `listener` whenever `PRAGMA data_version` moves: another connection (this process's writer
        or another process) committed something, maybe events."""
        listener(None, 0)
        version: int | None = None
        while True:
            await asyncio.sleep(FEED_POLL_SECONDS)
            try:
                current = await self._engine.lookup(_data_version)
            except (Unavailable, sqlite3.Error):
                current = None  # the follower's read will report it, and retry
            if current is None or current != version:
                version = current
                listener(None, 0)

    # Reading events --------------------------------------------------------------------------------------

    async def get_event(self, namespace: str, event_id: str) -> Event | None:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = ? AND id = ?"
        row = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, event_id)).fetchone()
        )
        return None if row is None else read_event(row)

    async def query_events(self, namespace: str, query: EventQuery) -> EventPage:
        matching = Conditions(SQLITE).events(namespace, query.filter)
        page = Conditions(SQLITE, list(matching.clauses), list(matching.params))
        page.after(query.after, descending=query.descending)
        direction = "DESC" if query.descending else "ASC"
        select = f"""
            SELECT {EVENT_COLUMNS} FROM events WHERE {page.where()}
            ORDER BY timestamp {direction}, id {direction} LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM events WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> EventPage:
            rows = connection.execute(select, (*page.params, query.limit, query.offset)).fetchall()
            total = connection.execute(count, matching.params).fetchone()[0]
            return EventPage([read_event(row) for row in rows], total)

        return await self._engine.read(read)

    async def count_events(self, namespace: str, event_filter: EventFilter) -> int:
        matching = Conditions(SQLITE).events(namespace, event_filter)
        sql = f"SELECT count(*) FROM events WHERE {matching.where()}"
        count: int = await self._engine.read(
            lambda connection: connection.execute(sql, matching.params).fetchone()[0]
        )
        return count

    async def session_timeline(
        self, namespace: str, session_id: str, *, after: EventPosition | None, limit: int
    ) -> list[Event]:
        conditions = Conditions(SQLITE).events(namespace, EventFilter(session_id=session_id))
        conditions.after(after, descending=False)
        sql = f"""
            SELECT {EVENT_COLUMNS} FROM events WHERE {conditions.where()} ORDER BY timestamp, id LIMIT ?
        """
        rows = await self._engine.read(
            lambda connection: connection.execute(sql, (*conditions.params, limit)).fetchall()
        )
        return [read_event(row) for row in rows]

    async def verify_chain(self, namespace: str, session_id: str) -> ChainVerification | None:
        def read(connection: sqlite3.Connection) -> ChainVerification | None:
            head = connection.execute(
                "SELECT chain_length, last_hash FROM event_sessions WHERE namespace = ? AND id = ?",
                (namespace, session_id),
            ).fetchone()
            if head is None:
                return None
            rows = connection.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = ? AND session_id = ?"
                " ORDER BY chain_index",
                (namespace, session_id),
            ).fetchall()
            return verify_chain([read_event(row) for row in rows], ChainHead(head[0], head[1]))

        return await self._engine.read(read)

    # Sessions and agents ---------------------------------------------------------------------------------

    async def upsert_session(self, namespace: str, update: SessionUpdate) -> Session:
        return await self._engine.write(lambda connection: _upsert_session(connection, namespace, update))

    async def get_session(self, namespace: str, session_id: str) -> Session | None:
        row = await self._engine.lookup(lambda connection: _session_row(connection, namespace, session_id))
        return None if row is None else read_session(SQLITE, row)

    async def query_sessions(self, namespace: str, query: SessionQuery) -> SessionPage:
        matching = Conditions(SQLITE)
        matching.add("namespace = {}", namespace)
        if query.agent_id is not None:
            matching.add("agent_id = {}", query.agent_id)
        if query.statuses:
            matching.any_of("status", sorted(status.value for status in query.statuses))
        if query.from_time is not None:
            matching.add("started_at >= {}", query.from_time)
        if query.to_time is not None:
            matching.add("started_at <= {}", query.to_time)
        if query.tags:
            tags = sorted(query.tags)
            matching.add(
                f"EXISTS (SELECT 1 FROM json_each(event_sessions.tags) WHERE value IN ({_in(tags)}))".replace(
                    "?", "{}"
                ),
                *tags,
            )
        select = f"""
            SELECT {SESSION_COLUMNS} FROM event_sessions WHERE {matching.where()}
            ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM event_sessions WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> SessionPage:
            rows = connection.execute(select, (*matching.params, query.limit, query.offset)).fetchall()
            total = connection.execute(count, matching.params).fetchone()[0]
            return SessionPage([read_session(SQLITE, row) for row in rows], total)

        return await self._engine.read(read)

    async def upsert_agent(self, namespace: str, update: EventAgentUpdate) -> EventAgent:
        def write(connection: sqlite3.Connection) -> EventAgent:
            connection.execute(
                f"INSERT INTO event_agents (namespace, {AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT (namespace, id) DO NOTHING",
                (namespace, update.id, update.name, update.description, update.now, update.now),
            )
            values = {"name": update.name, "description": update.description}
            written = sorted(update.written)
            if written:
                connection.execute(
                    f"UPDATE event_agents SET {', '.join(f'{name} = ?' for name in written)}"
                    " WHERE namespace = ? AND id = ?",
                    (*(values[name] for name in written), namespace, update.id),
                )
            return read_agent(_agent_row(connection, namespace, update.id))

        return await self._engine.write(write)

    async def get_agent(self, namespace: str, agent_id: str) -> EventAgent | None:
        row = await self._engine.lookup(lambda connection: _agent_row(connection, namespace, agent_id))
        return None if row is None else read_agent(row)

    async def list_agents(self, namespace: str, *, after: str | None, limit: int) -> list[EventAgent]:
        sql = f"SELECT {AGENT_COLUMNS} FROM event_agents WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?"
        rows = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, after or "", limit)).fetchall()
        )
        return [read_agent(row) for row in rows]

    # Analytics -------------------------------------------------------------------------------------------

    async def analytics(self, namespace: str, query: AnalyticsQuery) -> Analytics:
        return await self._engine.read(  # from the hourly rollups
            lambda connection: _event_rollups.analytics(connection, namespace, query)
        )

    # Alert rules and history -----------------------------------------------------------------------------

    async def create_alert_rule(self, namespace: str, rule: AlertRule) -> None:
        def write(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(
                    f"INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS}) VALUES (?{', ?' * 11})",
                    (namespace, *rule_values(rule)),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"alert rule {rule.id} exists already") from None

        await self._engine.write(write)

    async def get_alert_rule(self, namespace: str, rule_id: str) -> AlertRule | None:
        row = await self._engine.lookup(lambda connection: _rule_row(connection, namespace, rule_id))
        return None if row is None else read_rule(SQLITE, row)

    async def update_alert_rule(self, namespace: str, rule: AlertRule, written: frozenset[str]) -> AlertRule:
        values = dict(zip(RULE_COLUMNS.split(", "), rule_values(rule), strict=True))
        columns = sorted(
            ({"scope_agent_id", "scope_tags"} if "scope" in written else set()) | (written - {"scope"})
        )
        columns.append("updated_at")
        assignments = ", ".join(f"{name} = ?" for name in columns)
        sql = f"UPDATE event_alert_rules SET {assignments} WHERE namespace = ? AND id = ?"

        def write(connection: sqlite3.Connection) -> AlertRule:
            if (
                connection.execute(sql, (*(values[name] for name in columns), namespace, rule.id)).rowcount
                == 0
            ):
                raise NotFound(f"alert rule {rule.id} does not exist")
            return read_rule(SQLITE, _rule_row(connection, namespace, rule.id))

        return await self._engine.write(write)

    async def delete_alert_rule(self, namespace: str, rule_id: str) -> bool:
        sql = "DELETE FROM event_alert_rules WHERE namespace = ? AND id = ?"
        deleted: int = await self._engine.write(
            lambda connection: connection.execute(sql, (namespace, rule_id)).rowcount
        )
        return deleted > 0

    async def list_alert_rules(self, namespace: str, *, after: str | None, limit: int) -> list[AlertRule]:
        sql = f"SELECT {RULE_COLUMNS} FROM event_alert_rules WHERE namespace = ? AND id > ? ORDER BY id"
        sql += " LIMIT ?"
        rows = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, after or "", limit)).fetchall()
        )
        return [read_rule(SQLITE, row) for row in rows]

    async def record_alert(self, namespace: str, entry: AlertHistoryEntry) -> None:
        def write(connection: sqlite3.Connection) -> None:
            if _rule_row(connection, namespace, entry.rule_id) is None:
                raise NotFound(f"alert rule {entry.rule_id} does not exist")
            try:
                connection.execute(
                    f"INSERT INTO event_alert_history (namespace, {HISTORY_COLUMNS}) VALUES (?{', ?' * 7})",
                    (namespace, *_entry_values(entry)),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"alert {entry.id} exists already") from None

        await self._engine.write(write)

    async def list_alert_history(
        self, namespace: str, *, rule_id: str | None, offset: int, limit: int
    ) -> AlertHistoryPage:
        matching = Conditions(SQLITE)
        matching.add("namespace = {}", namespace)
        if rule_id is not None:
            matching.add("rule_id = {}", rule_id)
        select = f"""
            SELECT {HISTORY_COLUMNS} FROM event_alert_history WHERE {matching.where()}
            ORDER BY triggered_at DESC, id DESC LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM event_alert_history WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> AlertHistoryPage:
            rows = connection.execute(select, (*matching.params, limit, offset)).fetchall()
            return AlertHistoryPage(
                [read_entry(row) for row in rows], connection.execute(count, matching.params).fetchone()[0]
            )

        return await self._engine.read(read)

    # Retention and stats ---------------------------------------------------------------------------------

    async def apply_retention(self, namespace: str | None, cutoff: int) -> RetentionOutcome:
        if namespace is None:
            rows = await self._engine.read(
                lambda connection: connection.execute(
                    "SELECT DISTINCT namespace FROM event_sessions"
                ).fetchall()
            )
            namespaces = [row[0] for row in rows]
        else:
            namespaces = [namespace]
        deleted_events = deleted_sessions = 0
        for name in namespaces:
            while True:
                deleted = await self._engine.write(_expired_events(name, cutoff))
                deleted_events += deleted
                if deleted < RETENTION_BATCH:
                    break
            deleted_sessions += await self._engine.write(_emptied_sessions(name, cutoff))
        return RetentionOutcome(deleted_events, deleted_sessions)

    async def stats(self, namespace: str) -> EventStats:
        def read(connection: sqlite3.Connection) -> EventStats:
            events, oldest, newest = connection.execute(
                "SELECT count(*), min(timestamp), max(timestamp) FROM events WHERE namespace = ?",
                (namespace,),
            ).fetchone()
            sessions = connection.execute(
                "SELECT count(*) FROM event_sessions WHERE namespace = ?", (namespace,)
            )
            agents = connection.execute("SELECT count(*) FROM event_agents WHERE namespace = ?", (namespace,))
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            return EventStats(
                events, sessions.fetchone()[0], agents.fetchone()[0], oldest, newest, pages * page_size
            )

        return await self._engine.read(read)


# Statements run on the writer thread ---------------------------------------------------------------------


def _data_version(connection: sqlite3.Connection) -> int:
    version: int = connection.execute("PRAGMA data_version").fetchone()[0]
    return version


def _feed_head(connection: sqlite3.Connection, namespace: str) -> int:
    row = connection.execute(_FEED_HEAD, (namespace,)).fetchone()
    return 0 if row is None else int(row[0])


def _read_feed(connection: sqlite3.Connection, namespace: str, after: int, limit: int) -> FeedPage:
    rows = connection.execute(_FEED_BATCHES, (namespace, after, limit)).fetchall()
    missed = False
    if not rows or rows[0][0] != after + 1:
        head = _feed_head(connection, namespace)
        missed = head != after if not rows else True  # pruned past `after`, or the feed went back
    batches = [(position, json.loads(event_ids)) for position, event_ids in rows]
    wanted = [event_id for _, event_ids in batches for event_id in event_ids]
    found = {
        row[0]: read_event(row)
        for row in connection.execute(
            f"SELECT {_QUALIFIED_EVENT_COLUMNS} FROM json_each(?) AS wanted CROSS JOIN events"
            " WHERE events.namespace = ? AND events.id = wanted.value",
            (json.dumps(wanted), namespace),
        )
    }
    return FeedPage(
        [
            FeedBatch(position, [found[event_id] for event_id in event_ids if event_id in found])
            for position, event_ids in batches
        ],
        missed,
    )


class _IngestTransaction:
    """The primitives of ingest.store_batch on the writer's connection, in the engine's transaction."""

    def __init__(self, connection: sqlite3.Connection, namespace: str, now: int, expired: int) -> None:
        self._connection = connection
        self._namespace = namespace
        self._now = now
        self._expired = expired

    def chain_heads(self, session_ids: Sequence[str]) -> dict[str, ChainHead]:
        # The write's transaction holds the file's write lock: nobody moves a head until it commits.
        rows = self._connection.execute(
            "SELECT session.id, session.chain_length, session.last_hash FROM json_each(?) AS wanted"
            " CROSS JOIN event_sessions AS session WHERE session.namespace = ? AND session.id = wanted.value",
            (json.dumps(session_ids), self._namespace),
        )
        return {row[0]: ChainHead(row[1], row[2]) for row in rows}

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        rows = self._connection.execute(
            "SELECT events.id FROM json_each(?) AS wanted CROSS JOIN events"
            " WHERE events.namespace = ? AND events.id = wanted.value",
            (json.dumps(event_ids), self._namespace),
        )
        return {row[0] for row in rows}

    def insert_events(self, rows: Sequence[EventRow]) -> bool:
        self._connection.execute("SAVEPOINT stord_events")
        try:
            self._connection.executemany(INSERT_EVENT, rows)
        except sqlite3.IntegrityError:
            self._connection.execute("ROLLBACK TO stord_events")
            return False
        finally:
            self._connection.execute("RELEASE stord_events")
        return True

    def upsert_sessions(self, changes: Sequence[SessionChange]) -> None:
        namespace = self._namespace
        self._connection.executemany(
            _APPLY_SESSION,
            [
                (namespace, change.session_id, change.agent_id, change.agent_name, change.first_timestamp,
                 change.ended_at, None if change.status is None else change.status.value, change.event_count,
                 change.tool_call_count, change.error_count, change.cost_usd,
                 None if change.tags is None else json.dumps(change.tags), change.head.length,
                 change.head.last_hash)
                for change in changes
            ],
        )  # fmt: skip

    def upsert_agents(self, changes: Sequence[AgentChange]) -> None:
        namespace = self._namespace
        self._connection.executemany(
            _APPLY_AGENT,
            [
                (namespace, change.agent_id, change.name or change.agent_id, change.first_seen_at,
                 change.last_seen_at, change.sessions_started)
                for change in changes
            ],
        )  # fmt: skip

    def update_rollups(self, event_ids: Sequence[str]) -> None:
        _event_rollups.add_batch(self._connection, self._namespace, event_ids)

    def append_to_feed(self, events: list[Event]) -> int:
        # Expired batches go in the same write: the feed stays a few minutes long.
        connection, namespace = self._connection, self._namespace
        position: int = connection.execute(_FEED_NEXT, (namespace,)).fetchall()[0][0]
        event_ids = json.dumps([event.id for event in events])
        connection.execute(_FEED_APPEND, (namespace, position, self._now, event_ids))
        connection.execute(_FEED_PRUNE, (namespace, self._expired, namespace))
        return position


def _expired_events(namespace: str, cutoff: int) -> Callable[[sqlite3.Connection], int]:
    """Return a write deleting up to RETENTION_BATCH events at or before the cutoff; it returns how many."""

    def delete(connection: sqlite3.Connection) -> int:
        deleted = connection.execute(
            "DELETE FROM events WHERE rowid IN"
            " (SELECT rowid FROM events WHERE namespace = ? AND timestamp <= ? ORDER BY timestamp LIMIT ?)",
            (namespace, cutoff, RETENTION_BATCH),
        ).rowcount
        _event_rollups.correct_after_retention(connection, namespace)  # same transaction as the deletes
        return deleted

    return delete


def _emptied_sessions(namespace: str, cutoff: int) -> Callable[[sqlite3.Connection], int]:
    """Return a write deleting the sessions started by the cutoff that have no event left."""

    def delete(connection: sqlite3.Connection) -> int:
        return connection.execute(
            """
            DELETE FROM event_sessions WHERE namespace = ? AND started_at <= ? AND NOT EXISTS (
                SELECT 1 FROM events WHERE events.namespace = event_sessions.namespace
                                       AND events.session_id = event_sessions.id
            )
            """,
            (namespace, cutoff),
        ).rowcount

    return delete


def _session_row(connection: sqlite3.Connection, namespace: str, session_id: str) -> Any:
    return connection.execute(
        f"SELECT {SESSION_COLUMNS} FROM event_sessions WHERE namespace = ? AND id = ?",
        (namespace, session_id),
    ).fetchone()


def _upsert_session(connection: sqlite3.Connection, namespace: str, update: SessionUpdate) -> Session:
    values: dict[str, Any] = {
        "agent_id": update.agent_id,
        "agent_name": update.agent_name,
        "started_at": update.started_at,
        "ended_at": update.ended_at,
        "status": update.status.value,
        "tags": json.dumps(update.tags),
    }
    if _session_row(connection, namespace, update.id) is None:
        connection.execute(
            "INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status,"
            " event_count, tool_call_count, error_count, total_cost_usd, tags)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0.0, ?)",
            (namespace, update.id, *values.values()),
        )
    else:
        written = sorted(update.written)
        connection.execute(
            f"UPDATE event_sessions SET {', '.join(f'{name} = ?' for name in written)}"
            " WHERE namespace = ? AND id = ?",
            (*(values[name] for name in written), namespace, update.id),
        )
    return read_session(SQLITE, _session_row(connection, namespace, update.id))


def _agent_row(connection: sqlite3.Connection, namespace: str, agent_id: str) -> Any:
    return connection.execute(
        f"SELECT {AGENT_COLUMNS} FROM event_agents WHERE namespace = ? AND id = ?", (namespace, agent_id)
    ).fetchone()


def _rule_row(connection: sqlite3.Connection, namespace: str, rule_id: str) -> Any:
    return connection.execute(
        f"SELECT {RULE_COLUMNS} FROM event_alert_rules WHERE namespace = ? AND id = ?", (namespace, rule_id)
    ).fetchone()


def _entry_values(entry: AlertHistoryEntry) -> tuple[object, ...]:
    return (
        entry.id,
        entry.rule_id,
        entry.triggered_at,
        entry.resolved_at,
        entry.current_value,
        entry.threshold,
        entry.message,
    )


def rule_values(rule: AlertRule) -> tuple[object, ...]:
    """Return a rule's row in RULE_COLUMNS order (the store and `stord import` write it alike)."""
    return (
        rule.id,
        rule.name,
        int(rule.enabled),
        rule.condition.value,
        rule.threshold,
        rule.window_minutes,
        rule.scope_agent_id,
        json.dumps(rule.scope_tags),
        json.dumps(rule.notify_channels),
        rule.created_at,
        rule.updated_at,
    )
