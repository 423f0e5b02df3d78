from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import ClassVar

from stord.server.backends._contracts import DeclaredContracts
from stord.server.backends._manifest_sql import SqlManifestStore
from stord.server.backends.postgres._agents import PostgresAgentStore
from stord.server.backends.postgres._alerts import PostgresAlertStateStore
from stord.server.backends.postgres._documents import PostgresDocumentStore
from stord.server.backends.postgres._events import PostgresEventStore
from stord.server.backends.postgres._jobs import JobNotifications, PostgresJobQueueStore
from stord.server.backends.postgres._key_value import PostgresKeyValueStore
from stord.server.backends.postgres._migrate import migrate
from stord.server.backends.postgres._pool import Pool, with_keepalives
from stord.server.backends.postgres._runner import POSTGRES, PostgresRunner
from stord.server.backends.postgres._transfer import PostgresTransferStore
from stord.server.config import PostgresOptions
from stord.server.jobs.rules import QueueWakeups
from stord.server.kv.port import Keyspace
from stord.server.ports import CONTRACT_CAPABILITIES, Capability, Clock, system_clock

_SWEEP_BATCH = 1000

# FOR UPDATE rechecks the expiry on the latest version of each row, so a value set again meanwhile is kept;
# SKIP LOCKED leaves rows that a writer holds to the next sweep.
_DELETE_EXPIRED = """
DELETE FROM kv_values AS value
USING (
    SELECT keyspace, namespace, key FROM kv_values
    WHERE expires_at <= %(now)s
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
) AS expired
WHERE value.keyspace = expired.keyspace AND value.namespace = expired.namespace AND value.key = expired.key
"""

_CHECK = "SELECT 1"

_INSERT_PAGE_TOKEN_KEY = (
    "INSERT INTO page_token_key (id, key) VALUES (1, %(key)s) ON CONFLICT (id) DO NOTHING"
)
_PAGE_TOKEN_KEY = "SELECT key FROM page_token_key WHERE id = 1"


class PostgresBackend(DeclaredContracts):
    """Serves every contract from one PostgreSQL database; the key-value roles apart by a keyspace column."""

    def __init__(self, url: str, *, options: PostgresOptions, clock: Clock = system_clock) -> None:
        self._url = url
        self._options = options
        self._clock = clock
        self._pool = Pool(url, options)
        self._key_value = {
            keyspace: PostgresKeyValueStore(self._pool, keyspace, clock) for keyspace in Keyspace
        }
        # The LISTEN connections wait silently for hours: without keepalives a partition would leave them
        # waiting on a dead connection for as long as the kernel retransmits (minutes).
        listen_url = with_keepalives(url, options)
        self._agents = PostgresAgentStore(self._pool, clock)
        events = PostgresEventStore(self._pool, clock, url=listen_url, options=options)
        self._events = events
        self._event_statistics = events.statistics
        self._alerts = PostgresAlertStateStore(self._pool)
        self._manifests = SqlManifestStore(PostgresRunner(self._pool), POSTGRES, clock)
        wakeups = QueueWakeups()
        self._job_notifications = JobNotifications(listen_url, options, wakeups)
        self._documents = PostgresDocumentStore(self._pool, clock, wakeups)
        self._jobs = PostgresJobQueueStore(self._pool, clock, wakeups, self._job_notifications)
        self._transfer = PostgresTransferStore(self._pool)

    CAPABILITIES: ClassVar[frozenset[Capability]] = CONTRACT_CAPABILITIES | {
        Capability.INJECTABLE_CLOCK,
        Capability.INDEXES,
        Capability.SHARED_BY_PROCESSES,
        Capability.CROSS_PROCESS_WAKEUPS,  # LISTEN/NOTIFY
    }

    @property
    def kind(self) -> str:
        return "postgres"

    @property
    def pool(self) -> Pool:
        """The shared connection pool, for the stores of the other contracts."""
        return self._pool

    async def migrate(self) -> list[int]:
        """Apply the pending migrations without opening the pool; return the versions applied."""
        return await migrate(self._url, connect_timeout=self._options.connect_timeout)

    async def open(self) -> None:
        await self.migrate()
        await self._pool.open()

    async def close(self) -> None:
        await self._job_notifications.close()
        await self._event_statistics.close()
        await self._pool.close()

    async def check(self) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(_CHECK)

    async def page_token_key(self) -> bytes:
        async with self._pool.connection() as connection:
            row = await (await connection.execute(_PAGE_TOKEN_KEY)).fetchone()
            if row is None:
                await connection.execute(_INSERT_PAGE_TOKEN_KEY, {"key": secrets.token_bytes(32)})
                row = await (await connection.execute(_PAGE_TOKEN_KEY)).fetchone()
        assert row is not None  # inserted above, by this daemon or a concurrent one, and never deleted
        return bytes(row[0])

    async def sweep(self) -> int:
        """Delete the values expired by now, in bounded batches, each its own transaction; return how many."""
        deleted = 0
        while True:
            params = {"now": datetime.fromtimestamp(self._clock(), UTC), "batch": _SWEEP_BATCH}
            async with self._pool.connection() as connection:
                cursor = await connection.execute(_DELETE_EXPIRED, params)
            deleted += cursor.rowcount
            if cursor.rowcount < _SWEEP_BATCH:
                return deleted
