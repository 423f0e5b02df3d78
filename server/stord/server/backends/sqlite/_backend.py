from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from stord.server.backends._jobs import QueueWakeups
from stord.server.backends.sqlite._agents import SqliteAgentStore
from stord.server.backends.sqlite._documents import SqliteDocumentStore
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.sqlite._events import SqliteEventStore
from stord.server.backends.sqlite._jobs import SqliteJobQueueStore
from stord.server.backends.sqlite._key_value import SqliteKeyValueStore, delete_expired
from stord.server.backends.sqlite._manifests import SqliteManifestStore
from stord.server.backends.sqlite._transfer import SqliteTransferStore
from stord.server.config import SqliteOptions
from stord.server.ports import (
    AgentStore,
    Clock,
    DocumentStore,
    EventStore,
    JobQueueStore,
    Keyspace,
    KeyValueStore,
    ManifestStore,
    TransferStore,
    system_clock,
)

_INSERT_PAGE_TOKEN_KEY = "INSERT OR IGNORE INTO page_token_key (id, key) VALUES (1, ?)"
_PAGE_TOKEN_KEY = "SELECT key FROM page_token_key WHERE id = 1"


class SqliteBackend:
    """The embedded default database (DESIGN 3): one SQLite file in WAL mode, one writer, pooled readers."""

    def __init__(self, path: Path, *, options: SqliteOptions, clock: Clock = system_clock) -> None:
        self._engine = SqliteEngine(path, options=options)
        self._clock = clock
        self._key_value = {
            keyspace: SqliteKeyValueStore(self._engine, keyspace, clock) for keyspace in Keyspace
        }
        self._agents = SqliteAgentStore(self._engine, clock)
        self._events = SqliteEventStore(self._engine, clock)
        self._manifests = SqliteManifestStore(self._engine, clock)
        wakeups = QueueWakeups()
        self._documents = SqliteDocumentStore(self._engine, clock, wakeups)
        self._jobs = SqliteJobQueueStore(self._engine, clock, wakeups)
        self._transfer = SqliteTransferStore(self._engine)

    @property
    def kind(self) -> str:
        return "sqlite"

    @property
    def engine(self) -> SqliteEngine:
        """The shared writer thread and reader pool, for the stores of the other contracts."""
        return self._engine

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    async def check(self) -> None:
        await self._engine.check()

    async def page_token_key(self) -> bytes:
        def stored(connection: sqlite3.Connection) -> bytes | None:
            row = connection.execute(_PAGE_TOKEN_KEY).fetchone()
            return None if row is None else bytes(row[0])

        def insert_if_absent(connection: sqlite3.Connection) -> bytes:
            connection.execute(_INSERT_PAGE_TOKEN_KEY, (secrets.token_bytes(32),))
            key = stored(connection)
            assert key is not None  # inserted above, by this daemon or a concurrent one, and never deleted
            return key

        # A read first: a database that has its key needs no write (a full disk must not stop a start).
        key: bytes | None = await self._engine.read(stored)
        return key if key is not None else await self._engine.write(insert_if_absent)

    async def sweep(self) -> int:
        """Delete the values expired by now, in bounded batches; return how many."""
        return await delete_expired(self._engine, now=self._clock())

    def key_value(self, keyspace: Keyspace) -> KeyValueStore:
        return self._key_value[keyspace]

    def events(self) -> EventStore:
        return self._events

    def agents(self) -> AgentStore:
        return self._agents

    def manifests(self) -> ManifestStore:
        return self._manifests

    def documents(self) -> DocumentStore:
        return self._documents

    def jobs(self) -> JobQueueStore:
        return self._jobs

    def transfer(self) -> TransferStore:
        return self._transfer
