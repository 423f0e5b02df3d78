from __future__ import annotations

from datetime import UTC, datetime

from stord.server.backends._jobs import QueueWakeups
from stord.server.backends.postgres._agents import PostgresAgentStore
from stord.server.backends.postgres._documents import PostgresDocumentStore
from stord.server.backends.postgres._events import PostgresEventStore
from stord.server.backends.postgres._jobs import JobNotifications, PostgresJobQueueStore
from stord.server.backends.postgres._key_value import PostgresKeyValueStore
from stord.server.backends.postgres._manifests import PostgresManifestStore
from stord.server.backends.postgres._migrate import migrate
from stord.server.backends.postgres._pool import Pool
from stord.server.backends.postgres._transfer import PostgresTransferStore
from stord.server.config import PostgresOptions
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


class PostgresBackend:
    """Serves every contract from one PostgreSQL database; the key-value roles apart by a keyspace column."""

    def __init__(self, url: str, *, options: PostgresOptions, clock: Clock = system_clock) -> None:
        self._url = url
        self._options = options
        self._clock = clock
        self._pool = Pool(url, options)
        self._key_value = {
            keyspace: PostgresKeyValueStore(self._pool, keyspace, clock) for keyspace in Keyspace
        }
        self._agents = PostgresAgentStore(self._pool, clock)
        self._events = PostgresEventStore(self._pool, clock, url=url, options=options)
        self._manifests = PostgresManifestStore(self._pool, clock)
        wakeups = QueueWakeups()
        self._job_notifications = JobNotifications(url, options, wakeups)
        self._documents = PostgresDocumentStore(self._pool, clock, wakeups)
        self._jobs = PostgresJobQueueStore(self._pool, clock, wakeups, self._job_notifications)
        self._transfer = PostgresTransferStore(self._pool)

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
        await self._events.statistics.close()  # events-read
        await self._pool.close()

    async def check(self) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(_CHECK)

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
