"""Dump and restore (transfer/port.py) over the SQLite tables of every contract.

A dump is one read transaction on a reader thread, so one snapshot, also while a daemon writes the file (WAL):
the thread hands batches to the event loop through a small queue. A restore is one write on the engine's
writer thread, which takes batches from the event loop until the caller commits; when anything raises, the
engine rolls the whole write back, so a failed import leaves nothing behind. While it runs it holds the
file's write lock: a daemon serving the same file waits (and gives up after busy_timeout).

Jobs and agents keep their sequence and position numbers (page tokens stay valid) when the file holds no
job (agent) once the namespaces are prepared; else they are renumbered after the greatest one, in the same
order (`number_shift`): SQLite numbers them across namespaces, as rowids.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Generic, TypeVar

import orjson

from stord.server.agents.search import configuration_text, fold
from stord.server.backends._event_sql import (
    AGENT_COLUMNS,
    HISTORY_COLUMNS,
    RULE_COLUMNS,
    SESSION_COLUMNS,
)
from stord.server.backends._event_sql import SQLITE as EVENT_SQLITE
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
from stord.server.backends.sqlite import _agents, _documents, _events, _jobs
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.sqlite._runner import SQLITE
from stord.server.backends.tables import (
    AGENTS,
    DOCUMENTS,
    HANDLER_MANIFESTS,
    JOBS,
    KV_LIST_ITEMS,
    KV_LISTS,
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
    ManifestRecord,
    ManifestTransformerRecord,
    RecordSink,
    SessionRecord,
    TransferRecord,
    ValueRecord,
)

__all__ = ["SqliteTransferStore"]

_T = TypeVar("_T")
_R = TypeVar("_R")

_POLL_SECONDS = 0.1
"""How often a thread waiting for the event loop checks whether the other side gave up."""

_NANOS = 1_000_000_000


_DIALECT = TransferDialect(
    parameter=lambda name: f":{name}",
    seconds=lambda value: value,
    document=json.loads,
    code_point_order="",  # BINARY, SQLite's default collation, is code point order
)

_INSERT_VALUE = KV_VALUES.insert("?")
_INSERT_LIST_ITEM = KV_LIST_ITEMS.insert("?")
_UPSERT_LIST_LENGTH = f"""
{KV_LISTS.insert("?")}
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = max(length, excluded.length)
"""
_INSERT_DOCUMENT = DOCUMENTS.insert("?")
_INSERT_JOB = JOBS.insert("?")
_INSERT_SESSION = f"""
INSERT INTO event_sessions (namespace, {SESSION_COLUMNS}, chain_length, last_hash)
VALUES (?{", ?" * 13})
"""
_INSERT_EVENT_AGENT = f"INSERT INTO event_agents (namespace, {AGENT_COLUMNS}) VALUES (?{', ?' * 6})"
_INSERT_RULE = f"INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS}) VALUES (?{', ?' * 11})"
_INSERT_ENTRY = f"INSERT INTO event_alert_history (namespace, {HISTORY_COLUMNS}) VALUES (?{', ?' * 7})"
_INSERT_AGENT = AGENTS.insert("?")
_INSERT_MANIFEST = HANDLER_MANIFESTS.insert("?")
_INSERT_TRANSFORMER = MANIFEST_TRANSFORMERS.insert("?")
_INSERT_MANIFEST_DOCUMENT = MANIFEST_DOCUMENTS.insert("?")

_SOURCES = dump_sources(
    EVENT_SQLITE, SQLITE, document=_documents.DOCUMENT_ROWS, job=_jobs.JOB_ROWS, agent=_agents.AGENT_ROWS
)


def _count(connection: sqlite3.Connection, namespace: str | None) -> int:
    statements = count_statements(_DIALECT, namespace)
    return sum(int(connection.execute(sql, {"namespace": namespace}).fetchone()[0]) for sql in statements)


class Abandoned(Exception):
    """The event loop side of a hand-over gave up; the engine thread stops (a restore rolls back)."""


class _Handoff(Generic[_T]):
    """Batches passed between the event loop and one engine thread, at most `size` in between; None ends."""

    def __init__(self, size: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_T | None] = asyncio.Queue(size)
        self._closed = threading.Event()

    def close(self) -> None:
        """Make the thread's next hand-over raise Abandoned."""
        self._closed.set()

    # In the engine thread.

    def put(self, item: _T | None) -> None:
        """Queue an item for the event loop, waiting while the queue is full."""
        self._wait(asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop))

    def take(self) -> _T | None:
        """Return the next item from the event loop, waiting for one."""
        return self._wait(asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop))

    def _wait(self, future: concurrent.futures.Future[_R]) -> _R:
        while True:
            if self._closed.is_set():
                future.cancel()
                raise Abandoned("the transfer was abandoned")
            try:
                return future.result(timeout=_POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                continue

    # On the event loop; `worker` is the engine call running the thread's side.

    async def send(self, item: _T | None, worker: asyncio.Future[Any]) -> None:
        """Queue an item for the thread; raise the thread's error if it stopped instead."""
        putter = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({putter, worker}, return_when=asyncio.FIRST_COMPLETED)
        if not putter.done():
            putter.cancel()
            worker.result()  # raises what stopped the thread
            raise Abandoned("the engine thread stopped taking records")

    async def receive(self, worker: asyncio.Future[Any]) -> _T | None:
        """Return the thread's next item; raise the thread's error if it failed instead."""
        getter = asyncio.ensure_future(self._queue.get())
        await asyncio.wait({getter, worker}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        worker.result()  # raises what stopped the thread
        # It finished without an error, after queueing everything it had, the end included.
        return None if self._queue.empty() else self._queue.get_nowait()


def _dump(
    connection: sqlite3.Connection,
    namespace: str | None,
    now: float,
    handoff: _Handoff[list[TransferRecord]],
) -> None:
    statements = dump_statements(_DIALECT, namespace, _SOURCES)
    for sql, to_record in statements:
        cursor = connection.execute(sql, {"now": now, "namespace": namespace})
        while rows := cursor.fetchmany(DUMP_BATCH):
            handoff.put([to_record(row) for row in rows])
    handoff.put(None)


class _Restore:
    """One restore on the writer connection: checks namespaces, renumbers, inserts batch by batch."""

    def __init__(self, connection: sqlite3.Connection, *, replace: bool) -> None:
        self._connection = connection
        self._replace = replace
        self._gate = NamespaceGate()
        self._job_offset: int | None = None
        self._agent_offset: int | None = None

    def write(self, records: Sequence[TransferRecord]) -> None:
        for namespace in self._gate.new_namespaces(records):
            self._prepare(namespace)
        if self._job_offset is None and any(isinstance(record, JobRecord) for record in records):
            self._job_offset = self._offset("SELECT max(sequence) FROM jobs")
        if self._agent_offset is None and any(isinstance(record, AgentRecord) for record in records):
            self._agent_offset = self._offset("SELECT max(position) FROM agents")
        rows: dict[str, list[tuple[object, ...]]] = {}
        for record in records:
            sql, row = self._row(record)
            rows.setdefault(sql, []).append(row)
        try:
            for sql, values in rows.items():
                self._connection.executemany(sql, values)
            self._connection.executemany(
                _UPSERT_LIST_LENGTH, [(*key, length) for key, length in list_lengths(records).items()]
            )
        except sqlite3.IntegrityError as error:
            raise repeated_record(error) from error

    def _offset(self, greatest: str) -> int:
        (number,) = self._connection.execute(greatest).fetchone()
        return number_shift(number)

    def _prepare(self, namespace: str) -> None:
        """Empty the namespace (replace) or check that it holds nothing."""
        parameters = {"namespace": namespace}
        if self._replace:
            for sql in deletion_statements(_DIALECT):
                self._connection.execute(sql, parameters)
            return
        checks = occupancy_statements(_DIALECT)
        holding = [table for table, sql in checks if self._connection.execute(sql, parameters).fetchone()]
        if holding:
            raise occupied(namespace, holding)

    def _row(self, record: TransferRecord) -> tuple[str, tuple[object, ...]]:
        """Return the INSERT of a record and its values."""
        namespace = record.namespace
        if isinstance(record, EventRecord):
            e = record.event
            cost_usd, latency_ms = event_facts(e)
            return _events._INSERT_EVENT, (
                namespace, e.id, e.timestamp, e.session_id, e.agent_id, e.event_type.value, e.severity.value,
                e.payload, e.metadata, e.prev_hash, e.hash, e.chain_index, cost_usd, latency_ms,
            )  # fmt: skip
        if isinstance(record, ValueRecord):
            v = record
            return _INSERT_VALUE, (v.keyspace.value, namespace, v.key, v.value, v.expires_at)
        if isinstance(record, ListItemRecord):
            i = record
            return _INSERT_LIST_ITEM, (i.keyspace.value, namespace, i.key, i.position, i.value)
        if isinstance(record, DocumentRecord):
            d = record.document
            return _INSERT_DOCUMENT, (
                namespace, d.collection, d.id, d.revision, d.create_time, d.update_time,
                _documents._dump(d.data),
            )  # fmt: skip
        if isinstance(record, JobRecord):
            j = record.job
            return _INSERT_JOB, (
                namespace, j.sequence + (self._job_offset or 0), j.id, j.queue, j.status.value, j.priority,
                j.run_at, j.attempts, j.max_attempts, j.dedupe_key, orjson.dumps(j.payload).decode(),
                j.last_error, j.lease_token, j.lease_expires_at, j.create_time, j.update_time,
            )  # fmt: skip
        if isinstance(record, SessionRecord):
            s = record.session
            return _INSERT_SESSION, (
                namespace, s.id, s.agent_id, s.agent_name, s.started_at, s.ended_at, s.status.value,
                s.event_count, s.tool_call_count, s.error_count, s.total_cost_usd, json.dumps(s.tags),
                record.chain_length, record.last_hash,
            )  # fmt: skip
        if isinstance(record, EventAgentRecord):
            a = record.agent
            return _INSERT_EVENT_AGENT, (
                namespace, a.id, a.name, a.description, a.first_seen_at, a.last_seen_at, a.session_count
            )  # fmt: skip
        if isinstance(record, AlertRuleRecord):
            return _INSERT_RULE, (namespace, *_events._rule_values(record.rule))
        if isinstance(record, AlertHistoryRecord):
            return _INSERT_ENTRY, (namespace, *_events._entry_values(record.entry))
        if isinstance(record, AgentRecord):
            agent = record.agent
            configuration = configuration_text(agent.configuration)
            return _INSERT_AGENT, (
                namespace, record.position + (self._agent_offset or 0), agent.uri, agent.name, agent.version,
                agent.status.value, agent.visibility.value, agent.owner,
                None if agent.configuration is None else configuration, agent.update_time, fold(agent.name),
                fold(configuration),
            )  # fmt: skip
        if isinstance(record, ManifestRecord):
            m = record.manifest
            seconds, nanos = divmod(m.created_at, _NANOS)
            return _INSERT_MANIFEST, (
                namespace, m.handler_id, m.version, seconds, nanos, SQLITE.dump_json(m.document)
            )  # fmt: skip
        if isinstance(record, ManifestTransformerRecord):
            t = record.transformer
            return _INSERT_TRANSFORMER, (
                namespace, t.id, t.handler_id, t.from_version, t.to_version, SQLITE.dump_json(t.document)
            )  # fmt: skip
        key_id, version = record.key
        document = SQLITE.dump_json(record.document)
        return _INSERT_MANIFEST_DOCUMENT, (namespace, record.kind.value, key_id, version, document)


def _restore(
    connection: sqlite3.Connection, handoff: _Handoff[Sequence[TransferRecord]], *, replace: bool
) -> None:
    restore = _Restore(connection, replace=replace)
    while (batch := handoff.take()) is not None:
        restore.write(batch)


class _Sink:
    """Hands batches to the restore running on the writer thread."""

    def __init__(self, handoff: _Handoff[Sequence[TransferRecord]], worker: asyncio.Future[None]) -> None:
        self._handoff = handoff
        self._worker = worker

    async def write(self, records: Sequence[TransferRecord]) -> None:
        await self._handoff.send(records, self._worker)


class SqliteTransferStore:
    """Dumps from one read snapshot; restores in one write of the engine's writer thread."""

    def __init__(self, engine: SqliteEngine) -> None:
        self._engine = engine

    async def count(self, namespace: str | None) -> int:
        return await self._engine.read(lambda connection: _count(connection, namespace))

    async def dump(
        self, namespace: str | None, *, now: float
    ) -> AsyncGenerator[Sequence[TransferRecord], None]:
        handoff: _Handoff[list[TransferRecord]] = _Handoff(size=4)
        reading = asyncio.ensure_future(
            self._engine.read(lambda connection: _dump(connection, namespace, now, handoff))
        )
        try:
            while (batch := await handoff.receive(reading)) is not None:
                yield batch
            await reading
        finally:
            handoff.close()
            with contextlib.suppress(Exception):
                await reading

    @contextlib.asynccontextmanager
    async def restore(self, *, replace: bool) -> AsyncIterator[RecordSink]:
        handoff: _Handoff[Sequence[TransferRecord]] = _Handoff(size=2)
        writing = asyncio.ensure_future(
            self._engine.write(lambda connection: _restore(connection, handoff, replace=replace))
        )
        try:
            yield _Sink(handoff, writing)
            await handoff.send(None, writing)
            await writing
        finally:
            # After an error the writer thread stops at its next hand-over and the engine rolls back.
            handoff.close()
            with contextlib.suppress(Exception):
                await writing
