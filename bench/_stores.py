"""The two sides of every comparison: stord through its client, and each backend called directly.

Every store reads and writes rows shaped like stord's cache rows (keyspace `cache`, namespace `default`), so
the raw side does the work stord's backend does, minus the daemon.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol, cast

import redis.asyncio
from psycopg_pool import AsyncConnectionPool

from stord.client import AsyncClient
from stord.server.backends.tables import KV_VALUES

__all__ = ["StordStore", "Store", "open_raw_store", "raw_concurrency"]

KEYSPACE = "cache"
NAMESPACE = "default"


class Store(Protocol):
    """Reads and writes of single cache values."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class StordStore:
    """CacheService through `AsyncClient`, as an application calls it."""

    def __init__(self, target: str) -> None:
        self._client = AsyncClient(target)

    async def get(self, key: str) -> bytes | None:
        return await self._client.cache.get(key)

    async def set(self, key: str, value: bytes) -> None:
        await self._client.cache.set(key, value)

    async def close(self) -> None:
        await self._client.close()


class SqliteStore:
    """sqlite3 on one connection in the event loop's thread: WAL, synchronous=NORMAL, a commit per write."""

    _GET = "SELECT value FROM kv_values WHERE keyspace = ? AND namespace = ? AND key = ?"
    _SET = f"""
        {KV_VALUES.insert("?")}
        ON CONFLICT (keyspace, namespace, key) DO UPDATE SET value = excluded.value, expires_at = NULL
    """

    def __init__(self, url: str) -> None:
        # isolation_level=None: no implicit transaction, so each INSERT commits on its own.
        self._connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        self._connection.execute("PRAGMA journal_mode = WAL")
        self._connection.execute("PRAGMA synchronous = NORMAL")

    async def get(self, key: str) -> bytes | None:
        row = self._connection.execute(self._GET, (KEYSPACE, NAMESPACE, key)).fetchone()
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes) -> None:
        self._connection.execute(self._SET, (KEYSPACE, NAMESPACE, key, value, None))

    async def close(self) -> None:
        self._connection.close()


class PostgresStore:
    """psycopg on a pool of autocommit connections, one per concurrent caller."""

    _GET = "SELECT value FROM kv_values WHERE keyspace = %s AND namespace = %s AND key = %s"
    _SET = f"""
        {KV_VALUES.insert("%s")}
        ON CONFLICT (keyspace, namespace, key) DO UPDATE SET value = excluded.value, expires_at = NULL
    """

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, size: int) -> PostgresStore:
        pool = AsyncConnectionPool(url, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False)
        await pool.open(wait=True)
        return cls(pool)

    async def get(self, key: str) -> bytes | None:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(self._GET, (KEYSPACE, NAMESPACE, key))
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes) -> None:
        async with self._pool.connection() as connection:
            await connection.execute(self._SET, (KEYSPACE, NAMESPACE, key, value, None))

    async def close(self) -> None:
        await self._pool.close()


class RedisStore:
    """redis-py asyncio GET and SET on its connection pool; keys apart from stord's own (`stord:...`)."""

    def __init__(self, url: str) -> None:
        self._redis = redis.asyncio.Redis.from_url(url)

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self._redis.get(key))  # bytes: decode_responses is off

    async def set(self, key: str, value: bytes) -> None:
        await self._redis.set(key, value)

    async def close(self) -> None:
        await self._redis.aclose()


def raw_concurrency(url: str, stord_concurrency: int) -> int:
    """Each backend's natural concurrency: sqlite3 calls block, so one caller; the others as many as stord."""
    return 1 if url.startswith("sqlite:") else stord_concurrency


async def open_raw_store(url: str, concurrency: int) -> Store:
    """Connect to a backend directly, choosing the driver by the URL's scheme."""
    if url.startswith("sqlite:"):
        return SqliteStore(url)
    if url.startswith("postgresql:"):
        return await PostgresStore.connect(url, concurrency)
    if url.startswith("redis:"):
        return RedisStore(url)
    raise ValueError(f"no raw driver for {url}")
