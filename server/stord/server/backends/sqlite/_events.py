"""The event store (DESIGN 4.4) over the tables of migrations/sqlite/0002_events.sql.

A batch is one write on the engine's writer thread: the session heads are read, the batch linked and
inserted with one executemany, sessions and agents updated and the batch appended to the namespace's event
feed, all in the write's transaction. SQLite runs one write transaction at a time on a file (other processes
on the same file wait for its lock), so nothing can move a head between the read and the insert, and feed
positions follow commit order. Followers notice commits by polling `PRAGMA data_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from stord.server.backends._event_sql import SQLITE, Conditions
from stord.server.backends.sqlite import _event_rollups
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.event_chain import ChainHead, link_events, verify_chain
from stord.server.event_model import agent_changes, session_changes
from stord.server.ports import (
    FEED_KEEP_SECONDS,
    AlertCondition,
    AlertHistoryEntry,
    AlertHistoryPage,
    AlertRule,
    AlreadyExists,
    Analytics,
    AnalyticsQuery,
    ChainVerification,
    Clock,
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
    EventType,
    FailedPrecondition,
    FeedBatch,
    FeedPage,
    InsertOutcome,
    NotFound,
    RetentionOutcome,
    Session,
    SessionPage,
    SessionQuery,
    SessionStatus,
    SessionUpdate,
    Severity,
    Unavailable,
)

__all__ = ["SqliteEventStore"]

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

_EVENT_COLUMNS = (
    "id, timestamp, session_id, agent_id, event_type, severity, payload, metadata, prev_hash, hash, "
    "chain_index"
)
_QUALIFIED_EVENT_COLUMNS = ", ".join(f"events.{column}" for column in _EVENT_COLUMNS.split(", "))
_INSERT_EVENT = f"""
INSERT INTO events (namespace, {_EVENT_COLUMNS}, cost_usd, latency_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SESSION_COLUMNS = (
    "id, agent_id, agent_name, started_at, ended_at, status, event_count, tool_call_count, error_count, "
    "total_cost_usd, tags"
)
_AGENT_COLUMNS = "id, name, description, first_seen_at, last_seen_at, session_count"
_RULE_COLUMNS = (
    "id, name, enabled, condition, threshold, window_minutes, scope_agent_id, scope_tags, notify_channels, "
    "created_at, updated_at"
)
_HISTORY_COLUMNS = "id, rule_id, triggered_at, resolved_at, current_value, threshold, message"

# A batch's effect on each session: counters add up, the latest status/end/name/tags win, the head moves.
_APPLY_SESSION = """
INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status, event_count,
                            tool_call_count, error_count, total_cost_usd, tags, chain_length, last_hash)
VALUES (:namespace, :id, :agent_id, :agent_name, :started_at, :ended_at, coalesce(:status, 'active'),
        :event_count, :tool_call_count, :error_count, :cost_usd, coalesce(:tags, '[]'), :chain_length,
        :last_hash)
ON CONFLICT (namespace, id) DO UPDATE SET
    agent_name = coalesce(:agent_name, agent_name),
    started_at = min(started_at, :started_at),
    ended_at = coalesce(:ended_at, ended_at),
    status = coalesce(:status, status),
    event_count = event_count + :event_count,
    tool_call_count = tool_call_count + :tool_call_count,
    error_count = error_count + :error_count,
    total_cost_usd = total_cost_usd + :cost_usd,
    tags = coalesce(:tags, tags),
    chain_length = :chain_length,
    last_hash = :last_hash
"""
_APPLY_AGENT = """
INSERT INTO event_agents (namespace, id, name, description, first_seen_at, last_seen_at, session_count)
VALUES (:namespace, :id, :name, NULL, :first_seen_at, :last_seen_at, :sessions_started)
ON CONFLICT (namespace, id) DO UPDATE SET
    first_seen_at = min(first_seen_at, :first_seen_at),
    last_seen_at = max(last_seen_at, :last_seen_at),
    session_count = session_count + :sessions_started
"""

_TYPES = {member.value: member for member in EventType}
_SEVERITIES = {member.value: member for member in Severity}


def _event(row: Sequence[Any]) -> Event:
    return Event(
        row[0],
        row[1],
        row[2],
        row[3],
        _TYPES[row[4]],
        _SEVERITIES[row[5]],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
    )


def _session(row: Sequence[Any]) -> Session:
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
        tags=tuple(json.loads(row[10])),
    )


def _agent(row: Sequence[Any]) -> EventAgent:
    return EventAgent(*row)


def _rule(row: Sequence[Any]) -> AlertRule:
    return AlertRule(
        id=row[0],
        name=row[1],
        enabled=bool(row[2]),
        condition=AlertCondition(row[3]),
        threshold=row[4],
        window_minutes=row[5],
        scope_agent_id=row[6],
        scope_tags=tuple(json.loads(row[7])),
        notify_channels=tuple(json.loads(row[8])),
        created_at=row[9],
        updated_at=row[10],
    )


def _entry(row: Sequence[Any]) -> AlertHistoryEntry:
    return AlertHistoryEntry(*row)


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

    @property
    def clock(self) -> Clock:
        return self._clock

    # Writing events --------------------------------------------------------------------------------------

    async def insert_events(self, namespace: str, events: Sequence[EventInput]) -> InsertOutcome:
        now = int(self._clock() * 1000)
        return await self._engine.write(
            lambda connection: _insert_batch(connection, namespace, events, now, now - self._feed_keep_ms)
        )

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
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE namespace = ? AND id = ?"
        row = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, event_id)).fetchone()
        )
        return None if row is None else _event(row)

    async def query_events(self, namespace: str, query: EventQuery) -> EventPage:
        matching = Conditions(SQLITE).events(namespace, query.filter)
        page = Conditions(SQLITE, list(matching.clauses), list(matching.params))
        page.after(query.after, descending=query.descending)
        direction = "DESC" if query.descending else "ASC"
        select = f"""
            SELECT {_EVENT_COLUMNS} FROM events WHERE {page.where()}
            ORDER BY timestamp {direction}, id {direction} LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM events WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> EventPage:
            rows = connection.execute(select, (*page.params, query.limit, query.offset)).fetchall()
            total = connection.execute(count, matching.params).fetchone()[0]
            return EventPage([_event(row) for row in rows], total)

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
            SELECT {_EVENT_COLUMNS} FROM events WHERE {conditions.where()} ORDER BY timestamp, id LIMIT ?
        """
        rows = await self._engine.read(
            lambda connection: connection.execute(sql, (*conditions.params, limit)).fetchall()
        )
        return [_event(row) for row in rows]

    async def verify_chain(self, namespace: str, session_id: str) -> ChainVerification | None:
        def read(connection: sqlite3.Connection) -> ChainVerification | None:
            head = connection.execute(
                "SELECT chain_length, last_hash FROM event_sessions WHERE namespace = ? AND id = ?",
                (namespace, session_id),
            ).fetchone()
            if head is None:
                return None
            rows = connection.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE namespace = ? AND session_id = ?"
                " ORDER BY chain_index",
                (namespace, session_id),
            ).fetchall()
            return verify_chain([_event(row) for row in rows], ChainHead(head[0], head[1]))

        return await self._engine.read(read)

    # Sessions and agents ---------------------------------------------------------------------------------

    async def upsert_session(self, namespace: str, update: SessionUpdate) -> Session:
        return await self._engine.write(lambda connection: _upsert_session(connection, namespace, update))

    async def get_session(self, namespace: str, session_id: str) -> Session | None:
        row = await self._engine.lookup(lambda connection: _session_row(connection, namespace, session_id))
        return None if row is None else _session(row)

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
            SELECT {_SESSION_COLUMNS} FROM event_sessions WHERE {matching.where()}
            ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM event_sessions WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> SessionPage:
            rows = connection.execute(select, (*matching.params, query.limit, query.offset)).fetchall()
            total = connection.execute(count, matching.params).fetchone()[0]
            return SessionPage([_session(row) for row in rows], total)

        return await self._engine.read(read)

    async def upsert_agent(self, namespace: str, update: EventAgentUpdate) -> EventAgent:
        def write(connection: sqlite3.Connection) -> EventAgent:
            connection.execute(
                f"INSERT INTO event_agents (namespace, {_AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0)"
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
            return _agent(_agent_row(connection, namespace, update.id))

        return await self._engine.write(write)

    async def get_agent(self, namespace: str, agent_id: str) -> EventAgent | None:
        row = await self._engine.lookup(lambda connection: _agent_row(connection, namespace, agent_id))
        return None if row is None else _agent(row)

    async def list_agents(self, namespace: str, *, after: str | None, limit: int) -> list[EventAgent]:
        sql = f"SELECT {_AGENT_COLUMNS} FROM event_agents WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?"
        rows = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, after or "", limit)).fetchall()
        )
        return [_agent(row) for row in rows]

    # Analytics -------------------------------------------------------------------------------------------

    async def analytics(self, namespace: str, query: AnalyticsQuery) -> Analytics:
        return await self._engine.read(  # events-read: from the hourly rollups
            lambda connection: _event_rollups.analytics(connection, namespace, query)
        )

    # Alert rules and history -----------------------------------------------------------------------------

    async def create_alert_rule(self, namespace: str, rule: AlertRule) -> None:
        def write(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(
                    f"INSERT INTO event_alert_rules (namespace, {_RULE_COLUMNS}) VALUES (?{', ?' * 11})",
                    (namespace, *_rule_values(rule)),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"alert rule {rule.id} exists already") from None

        await self._engine.write(write)

    async def get_alert_rule(self, namespace: str, rule_id: str) -> AlertRule | None:
        row = await self._engine.lookup(lambda connection: _rule_row(connection, namespace, rule_id))
        return None if row is None else _rule(row)

    async def update_alert_rule(self, namespace: str, rule: AlertRule, written: frozenset[str]) -> AlertRule:
        values = dict(zip(_RULE_COLUMNS.split(", "), _rule_values(rule), strict=True))
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
            return _rule(_rule_row(connection, namespace, rule.id))

        return await self._engine.write(write)

    async def delete_alert_rule(self, namespace: str, rule_id: str) -> bool:
        sql = "DELETE FROM event_alert_rules WHERE namespace = ? AND id = ?"
        deleted: int = await self._engine.write(
            lambda connection: connection.execute(sql, (namespace, rule_id)).rowcount
        )
        return deleted > 0

    async def list_alert_rules(self, namespace: str, *, after: str | None, limit: int) -> list[AlertRule]:
        sql = f"SELECT {_RULE_COLUMNS} FROM event_alert_rules WHERE namespace = ? AND id > ? ORDER BY id"
        sql += " LIMIT ?"
        rows = await self._engine.lookup(
            lambda connection: connection.execute(sql, (namespace, after or "", limit)).fetchall()
        )
        return [_rule(row) for row in rows]

    async def record_alert(self, namespace: str, entry: AlertHistoryEntry) -> None:
        def write(connection: sqlite3.Connection) -> None:
            if _rule_row(connection, namespace, entry.rule_id) is None:
                raise NotFound(f"alert rule {entry.rule_id} does not exist")
            try:
                connection.execute(
                    f"INSERT INTO event_alert_history (namespace, {_HISTORY_COLUMNS}) VALUES (?{', ?' * 7})",
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
            SELECT {_HISTORY_COLUMNS} FROM event_alert_history WHERE {matching.where()}
            ORDER BY triggered_at DESC, id DESC LIMIT ? OFFSET ?
        """
        count = f"SELECT count(*) FROM event_alert_history WHERE {matching.where()}"

        def read(connection: sqlite3.Connection) -> AlertHistoryPage:
            rows = connection.execute(select, (*matching.params, limit, offset)).fetchall()
            return AlertHistoryPage(
                [_entry(row) for row in rows], connection.execute(count, matching.params).fetchone()[0]
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


def _heads(connection: sqlite3.Connection, namespace: str, session_ids: list[str]) -> dict[str, ChainHead]:
    rows = connection.execute(
        "SELECT id, chain_length, last_hash FROM event_sessions"
        f" WHERE namespace = ? AND id IN ({_in(session_ids)})",
        (namespace, *session_ids),
    ).fetchall()
    return {row[0]: ChainHead(row[1], row[2]) for row in rows}


def _stored_ids(connection: sqlite3.Connection, namespace: str, events: Sequence[EventInput]) -> set[str]:
    ids = [event.id for event in events]
    rows = connection.execute(
        f"SELECT id FROM events WHERE namespace = ? AND id IN ({_in(ids)})", (namespace, *ids)
    )
    return {row[0] for row in rows}


def _insert_linked(
    connection: sqlite3.Connection, namespace: str, events: Sequence[EventInput], heads: dict[str, ChainHead]
) -> tuple[list[Event], dict[str, ChainHead]]:
    linked, new_heads = link_events(events, heads)
    connection.executemany(
        _INSERT_EVENT,
        [
            (namespace, stored.id, stored.timestamp, stored.session_id, stored.agent_id,
             stored.event_type.value, stored.severity.value, stored.payload, stored.metadata,
             stored.prev_hash, stored.hash, stored.chain_index, event.cost_usd, event.latency_ms)
            for stored, event in zip(linked, events, strict=True)
        ],
    )  # fmt: skip
    return linked, new_heads


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
        row[0]: _event(row)
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


def _append_to_feed(
    connection: sqlite3.Connection, namespace: str, stored: list[Event], now: int, expired: int
) -> int:
    """Append the batch's new events to the namespace's feed, prune expired batches; return its position."""
    position: int = connection.execute(_FEED_NEXT, (namespace,)).fetchall()[0][0]
    event_ids = json.dumps([event.id for event in stored])
    connection.execute(_FEED_APPEND, (namespace, position, now, event_ids))
    connection.execute(_FEED_PRUNE, (namespace, expired, namespace))
    return position


def _insert_batch(
    connection: sqlite3.Connection, namespace: str, events: Sequence[EventInput], now: int, expired: int
) -> InsertOutcome:
    batch_size = len(events)
    heads = _heads(connection, namespace, sorted({event.session_id for event in events}))
    # Resends are rare: insert as if every event were new, and only when that fails (a stored id, or a claimed
    # prev_hash that a stored duplicate explains) look up which ids are stored and link the rest.
    connection.execute("SAVEPOINT stord_events")
    try:
        linked, new_heads = _insert_linked(connection, namespace, events, heads)
    except (sqlite3.IntegrityError, FailedPrecondition):
        connection.execute("ROLLBACK TO stord_events")
        stored = _stored_ids(connection, namespace, events)
        events = [event for event in events if event.id not in stored]
        linked, new_heads = _insert_linked(connection, namespace, events, heads)
    finally:
        connection.execute("RELEASE stord_events")
    _event_rollups.add_batch(connection, namespace, [event.id for event in linked])  # events-read
    connection.executemany(
        _APPLY_SESSION,
        [
            {
                "namespace": namespace,
                "id": change.session_id,
                "agent_id": change.agent_id,
                "agent_name": change.agent_name,
                "started_at": change.first_timestamp,
                "ended_at": change.ended_at,
                "status": None if change.status is None else change.status.value,
                "event_count": change.event_count,
                "tool_call_count": change.tool_call_count,
                "error_count": change.error_count,
                "cost_usd": change.cost_usd,
                "tags": None if change.tags is None else json.dumps(change.tags),
                "chain_length": change.head.length,
                "last_hash": change.head.last_hash,
            }
            for change in session_changes(events, new_heads)
        ],
    )
    connection.executemany(
        _APPLY_AGENT,
        [
            {
                "namespace": namespace,
                "id": change.agent_id,
                "name": change.name or change.agent_id,
                "first_seen_at": change.first_seen_at,
                "last_seen_at": change.last_seen_at,
                "sessions_started": change.sessions_started,
            }
            for change in agent_changes(events)
        ],
    )
    if not linked:
        return InsertOutcome(linked, batch_size)
    position = _append_to_feed(connection, namespace, linked, now, expired)
    return InsertOutcome(linked, batch_size - len(events), position)


def _expired_events(namespace: str, cutoff: int) -> Callable[[sqlite3.Connection], int]:
    """Return a write deleting up to RETENTION_BATCH events at or before the cutoff; it returns how many."""

    def delete(connection: sqlite3.Connection) -> int:
        deleted = connection.execute(
            "DELETE FROM events WHERE rowid IN"
            " (SELECT rowid FROM events WHERE namespace = ? AND timestamp <= ? ORDER BY timestamp LIMIT ?)",
            (namespace, cutoff, RETENTION_BATCH),
        ).rowcount
        _event_rollups.correct_after_retention(connection, namespace)  # events-read: oldest first, above
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
        f"SELECT {_SESSION_COLUMNS} FROM event_sessions WHERE namespace = ? AND id = ?",
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
    return _session(_session_row(connection, namespace, update.id))


def _agent_row(connection: sqlite3.Connection, namespace: str, agent_id: str) -> Any:
    return connection.execute(
        f"SELECT {_AGENT_COLUMNS} FROM event_agents WHERE namespace = ? AND id = ?", (namespace, agent_id)
    ).fetchone()


def _rule_row(connection: sqlite3.Connection, namespace: str, rule_id: str) -> Any:
    return connection.execute(
        f"SELECT {_RULE_COLUMNS} FROM event_alert_rules WHERE namespace = ? AND id = ?", (namespace, rule_id)
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


def _rule_values(rule: AlertRule) -> tuple[object, ...]:
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
