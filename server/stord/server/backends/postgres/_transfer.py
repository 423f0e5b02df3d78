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

import psycopg
from psycopg.types.json import Jsonb

from stord.server.backends._event_sql import POSTGRES as EVENT_POSTGRES
from stord.server.backends._event_sql import (
    RULE_COLUMNS,
    SESSION_COLUMNS,
)
from stord.server.backends._transfer import (
    DUMP_BATCH,
    NamespaceGate,
    RowWriter,
    TransferDialect,
    Values,
    count_statements,
    deletion_statements,
    dump_sources,
    dump_statements,
    event_values,
    insert_statements,
    list_lengths,
    number_shift,
    occupancy_statements,
    occupied,
    record_values,
    repeated_record,
)
from stord.server.backends.postgres import _agents, _documents, _event_rollups, _events, _jobs
from stord.server.backends.postgres._jobs import at
from stord.server.backends.postgres._pool import Connection, Pool
from stord.server.backends.postgres._runner import POSTGRES
from stord.server.backends.tables import (
    AGENTS,
    DOCUMENTS,
    JOBS,
)
from stord.server.transfer.port import (
    AgentRecord,
    EventRecord,
    JobRecord,
    TransferRecord,
)

__all__ = ["PostgresTransferStore"]


_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

_DIALECT = TransferDialect(
    parameter=lambda name: f"%({name})s",
    seconds=lambda value: None if value is None else value.timestamp(),
    document=lambda value: value,  # psycopg reads jsonb into Python objects
    code_point_order=' COLLATE "C"',  # `kind` has the database's collation
)


def _values(count: int) -> str:
    return ", ".join(["%s"] * count)


_UPSERT_LIST_LENGTH = f"""
INSERT INTO kv_lists AS list (keyspace, namespace, key, length) VALUES ({_values(4)})
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = greatest(list.length, excluded.length)
"""
_INSERT_SESSION = f"""
INSERT INTO event_sessions (namespace, {SESSION_COLUMNS}, chain_length, last_hash)
VALUES ({_values(11)}, %s::text[], %s, %s)
"""
_RULE_NAMES = RULE_COLUMNS.split(", ")
_INSERT_RULE = f"""
INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS})
VALUES (%(namespace)s, {", ".join(f"%({name})s" for name in _RULE_NAMES)})
"""

_SOURCES = dump_sources(
    EVENT_POSTGRES, POSTGRES, document=_documents.DOCUMENT_ROWS, job=_jobs.JOB_ROWS, agent=_agents.AGENT_ROWS
)

# Move an identity generator past the greatest number in its column (never back).
_ADVANCE = """
SELECT setval(sequence, greatest((SELECT max({column}) FROM {table}), nextval(sequence)))
FROM pg_get_serial_sequence('{table}', '{column}') AS sequence
"""


_INSERTS = insert_statements(
    "%s",
    document=DOCUMENTS.insert("%s", cast={"data": "::jsonb"}),
    job=JOBS.insert("%s", cast={"payload": "::jsonb"}, clause="OVERRIDING SYSTEM VALUE"),
    session=_INSERT_SESSION,
    rule=_INSERT_RULE,
    agent=AGENTS.insert("%s", clause="OVERRIDING SYSTEM VALUE"),
    event=None,  # COPY
)

_WRITER = RowWriter(
    instant=at,
    json=Jsonb,
    configuration=Jsonb,
    texts=list,
    rule=lambda namespace, rule: {"namespace": namespace, **_events.rule_values(rule)},
)


class _Sink:
    """Writes batches into the restore's transaction on one connection."""

    def __init__(self, connection: Connection, *, replace: bool) -> None:
        self._connection = connection
        self._replace = replace
        self._gate = NamespaceGate()
        self.namespaces: list[str] = []
        """The namespaces restored, each checked (or emptied) before its first record."""
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
        statements: dict[str, list[Values]] = {}
        for record in records:
            if isinstance(record, EventRecord):
                events.append(record)
                continue
            values = record_values(
                record,
                _WRITER,
                job_shift=self._shifts.get("jobs", 0),
                agent_shift=self._shifts.get("agents", 0),
            )
            statements.setdefault(_INSERTS[type(record)], []).append(values)
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
        async with cursor.copy(_events.COPY_EVENTS) as copy:
            copy.set_types(_events.COPY_TYPES)
            for record in records:
                await copy.write_row(event_values(record))

    async def _prepare(self, namespace: str) -> None:
        """Empty the namespace (replace) or check that it holds nothing."""
        self.namespaces.append(namespace)
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
            for namespace in sink.namespaces:  # rollups of the restored events
                await _event_rollups.rebuild_namespace(connection, namespace)
