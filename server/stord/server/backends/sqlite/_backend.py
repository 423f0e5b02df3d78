from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import ClassVar

from stord.server.backends._contracts import DeclaredContracts
from stord.server.backends._manifest_sql import SqlManifestStore
from stord.server.backends.sqlite._agents import SqliteAgentStore
from stord.server.backends.sqlite._alerts import SqliteAlertStateStore
from stord.server.backends.sqlite._documents import SqliteDocumentStore
from stord.server.backends.sqlite._engine import SqliteEngine
from stord.server.backends.sqlite._events import SqliteEventStore
from stord.server.backends.sqlite._jobs import SqliteJobQueueStore
from stord.server.backends.sqlite._key_value import SqliteKeyValueStore, delete_expired
from stord.server.backends.sqlite._runner import SQLITE, SqliteRunner
from stord.server.backends.sqlite._transfer import SqliteTransferStore
from stord.server.config import SqliteOptions
from stord.server.jobs.rules import QueueWakeups
from stord.server.kv.port import Keyspace
from stord.server.ports import CONTRACT_CAPABILITIES, Capability, Clock, system_clock

_INSERT_PAGE_TOKEN_KEY = "INSERT OR IGNORE INTO page_token_key (id, key) VALUES (1, ?)"
_PAGE_TOKEN_KEY = "SELECT key FROM page_token_key WHERE id = 1"


class SqliteBackend(DeclaredContracts):
    """The embedded default database (DESIGN 3): one SQLite file in WAL mode, one writer, pooled readers."""

    def __init__(self, path: Path, *, options: SqliteOptions, clock: Clock = system_clock) -> None:
        self._engine = SqliteEngine(path, options=options)
        self._clock = clock
        self._key_value = {
            keyspace: SqliteKeyValueStore(self._engine, keyspace, clock) for keyspace in Keyspace
        }
        self._agents = SqliteAgentStore(self._engine, clock)
        self._events = SqliteEventStore(self._engine, clock)
        self._alerts = SqliteAlertStateStore(self._engine)
        self._manifests = SqlManifestStore(SqliteRunner(self._engine), SQLITE, clock)
        wakeups = QueueWakeups()
        self._documents = SqliteDocumentStore(self._engine, clock, wakeups)
        self._jobs = SqliteJobQueueStore(self._engine, clock, wakeups)
        self._transfer = SqliteTransferStore(self._engine)

    CAPABILITIES: ClassVar[frozenset[Capability]] = CONTRACT_CAPABILITIES | {
        Capability.INJECTABLE_CLOCK,
        Capability.INDEXES,
        Capability.SHARED_BY_PROCESSES,  # its wake-ups across processes are polls (PRAGMA data_version)
    }

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
