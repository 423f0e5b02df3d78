"""The event store (DESIGN 4.4) over the tables of migrations/postgres/0002_events.sql.

A batch is one transaction running events.ingest over `_IngestTransaction`: it takes an advisory lock per
session (in one order, so writers cannot deadlock), reads the session heads, links the batch, COPYs it in
(binary) and updates sessions and agents. Writers to one session, in this daemon or another one on the same
database, therefore extend its chain one after the other. Last, the transaction appends the batch to its
namespace's event feed (0005_event_feed.sql) and NOTIFYs `stord_events`; followers LISTEN on a connection of
their own and read the feed after their position.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import psycopg
import structlog

from stord.server.backends._event_sql import (
    AGENT_COLUMNS,
    EVENT_COLUMNS,
    HISTORY_COLUMNS,
    POSTGRES,
    RULE_COLUMNS,
    SESSION_COLUMNS,
    Conditions,
    read_agent,
    read_entry,
    read_event,
    read_rule,
    read_session,
)
from stord.server.backends.postgres import _event_rollups
from stord.server.backends.postgres._event_statistics import EventStatistics
from stord.server.backends.postgres._migrate import connect_alone
from stord.server.backends.postgres._pool import Connection, Pool
from stord.server.config import PostgresOptions, redact_url
from stord.server.events.chain import ChainHead, verify_chain
from stord.server.events.ingest import EVENT_ROW_COLUMNS, EventRow, store_batch_async
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
from stord.server.ports import AlreadyExists, Clock, NotFound

__all__ = ["COPY_EVENTS", "COPY_TYPES", "PostgresEventStore", "rule_values"]

_log = structlog.get_logger("stord.postgres")

RETENTION_BATCH = 5000
"""Events deleted per transaction: a retention pass must not hold long locks or a long transaction."""

FEED_CHANNEL = "stord_events"
"""The NOTIFY channel of the event feed; a payload is `<namespace> <position>` (a namespace has no space)."""
FEED_PRUNE = 4
"""Expired feed batches a transaction removes at most: one in, one out in a steady state, more to catch up."""
LISTEN_RETRY_SECONDS = (0.1, 1.0)
"""First and longest wait before the feed's listener connects again after losing its connection."""
LISTEN_PING_SECONDS = 10.0
"""How often an idle listener checks its connection (a dead peer that sent no reset would go unnoticed)."""

# The statement that ends a batch's transaction: the head row's lock, held until the commit, numbers the
# namespace's batches in commit order (0005_event_feed.sql explains why nothing else would do).
_APPEND_TO_FEED = f"""
WITH head AS (
    INSERT INTO event_feed_heads AS heads (namespace, position) VALUES (%(namespace)s, 1)
    ON CONFLICT (namespace) DO UPDATE SET position = heads.position + 1
    RETURNING position
), appended AS (
    INSERT INTO event_feed (namespace, position, event_ids)
    SELECT %(namespace)s, position, %(ids)b::text[] FROM head
    RETURNING position
), pruned AS (
    DELETE FROM event_feed
    WHERE namespace = %(namespace)s AND committed_at < now() - %(keep)s * interval '1 second'
      AND position IN (
          SELECT position FROM event_feed WHERE namespace = %(namespace)s ORDER BY position LIMIT {FEED_PRUNE}
      )
)
SELECT position, pg_notify('{FEED_CHANNEL}', %(namespace)s || ' ' || position) FROM appended
"""
_FEED_HEAD = "SELECT position FROM event_feed_heads WHERE namespace = %s"
# One statement, so one snapshot: the head tells a pruned feed from one with nothing new only if it is read
# together with the batches (a batch committed between two reads would look pruned).
_FEED_BATCHES = """
SELECT (SELECT position FROM event_feed_heads WHERE namespace = %(namespace)s) AS head,
       batch.position, batch.event_ids
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT position, event_ids FROM event_feed
    WHERE namespace = %(namespace)s AND position > %(after)s ORDER BY position LIMIT %(limit)s
) AS batch ON true
ORDER BY batch.position
"""

COPY_EVENTS = f"COPY events ({', '.join(EVENT_ROW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = (
    "text", "text", "int8", "text", "text", "text", "text", "text", "text", "text", "text", "int8", "float8",
    "float8",
)  # fmt: skip
"""The types of EventRow's columns, which binary COPY must be told."""

# Array order is lock order: the keys arrive sorted, so two batches never wait for each other in a cycle.
_LOCK_SESSIONS = "SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key"
_HEADS = "SELECT id, chain_length, last_hash FROM event_sessions WHERE namespace = %s AND id = ANY(%s)"
_STORED_IDS = "SELECT id FROM events WHERE namespace = %s AND id = ANY(%s)"

# A batch's effect on its sessions, one statement for all: counters add up, the latest status/end/name/tags
# win (NULL: no change), the head moves. The rows of these sessions are the batch's alone: every writer of a
# session row holds the session's advisory lock.
_APPLY_SESSIONS = """
WITH changes AS (
    SELECT * FROM json_to_recordset(%(changes)s::json) AS c (
        id text, agent_id text, agent_name text, started_at bigint, ended_at bigint, status text,
        event_count bigint, tool_call_count bigint, error_count bigint, cost_usd float8, tags json,
        chain_length bigint, last_hash text
    )
), updated AS (
    UPDATE event_sessions AS s SET
        agent_name = coalesce(c.agent_name, s.agent_name),
        started_at = least(s.started_at, c.started_at),
        ended_at = coalesce(c.ended_at, s.ended_at),
        status = coalesce(c.status, s.status),
        event_count = s.event_count + c.event_count,
        tool_call_count = s.tool_call_count + c.tool_call_count,
        error_count = s.error_count + c.error_count,
        total_cost_usd = s.total_cost_usd + c.cost_usd,
        tags = CASE WHEN c.tags IS NULL THEN s.tags ELSE ARRAY(SELECT json_array_elements_text(c.tags)) END,
        chain_length = c.chain_length,
        last_hash = c.last_hash
    FROM changes AS c
    WHERE s.namespace = %(namespace)s AND s.id = c.id
    RETURNING s.id
)
INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status, event_count,
                            tool_call_count, error_count, total_cost_usd, tags, chain_length, last_hash)
SELECT %(namespace)s, c.id, c.agent_id, c.agent_name, c.started_at, c.ended_at, coalesce(c.status, 'active'),
       c.event_count, c.tool_call_count, c.error_count, c.cost_usd,
       CASE WHEN c.tags IS NULL THEN '{}'::text[] ELSE ARRAY(SELECT json_array_elements_text(c.tags)) END,
       c.chain_length, c.last_hash
FROM changes AS c WHERE c.id NOT IN (SELECT id FROM updated)
"""
_APPLY_AGENTS = """
INSERT INTO event_agents AS a (namespace, id, name, description, first_seen_at, last_seen_at, session_count)
SELECT %(namespace)s, c.id, c.name, NULL, c.first_seen_at, c.last_seen_at, c.sessions_started
FROM json_to_recordset(%(changes)s::json)
    AS c (id text, name text, first_seen_at bigint, last_seen_at bigint, sessions_started bigint)
ON CONFLICT (namespace, id) DO UPDATE SET
    first_seen_at = least(a.first_seen_at, excluded.first_seen_at),
    last_seen_at = greatest(a.last_seen_at, excluded.last_seen_at),
    session_count = a.session_count + excluded.session_count
"""

_STORE_TABLES = ("events", "event_sessions", "event_agents", "event_alert_rules", "event_alert_history")


def _session_lock(namespace: str, session_id: str) -> int:
    """Return the advisory lock key of a session, the same in every daemon (a signed 64-bit integer)."""
    digest = hashlib.blake2b(f"{namespace}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def rule_values(rule: AlertRule) -> dict[str, object]:
    """Return a rule's named parameters (the store and `stord import` write it alike)."""
    return {
        "id": rule.id,
        "name": rule.name,
        "enabled": rule.enabled,
        "condition": rule.condition.value,
        "threshold": rule.threshold,
        "window_minutes": rule.window_minutes,
        "scope_agent_id": rule.scope_agent_id,
        "scope_tags": list(rule.scope_tags),
        "notify_channels": list(rule.notify_channels),
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }


async def _fetchall(connection: Connection, sql: str, params: Sequence[object]) -> list[Any]:
    return await (await connection.execute(sql, params)).fetchall()


async def _fetchone(connection: Connection, sql: str, params: Sequence[object]) -> Any:
    return await (await connection.execute(sql, params)).fetchone()


class PostgresEventStore:
    """Events, sessions, agents and alert rules in PostgreSQL."""

    def __init__(
        self,
        pool: Pool,
        clock: Clock,
        *,
        url: str,
        options: PostgresOptions,
        feed_keep_seconds: float = FEED_KEEP_SECONDS,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._url = url
        """For the feed's listening connection, which is not the pool's."""
        self._options = options
        self._feed_keep_seconds = feed_keep_seconds
        self.statistics = EventStatistics(pool)
        """Runs ANALYZE (and merges the trigram index's pending list) after large ingests."""

    @property
    def clock(self) -> Clock:
        return self._clock

    # Writing events --------------------------------------------------------------------------------------

    async def insert_events(self, namespace: str, events: Sequence[EventInput]) -> InsertOutcome:
        async with self._pool.connection() as connection, connection.transaction():
            transaction = _IngestTransaction(connection, namespace, self._feed_keep_seconds)
            outcome = await store_batch_async(transaction, namespace, events)
        self.statistics.stored(len(outcome.stored))  # ANALYZE after large ingests, in the background
        return outcome

    # Following the feed ----------------------------------------------------------------------------------

    async def feed_position(self, namespace: str) -> int:
        async with self._pool.connection() as connection:
            row = await _fetchone(connection, _FEED_HEAD, (namespace,))
        return 0 if row is None else int(row[0])

    async def read_feed(self, namespace: str, *, after: int, limit: int) -> FeedPage:
        events = f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = %s AND id = ANY(%s)"
        parameters = {"namespace": namespace, "after": after, "limit": limit}
        async with self._pool.connection() as connection:
            rows = await (await connection.execute(_FEED_BATCHES, parameters)).fetchall()
            head = rows[0][0] or 0
            batches = [(position, event_ids) for _, position, event_ids in rows if position is not None]
            # Pruned past `after`, or the feed went back (a restored backup).
            missed = batches[0][0] != after + 1 if batches else head != after
            wanted = [event_id for _, event_ids in batches for event_id in event_ids]
            found = {
                row[0]: read_event(row) for row in await _fetchall(connection, events, (namespace, wanted))
            }
        return FeedPage(
            [
                FeedBatch(position, [found[event_id] for event_id in event_ids if event_id in found])
                for position, event_ids in batches
            ],
            missed,
        )

    @contextlib.asynccontextmanager
    async def watch_feed(self, listener: CommitListener) -> AsyncIterator[None]:
        task = asyncio.create_task(self._listen(listener), name="stord-postgres-feed-listener")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, listener: CommitListener) -> None:
        """LISTEN on a connection of its own, reconnecting after a failure (a database restart).

        Once listening again, the listener hears (None, 0): what committed while nobody listened is in the
        feed, after the followers' positions.
        """
        delay = LISTEN_RETRY_SECONDS[0]
        lost = False
        while True:
            try:
                connection = await connect_alone(
                    self._url,
                    connect_timeout=self._options.connect_timeout,
                    application_name="stord-events-listen",
                )
                async with connection:
                    await connection.execute(f"LISTEN {FEED_CHANNEL}")
                    if lost:
                        _log.info("postgres_listen_resumed", channel=FEED_CHANNEL)
                    lost, delay = False, LISTEN_RETRY_SECONDS[0]
                    listener(None, 0)
                    while True:
                        async for notice in connection.notifies(timeout=LISTEN_PING_SECONDS):
                            namespace, _, position = notice.payload.rpartition(" ")
                            if namespace and position.isdigit():
                                listener(namespace, int(position))
                            else:  # not ours: look everywhere rather than miss something
                                listener(None, 0)
                        await connection.execute("SELECT 1")
            except psycopg.Error as error:
                if not lost:
                    _log.warning(
                        "postgres_listen_failed",
                        channel=FEED_CHANNEL,
                        url=redact_url(self._url),
                        error=str(error),
                    )
                lost = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_RETRY_SECONDS[1])

    # Reading events --------------------------------------------------------------------------------------

    async def get_event(self, namespace: str, event_id: str) -> Event | None:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection:
            row = await _fetchone(connection, sql, (namespace, event_id))
        return None if row is None else read_event(row)

    async def query_events(self, namespace: str, query: EventQuery) -> EventPage:
        matching = Conditions(POSTGRES).events(namespace, query.filter)
        page = Conditions(POSTGRES, list(matching.clauses), list(matching.params))
        page.after(query.after, descending=query.descending)
        direction = "DESC" if query.descending else "ASC"
        select = f"""
            SELECT {EVENT_COLUMNS} FROM events WHERE {page.where()}
            ORDER BY timestamp {direction}, id {direction} LIMIT %s OFFSET %s
        """
        count = f"SELECT count(*) FROM events WHERE {matching.where()}"
        async with self._pool.connection() as connection, connection.transaction():
            # One snapshot for the page and its total.
            await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await _fetchall(connection, select, (*page.params, query.limit, query.offset))
            total = (await _fetchone(connection, count, matching.params))[0]
        return EventPage([read_event(row) for row in rows], total)

    async def count_events(self, namespace: str, event_filter: EventFilter) -> int:
        matching = Conditions(POSTGRES).events(namespace, event_filter)
        async with self._pool.connection() as connection:
            row = await _fetchone(
                connection, f"SELECT count(*) FROM events WHERE {matching.where()}", matching.params
            )
        return int(row[0])

    async def session_timeline(
        self, namespace: str, session_id: str, *, after: EventPosition | None, limit: int
    ) -> list[Event]:
        conditions = Conditions(POSTGRES).events(namespace, EventFilter(session_id=session_id))
        conditions.after(after, descending=False)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {conditions.where()} ORDER BY timestamp, id LIMIT %s"
        async with self._pool.connection() as connection:
            rows = await _fetchall(connection, sql, (*conditions.params, limit))
        return [read_event(row) for row in rows]

    async def verify_chain(self, namespace: str, session_id: str) -> ChainVerification | None:
        heads = "SELECT chain_length, last_hash FROM event_sessions WHERE namespace = %s AND id = %s"
        events = f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = %s AND session_id = %s"
        events += " ORDER BY chain_index"
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            head = await _fetchone(connection, heads, (namespace, session_id))
            if head is None:
                return None
            rows = await _fetchall(connection, events, (namespace, session_id))
        return verify_chain([read_event(row) for row in rows], ChainHead(head[0], head[1]))

    # Sessions and agents ---------------------------------------------------------------------------------

    async def upsert_session(self, namespace: str, update: SessionUpdate) -> Session:
        values: dict[str, Any] = {
            "agent_id": update.agent_id,
            "agent_name": update.agent_name,
            "started_at": update.started_at,
            "ended_at": update.ended_at,
            "status": update.status.value,
            "tags": list(update.tags),
        }
        insert = """
            INSERT INTO event_sessions (namespace, id, agent_id, agent_name, started_at, ended_at, status,
                                        event_count, tool_call_count, error_count, total_cost_usd, tags)
            VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0, 0, 0, %s::text[])
            ON CONFLICT (namespace, id) DO NOTHING
        """
        written = sorted(update.written)
        assignments = ", ".join(f"{name} = %s" for name in written)
        update_sql = f"UPDATE event_sessions SET {assignments} WHERE namespace = %s AND id = %s"
        select = f"SELECT {SESSION_COLUMNS} FROM event_sessions WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection, connection.transaction():
            # The lock of a batch writing to the session: batches update its row in a set, not by upsert.
            await connection.execute(_LOCK_SESSIONS, ([_session_lock(namespace, update.id)],))
            created = await connection.execute(insert, (namespace, update.id, *values.values()))
            if created.rowcount == 0 and written:
                await connection.execute(
                    update_sql, (*(values[name] for name in written), namespace, update.id)
                )
            row = await _fetchone(connection, select, (namespace, update.id))
        return read_session(POSTGRES, row)

    async def get_session(self, namespace: str, session_id: str) -> Session | None:
        sql = f"SELECT {SESSION_COLUMNS} FROM event_sessions WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection:
            row = await _fetchone(connection, sql, (namespace, session_id))
        return None if row is None else read_session(POSTGRES, row)

    async def query_sessions(self, namespace: str, query: SessionQuery) -> SessionPage:
        matching = Conditions(POSTGRES)
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
            matching.add("tags && {}::text[]", sorted(query.tags))
        select = f"""
            SELECT {SESSION_COLUMNS} FROM event_sessions WHERE {matching.where()}
            ORDER BY started_at DESC, id DESC LIMIT %s OFFSET %s
        """
        count = f"SELECT count(*) FROM event_sessions WHERE {matching.where()}"
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await _fetchall(connection, select, (*matching.params, query.limit, query.offset))
            total = (await _fetchone(connection, count, matching.params))[0]
        return SessionPage([read_session(POSTGRES, row) for row in rows], total)

    async def upsert_agent(self, namespace: str, update: EventAgentUpdate) -> EventAgent:
        insert = f"""
            INSERT INTO event_agents (namespace, {AGENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, 0)
            ON CONFLICT (namespace, id) DO NOTHING
        """
        values = {"name": update.name, "description": update.description}
        written = sorted(update.written)
        assignments = ", ".join(f"{name} = %s" for name in written)
        select = f"SELECT {AGENT_COLUMNS} FROM event_agents WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection, connection.transaction():
            created = await connection.execute(
                insert, (namespace, update.id, update.name, update.description, update.now, update.now)
            )
            if created.rowcount == 0 and written:
                await connection.execute(
                    f"UPDATE event_agents SET {assignments} WHERE namespace = %s AND id = %s",
                    (*(values[name] for name in written), namespace, update.id),
                )
            row = await _fetchone(connection, select, (namespace, update.id))
        return read_agent(row)

    async def get_agent(self, namespace: str, agent_id: str) -> EventAgent | None:
        sql = f"SELECT {AGENT_COLUMNS} FROM event_agents WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection:
            row = await _fetchone(connection, sql, (namespace, agent_id))
        return None if row is None else read_agent(row)

    async def list_agents(self, namespace: str, *, after: str | None, limit: int) -> list[EventAgent]:
        sql = (
            f"SELECT {AGENT_COLUMNS} FROM event_agents WHERE namespace = %s AND id > %s ORDER BY id LIMIT %s"
        )
        async with self._pool.connection() as connection:
            rows = await _fetchall(connection, sql, (namespace, after or "", limit))
        return [read_agent(row) for row in rows]

    # Analytics -------------------------------------------------------------------------------------------

    async def analytics(self, namespace: str, query: AnalyticsQuery) -> Analytics:
        async with self._pool.connection() as connection:  # from the hourly rollups
            return await _event_rollups.analytics(connection, namespace, query)

    # Alert rules and history -----------------------------------------------------------------------------

    async def create_alert_rule(self, namespace: str, rule: AlertRule) -> None:
        values = rule_values(rule)
        placeholders = ", ".join(f"%({name})s" for name in values)
        sql = f"INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS})"
        sql += f" VALUES (%(namespace)s, {placeholders})"
        try:
            async with self._pool.connection() as connection:
                await connection.execute(sql, {"namespace": namespace, **values})
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"alert rule {rule.id} exists already") from None

    async def get_alert_rule(self, namespace: str, rule_id: str) -> AlertRule | None:
        sql = f"SELECT {RULE_COLUMNS} FROM event_alert_rules WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection:
            row = await _fetchone(connection, sql, (namespace, rule_id))
        return None if row is None else read_rule(POSTGRES, row)

    async def update_alert_rule(self, namespace: str, rule: AlertRule, written: frozenset[str]) -> AlertRule:
        values = rule_values(rule)
        columns = sorted(
            ({"scope_agent_id", "scope_tags"} if "scope" in written else set()) | (written - {"scope"})
        )
        columns.append("updated_at")
        assignments = ", ".join(f"{name} = %({name})s" for name in columns)
        sql = f"""
            UPDATE event_alert_rules SET {assignments} WHERE namespace = %(namespace)s AND id = %(id)s
            RETURNING {RULE_COLUMNS}
        """
        async with self._pool.connection() as connection:
            row = await (await connection.execute(sql, {"namespace": namespace, **values})).fetchone()
        if row is None:
            raise NotFound(f"alert rule {rule.id} does not exist")
        return read_rule(POSTGRES, row)

    async def delete_alert_rule(self, namespace: str, rule_id: str) -> bool:
        sql = "DELETE FROM event_alert_rules WHERE namespace = %s AND id = %s"
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql, (namespace, rule_id))
        return cursor.rowcount > 0

    async def list_alert_rules(self, namespace: str, *, after: str | None, limit: int) -> list[AlertRule]:
        sql = f"SELECT {RULE_COLUMNS} FROM event_alert_rules WHERE namespace = %s AND id > %s ORDER BY id"
        async with self._pool.connection() as connection:
            rows = await _fetchall(connection, sql + " LIMIT %s", (namespace, after or "", limit))
        return [read_rule(POSTGRES, row) for row in rows]

    async def record_alert(self, namespace: str, entry: AlertHistoryEntry) -> None:
        # The rule is read FOR SHARE: a concurrent delete waits, so no entry is recorded for a vanished rule.
        rule = "SELECT 1 FROM event_alert_rules WHERE namespace = %s AND id = %s FOR SHARE"
        insert = f"""
            INSERT INTO event_alert_history (namespace, {HISTORY_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        """
        values = (entry.id, entry.rule_id, entry.triggered_at, entry.resolved_at, entry.current_value,
                  entry.threshold, entry.message)  # fmt: skip
        try:
            async with self._pool.connection() as connection, connection.transaction():
                if await _fetchone(connection, rule, (namespace, entry.rule_id)) is None:
                    raise NotFound(f"alert rule {entry.rule_id} does not exist")
                await connection.execute(insert, (namespace, *values))
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists(f"alert {entry.id} exists already") from None

    async def list_alert_history(
        self, namespace: str, *, rule_id: str | None, offset: int, limit: int
    ) -> AlertHistoryPage:
        matching = Conditions(POSTGRES)
        matching.add("namespace = {}", namespace)
        if rule_id is not None:
            matching.add("rule_id = {}", rule_id)
        select = f"""
            SELECT {HISTORY_COLUMNS} FROM event_alert_history WHERE {matching.where()}
            ORDER BY triggered_at DESC, id DESC LIMIT %s OFFSET %s
        """
        count = f"SELECT count(*) FROM event_alert_history WHERE {matching.where()}"
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rows = await _fetchall(connection, select, (*matching.params, limit, offset))
            total = (await _fetchone(connection, count, matching.params))[0]
        return AlertHistoryPage([read_entry(row) for row in rows], total)

    # Retention and stats ---------------------------------------------------------------------------------

    async def apply_retention(self, namespace: str | None, cutoff: int) -> RetentionOutcome:
        delete_events = """
            DELETE FROM events WHERE (namespace, id) IN (
                SELECT namespace, id FROM events WHERE namespace = %s AND timestamp <= %s
                ORDER BY timestamp LIMIT %s
            )
        """
        delete_sessions = """
            DELETE FROM event_sessions AS s WHERE namespace = %s AND started_at <= %s AND NOT EXISTS (
                SELECT 1 FROM events AS e WHERE e.namespace = s.namespace AND e.session_id = s.id
            )
        """
        deleted_events = deleted_sessions = 0
        async with self._pool.connection() as connection:
            if namespace is None:
                rows = await _fetchall(connection, "SELECT DISTINCT namespace FROM event_sessions", ())
                namespaces = [row[0] for row in rows]
            else:
                namespaces = [namespace]
            for name in namespaces:
                while True:
                    async with connection.transaction():  # the rollups are corrected with the delete
                        cursor = await connection.execute(delete_events, (name, cutoff, RETENTION_BATCH))
                        await _event_rollups.correct_after_retention(connection, name)  # oldest first
                    deleted_events += cursor.rowcount
                    if cursor.rowcount < RETENTION_BATCH:
                        break
                deleted_sessions += (await connection.execute(delete_sessions, (name, cutoff))).rowcount
        return RetentionOutcome(deleted_events, deleted_sessions)

    async def stats(self, namespace: str) -> EventStats:
        size = " + ".join(f"pg_total_relation_size('{table}')" for table in _STORE_TABLES)
        sql = f"""
            SELECT (SELECT count(*) FROM events WHERE namespace = %(namespace)s),
                   (SELECT min(timestamp) FROM events WHERE namespace = %(namespace)s),
                   (SELECT max(timestamp) FROM events WHERE namespace = %(namespace)s),
                   (SELECT count(*) FROM event_sessions WHERE namespace = %(namespace)s),
                   (SELECT count(*) FROM event_agents WHERE namespace = %(namespace)s),
                   {size}
        """
        async with self._pool.connection() as connection:
            row = await (await connection.execute(sql, {"namespace": namespace})).fetchone()
        assert row is not None
        events, oldest, newest, sessions, agents, storage = row
        return EventStats(events, sessions, agents, oldest, newest, int(storage))


# Inside a batch's transaction ----------------------------------------------------------------------------


class _IngestTransaction:
    """The primitives of ingest.store_batch_async on one connection, inside the batch's transaction."""

    def __init__(self, connection: Connection, namespace: str, feed_keep_seconds: float) -> None:
        self._connection = connection
        self._namespace = namespace
        self._feed_keep_seconds = feed_keep_seconds

    async def chain_heads(self, session_ids: Sequence[str]) -> dict[str, ChainHead]:
        # The sessions' advisory locks, held until the commit, make writers to a session take turns.
        namespace = self._namespace
        locks = sorted({_session_lock(namespace, session_id) for session_id in session_ids})
        await self._connection.execute(_LOCK_SESSIONS, (locks,))
        rows = await _fetchall(self._connection, _HEADS, (namespace, list(session_ids)))
        return {row[0]: ChainHead(row[1], row[2]) for row in rows}

    async def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        rows = await _fetchall(self._connection, _STORED_IDS, (self._namespace, list(event_ids)))
        return {row[0] for row in rows}

    async def insert_events(self, rows: Sequence[EventRow]) -> bool:
        try:
            async with (
                self._connection.transaction(),
                self._connection.cursor() as cursor,
                cursor.copy(COPY_EVENTS) as copy,
            ):
                copy.set_types(COPY_TYPES)
                for row in rows:
                    await copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    async def upsert_sessions(self, changes: Sequence[SessionChange]) -> None:
        # One JSON document for the whole batch: orjson writes it in C, where array parameters would be
        # dumped element by element in Python.
        rows = [
            {"id": change.session_id, "agent_id": change.agent_id, "agent_name": change.agent_name,
             "started_at": change.first_timestamp, "ended_at": change.ended_at,
             "status": None if change.status is None else change.status.value,
             "event_count": change.event_count, "tool_call_count": change.tool_call_count,
             "error_count": change.error_count, "cost_usd": change.cost_usd, "tags": change.tags,
             "chain_length": change.head.length, "last_hash": change.head.last_hash}
            for change in changes
        ]  # fmt: skip
        parameters = {"namespace": self._namespace, "changes": orjson.dumps(rows).decode()}
        await self._connection.execute(_APPLY_SESSIONS, parameters)

    async def upsert_agents(self, changes: Sequence[AgentChange]) -> None:
        rows = [
            {"id": change.agent_id, "name": change.name or change.agent_id,
             "first_seen_at": change.first_seen_at, "last_seen_at": change.last_seen_at,
             "sessions_started": change.sessions_started}
            for change in changes
        ]  # fmt: skip
        parameters = {"namespace": self._namespace, "changes": orjson.dumps(rows).decode()}
        await self._connection.execute(_APPLY_AGENTS, parameters)

    async def update_rollups(self, event_ids: Sequence[str]) -> None:
        await _event_rollups.add_batch(self._connection, self._namespace, event_ids)

    async def append_to_feed(self, events: list[Event]) -> int:
        parameters = {
            "namespace": self._namespace,
            "ids": [event.id for event in events],
            "keep": self._feed_keep_seconds,
        }
        row = await (await self._connection.execute(_APPEND_TO_FEED, parameters)).fetchone()
        assert row is not None
        return int(row[0])
