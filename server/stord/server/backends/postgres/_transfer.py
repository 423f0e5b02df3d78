"""Dump and restore (transfer/port.py) over the PostgreSQL tables of every contract.

A dump is one REPEATABLE READ, READ ONLY transaction (one snapshot, while daemons keep writing) that reads
each table through a server-side cursor, batch by batch. A restore is one transaction on one connection:
events go in by COPY, everything else by executemany; an error rolls it all back. Daemons on the same
database see the import when it commits; writes they make meanwhile to the namespaces being imported are not
prevented, so stop writers to those namespaces first.

Job sequences and agent positions are copied as they are into tables holding none (`number_shift`), else
shifted past the greatest, in order; at commit the identity generators move past every copied number.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from stord.server.agents.search import configuration_text, fold
from stord.server.backends._event_sql import (
    AGENT_COLUMNS,
    HISTORY_COLUMNS,
    RULE_COLUMNS,
    SESSION_COLUMNS,
)
from stord.server.backends._event_sql import POSTGRES as EVENT_POSTGRES
from stord.server.backends._transfer import (
    DUMP_BATCH,
    NamespaceGate,
    TransferDialect,
    count_statements,
    deletion_statements,
    dump_sources,
    dump_statements,
    event_facts,
    list_lengths,
    number_shift,
    occupancy_statements,
    occupied,
    repeated_record,
)
from stord.server.backends.postgres import _agents, _documents, _events, _jobs
from stord.server.backends.postgres._jobs import at
from stord.server.backends.postgres._pool import Connection, Pool
from stord.server.backends.postgres._runner import POSTGRES
from stord.server.backends.tables import (
    AGENTS,
    DOCUMENTS,
    HANDLER_MANIFESTS,
    JOBS,
    KV_LIST_ITEMS,
    KV_VALUES,
    MANIFEST_DOCUMENTS,
    MANIFEST_TRANSFORMERS,
)
from stord.server.transfer.port import (
    AgentRecord,
    AlertHistoryRecord,
    AlertRuleRecord,
    DocumentRecord,
    EventAgentRecord,
    EventRecord,
    JobRecord,
    ListItemRecord,
    ManifestDocumentRecord,
    ManifestRecord,
    ManifestTransformerRecord,
    SessionRecord,
    TransferRecord,
    ValueRecord,
)

__all__ = ["PostgresTransferStore"]

_NANOS = 1_000_000_000


_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

_DIALECT = TransferDialect(
    parameter=lambda name: f"%({name})s",
    seconds=lambda value: None if value is None else value.timestamp(),
    document=lambda value: value,  # psycopg reads jsonb into Python objects
    code_point_order=' COLLATE "C"',  # `kind` has the database's collation
)


def _values(count: int) -> str:
    return ", ".join(["%s"] * count)


_INSERT_VALUE = KV_VALUES.insert("%s")
_INSERT_LIST_ITEM = KV_LIST_ITEMS.insert("%s")
_UPSERT_LIST_LENGTH = f"""
INSERT INTO kv_lists AS list (keyspace, namespace, key, length) VALUES ({_values(4)})
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = greatest(list.length, excluded.length)
"""
_INSERT_DOCUMENT = DOCUMENTS.insert("%s", cast={"data": "::jsonb"})
_INSERT_JOB = JOBS.insert("%s", cast={"payload": "::jsonb"}, clause="OVERRIDING SYSTEM VALUE")
_INSERT_SESSION = f"""
INSERT INTO event_sessions (namespace, {SESSION_COLUMNS}, chain_length, last_hash)
VALUES ({_values(11)}, %s::text[], %s, %s)
"""
_INSERT_EVENT_AGENT = f"INSERT INTO event_agents (namespace, {AGENT_COLUMNS}) VALUES ({_values(7)})"
_RULE_NAMES = RULE_COLUMNS.split(", ")
_INSERT_RULE = f"""
INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS})
VALUES (%(namespace)s, {", ".join(f"%({name})s" for name in _RULE_NAMES)})
"""
_INSERT_ENTRY = f"INSERT INTO event_alert_history (namespace, {HISTORY_COLUMNS}) VALUES ({_values(8)})"
_INSERT_AGENT = AGENTS.insert("%s", clause="OVERRIDING SYSTEM VALUE")
_INSERT_MANIFEST = HANDLER_MANIFESTS.insert("%s")
_INSERT_TRANSFORMER = MANIFEST_TRANSFORMERS.insert("%s")
_INSERT_MANIFEST_DOCUMENT = MANIFEST_DOCUMENTS.insert("%s")

_SOURCES = dump_sources(
    EVENT_POSTGRES, POSTGRES, document=_documents.DOCUMENT_ROWS, job=_jobs.JOB_ROWS, agent=_agents.AGENT_ROWS
)

# Move an identity generator past the greatest number in its column (never back).
_ADVANCE = """
SELECT setval(sequence, greatest((SELECT max({column}) FROM {table}), nextval(sequence)))
FROM pg_get_serial_sequence('{table}', '{column}') AS sequence
"""


def _row(record: TransferRecord, shifts: dict[str, int]) -> tuple[str, Sequence[object] | dict[str, object]]:
    """Return the INSERT of a record other than an event, and its values; `shifts` by table (jobs, agents)."""
    namespace = record.namespace
    if isinstance(record, ValueRecord):
        expires_at = None if record.expires_at is None else at(record.expires_at)
        return _INSERT_VALUE, (record.keyspace.value, namespace, record.key, record.value, expires_at)
    if isinstance(record, ListItemRecord):
        return _INSERT_LIST_ITEM, (
            record.keyspace.value,
            namespace,
            record.key,
            record.position,
            record.value,
        )
    if isinstance(record, DocumentRecord):
        d = record.document
        return _INSERT_DOCUMENT, (
            namespace, d.collection, d.id, d.revision, at(d.create_time), at(d.update_time),
            orjson.dumps(d.data).decode(),
        )  # fmt: skip
    if isinstance(record, JobRecord):
        j = record.job
        return _INSERT_JOB, (
            namespace, j.sequence + shifts["jobs"], j.id, j.queue, j.status.value, j.priority, j.run_at,
            j.attempts, j.max_attempts, j.dedupe_key, orjson.dumps(j.payload).decode(), j.last_error,
            j.lease_token, j.lease_expires_at, j.create_time, j.update_time,
        )  # fmt: skip
    if isinstance(record, SessionRecord):
        s = record.session
        return _INSERT_SESSION, (
            namespace, s.id, s.agent_id, s.agent_name, s.started_at, s.ended_at, s.status.value,
            s.event_count, s.tool_call_count, s.error_count, s.total_cost_usd, list(s.tags),
            record.chain_length, record.last_hash,
        )  # fmt: skip
    if isinstance(record, EventAgentRecord):
        a = record.agent
        return _INSERT_EVENT_AGENT, (
            namespace, a.id, a.name, a.description, a.first_seen_at, a.last_seen_at, a.session_count
        )  # fmt: skip
    if isinstance(record, AlertRuleRecord):
        return _INSERT_RULE, {"namespace": namespace, **_events._rule_values(record.rule)}
    if isinstance(record, AlertHistoryRecord):
        e = record.entry
        return _INSERT_ENTRY, (
            namespace, e.id, e.rule_id, e.triggered_at, e.resolved_at, e.current_value, e.threshold, e.message
        )  # fmt: skip
    if isinstance(record, AgentRecord):
        agent = record.agent
        configuration = agent.configuration
        return _INSERT_AGENT, (
            namespace, record.position + shifts["agents"], agent.uri, agent.name, agent.version,
            agent.status.value, agent.visibility.value, agent.owner,
            None if configuration is None else Jsonb(configuration), agent.update_time, fold(agent.name),
            fold(configuration_text(configuration)),
        )  # fmt: skip
    if isinstance(record, ManifestRecord):
        m = record.manifest
        seconds, nanos = divmod(m.created_at, _NANOS)
        return _INSERT_MANIFEST, (namespace, m.handler_id, m.version, seconds, nanos, Jsonb(m.document))
    if isinstance(record, ManifestTransformerRecord):
        t = record.transformer
        return _INSERT_TRANSFORMER, (
            namespace, t.id, t.handler_id, t.from_version, t.to_version, Jsonb(t.document)
        )  # fmt: skip
    assert isinstance(record, ManifestDocumentRecord), record
    key_id, version = record.key
    return _INSERT_MANIFEST_DOCUMENT, (namespace, record.kind.value, key_id, version, Jsonb(record.document))


class _Sink:
    """Writes batches into the restore's transaction on one connection."""

    def __init__(self, connection: Connection, *, replace: bool) -> None:
        self._connection = connection
        self._replace = replace
        self._gate = NamespaceGate()
        self._shifts: dict[str, int] = {}
        """By table (jobs, agents): what the copied numbers get added, decided at the table's first record."""

    async def write(self, records: Sequence[TransferRecord]) -> None:
        for namespace in self._gate.new_namespaces(records):
            await self._prepare(namespace)
        for table, column, kind in (("jobs", "sequence", JobRecord), ("agents", "position", AgentRecord)):
            if table not in self._shifts and any(isinstance(record, kind) for record in records):
                cursor = await self._connection.execute(f"SELECT max({column}) FROM {table}")
                row = await cursor.fetchone()
                self._shifts[table] = number_shift(None if row is None else row[0])
        events: list[EventRecord] = []
        statements: dict[str, list[Sequence[object] | dict[str, object]]] = {}
        for record in records:
            if isinstance(record, EventRecord):
                events.append(record)
                continue
            sql, values = _row(record, self._shifts)
            statements.setdefault(sql, []).append(values)
        try:
            async with self._connection.cursor() as cursor:
                if events:
                    await self._copy_events(cursor, events)
                for sql, rows in statements.items():
                    await cursor.executemany(sql, rows)
                lengths = [(*key, length) for key, length in list_lengths(records).items()]
                if lengths:
                    await cursor.executemany(_UPSERT_LIST_LENGTH, lengths)
        except psycopg.errors.UniqueViolation as error:
            raise repeated_record(error) from error

    async def advance_identities(self) -> None:
        """Move the identity generators of the tables that received copied numbers past every number."""
        for table, column in (("jobs", "sequence"), ("agents", "position")):
            if table in self._shifts:
                await self._connection.execute(_ADVANCE.format(table=table, column=column))

    async def _copy_events(self, cursor: psycopg.AsyncCursor[Any], records: list[EventRecord]) -> None:
        async with cursor.copy(_events._COPY_EVENTS) as copy:
            copy.set_types(_events._COPY_TYPES)
            for record in records:
                e = record.event
                cost_usd, latency_ms = event_facts(e)
                await copy.write_row(
                    (record.namespace, e.id, e.timestamp, e.session_id, e.agent_id, e.event_type.value,
                     e.severity.value, e.payload, e.metadata, e.prev_hash, e.hash, e.chain_index, cost_usd,
                     latency_ms)
                )  # fmt: skip

    async def _prepare(self, namespace: str) -> None:
        """Empty the namespace (replace) or check that it holds nothing."""
        parameters = {"namespace": namespace}
        if self._replace:
            for sql in deletion_statements(_DIALECT):
                await self._connection.execute(sql, parameters)
            return
        holding: list[str] = []
        for table, sql in occupancy_statements(_DIALECT):
            if await (await self._connection.execute(sql, parameters)).fetchone() is not None:
                holding.append(table)
        if holding:
            raise occupied(namespace, holding)


class PostgresTransferStore:
    """Dumps from one snapshot through server-side cursors; restores in one transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def count(self, namespace: str | None) -> int:
        total = 0
        async with self._pool.connection() as connection:
            for sql in count_statements(_DIALECT, namespace):
                row = await (await connection.execute(sql, {"namespace": namespace})).fetchone()
                total += 0 if row is None else int(row[0])
        return total

    async def dump(
        self, namespace: str | None, *, now: float
    ) -> AsyncGenerator[Sequence[TransferRecord], None]:
        statements = dump_statements(_DIALECT, namespace, _SOURCES)
        parameters = {"now": at(now), "namespace": namespace}
        async with self._pool.connection() as connection, connection.transaction():
            await connection.execute(_SNAPSHOT)
            for sql, to_record in statements:
                async with connection.cursor(name="stord_dump") as cursor:
                    await cursor.execute(sql, parameters)
                    while rows := await cursor.fetchmany(DUMP_BATCH):
                        yield [to_record(row) for row in rows]

    @contextlib.asynccontextmanager
    async def restore(self, *, replace: bool) -> AsyncIterator[_Sink]:
        async with self._pool.connection() as connection, connection.transaction():
            sink = _Sink(connection, replace=replace)
            yield sink
            await sink.advance_identities()
