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

from stord.server.agents.search import configuration_text
from stord.server.backends._event_sql import (
    RULE_COLUMNS,
    SESSION_COLUMNS,
)
from stord.server.backends._event_sql import SQLITE as EVENT_SQLITE
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
    insert_statements,
    list_lengths,
    number_shift,
    occupancy_statements,
    occupied,
    record_values,
    repeated_record,
)
from stord.server.backends.sqlite import _agents, _documents, _event_rollups, _events, _jobs
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.sqlite._runner import SQLITE
from stord.server.backends.tables import (
    AGENTS,
    DOCUMENTS,
    JOBS,
    KV_LISTS,
)
from stord.server.transfer.port import (
    AgentRecord,
    JobRecord,
    RecordSink,
    TransferRecord,
)

__all__ = ["SqliteTransferStore"]

_T = TypeVar("_T")
_R = TypeVar("_R")

_POLL_SECONDS = 0.1
"""How often a thread waiting for the event loop checks whether the other side gave up."""


_DIALECT = TransferDialect(
    parameter=lambda name: f":{name}",
    seconds=lambda value: value,
    document=json.loads,
    code_point_order="",  # BINARY, SQLite's default collation, is code point order
)

_UPSERT_LIST_LENGTH = f"""
{KV_LISTS.insert("?")}
ON CONFLICT (keyspace, namespace, key) DO UPDATE SET length = max(length, excluded.length)
"""
_INSERT_SESSION = f"""
INSERT INTO event_sessions (namespace, {SESSION_COLUMNS}, chain_length, last_hash)
VALUES (?{", ?" * 13})
"""

_SOURCES = dump_sources(
    EVENT_SQLITE, SQLITE, document=_documents.DOCUMENT_ROWS, job=_jobs.JOB_ROWS, agent=_agents.AGENT_ROWS
)


_INSERTS = insert_statements(
    "?",
    document=DOCUMENTS.insert("?"),
    job=JOBS.insert("?"),
    session=_INSERT_SESSION,
    rule=f"INSERT INTO event_alert_rules (namespace, {RULE_COLUMNS}) VALUES (?{', ?' * 11})",
    agent=AGENTS.insert("?"),
    event=_events.INSERT_EVENT,
)

_WRITER = RowWriter(
    instant=lambda seconds: seconds,
    json=SQLITE.dump_json,
    configuration=configuration_text,
    texts=json.dumps,
    rule=lambda namespace, rule: (namespace, *_events.rule_values(rule)),
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
        self.namespaces: list[str] = []
        """The namespaces restored, each checked (or emptied) before its first record."""
        self._job_offset: int | None = None
        self._agent_offset: int | None = None

    def write(self, records: Sequence[TransferRecord]) -> None:
        for namespace in self._gate.new_namespaces(records):
            self._prepare(namespace)
        if self._job_offset is None and any(isinstance(record, JobRecord) for record in records):
            self._job_offset = self._offset("SELECT max(sequence) FROM jobs")
        if self._agent_offset is None and any(isinstance(record, AgentRecord) for record in records):
            self._agent_offset = self._offset("SELECT max(position) FROM agents")
        rows: dict[str, list[Values]] = {}
        for record in records:
            row = record_values(
                record, _WRITER, job_shift=self._job_offset or 0, agent_shift=self._agent_offset or 0
            )
            rows.setdefault(_INSERTS[type(record)], []).append(row)
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
        self.namespaces.append(namespace)
        parameters = {"namespace": namespace}
        if self._replace:
            for sql in deletion_statements(_DIALECT):
                self._connection.execute(sql, parameters)
            return
        checks = occupancy_statements(_DIALECT)
        holding = [table for table, sql in checks if self._connection.execute(sql, parameters).fetchone()]
        if holding:
            raise occupied(namespace, holding)


def _restore(
    connection: sqlite3.Connection, handoff: _Handoff[Sequence[TransferRecord]], *, replace: bool
) -> None:
    restore = _Restore(connection, replace=replace)
    while (batch := handoff.take()) is not None:
        restore.write(batch)
    for namespace in restore.namespaces:  # rollups and search index of the restored events
        _event_rollups.rebuild_namespace(connection, namespace)


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
