"""The read-through cache of GetAgent and GetManifest: never a stale read after a write returned.

Deterministic races on the cache itself, then two daemons sharing one PostgreSQL and one Redis.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator, Sequence

import psycopg
import pytest
import redis

from stord.client import Client
from stord.server.backends.memory import MemoryBackend
from stord.server.backends.memory._key_value import MemoryKeyValueStore
from stord.server.config import Settings
from stord.server.kv.port import ValueEntry
from stord.server.ports import Unavailable, system_clock
from stord.server.read_cache import NAMESPACE, ReadThroughCache, read_cache_for
from stord.v1 import manifests_pb2
from tests.harness.daemon import DaemonThread
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer


class Database:
    """A one-record database whose reads can be made to overlap a write."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.reads = 0

    async def load(self) -> bytes | None:
        self.reads += 1
        return self.value


def test_a_read_that_overlaps_a_write_never_leaves_a_stale_entry() -> None:
    async def scenario() -> None:
        cache, database = ReadThroughCache(MemoryKeyValueStore(system_clock)), Database(b"old")
        assert await cache.read("k", ["scope"], database.load) == b"old"  # starts the scope's generation
        assert await cache.read("k", ["scope"], database.load) == b"old"  # fills the entry

        async def load_then_lose_the_race() -> bytes | None:
            stale = database.value  # read from the database just before a write commits...
            database.value = b"new"
            await cache.invalidate(["scope"])  # ...which then invalidates before this read fills
            return stale

        await cache.invalidate(["scope"])
        assert await cache.read("k", ["scope"], load_then_lose_the_race) == b"old"
        assert await cache.read("k", ["scope"], database.load) == b"new"
        reads = database.reads
        assert await cache.read("k", ["scope"], database.load) == b"new"
        assert database.reads == reads  # and that one came from the cache

    asyncio.run(scenario())


def test_an_entry_is_served_only_while_every_scope_is_unchanged() -> None:
    async def scenario() -> None:
        cache, database = ReadThroughCache(MemoryKeyValueStore(system_clock)), Database(b"v1")
        for _ in range(2):
            await cache.read("k", ["namespace", "handler"], database.load)
        database.value = b"v2"
        await cache.invalidate(["namespace"])
        assert await cache.read("k", ["namespace", "handler"], database.load) == b"v2"

    asyncio.run(scenario())


class UnreachableStore(MemoryKeyValueStore):
    """A cache store whose server is down."""

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        raise Unavailable("cache down")

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        raise Unavailable("cache down")


def test_reads_bypass_an_unreachable_cache_and_writes_report_it() -> None:
    async def scenario() -> None:
        cache, database = ReadThroughCache(UnreachableStore(system_clock)), Database(b"v")
        assert await cache.read("k", ["scope"], database.load) == b"v"
        with pytest.raises(Unavailable, match="retry the write"):
            await cache.invalidate(["scope"])

    asyncio.run(scenario())


class FlakyStore(MemoryKeyValueStore):
    """A cache store whose server can be cut off and brought back."""

    reachable = True

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not self.reachable:
            raise Unavailable("cache cut off")
        return await super().get_many(namespace, keys)

    async def set_many(self, namespace: str, entries: Sequence[ValueEntry]) -> None:
        if not self.reachable:
            raise Unavailable("cache cut off")
        await super().set_many(namespace, entries)


def test_a_failed_invalidation_is_made_up_for_before_an_entry_is_served_again() -> None:
    async def scenario() -> None:
        store = FlakyStore(system_clock)
        cache, database = ReadThroughCache(store), Database(b"old")
        for _ in range(2):
            assert await cache.read("k", ["scope"], database.load) == b"old"
        store.reachable = False
        database.value = b"new"
        with pytest.raises(Unavailable, match="retry the write"):
            await cache.invalidate(["scope"])
        assert await cache.read("k", ["scope"], database.load) == b"new"
        store.reachable = True  # the entry under the old token is still there, but never served again
        assert await cache.read("k", ["scope"], database.load) == b"new"
        reads = database.reads
        assert await cache.read("k", ["scope"], database.load) == b"new"
        assert await cache.read("k", ["scope"], database.load) == b"new"
        assert database.reads == reads  # filled under the fresh token by the first read after, then a hit

    asyncio.run(scenario())


def test_only_a_shared_cache_on_another_engine_is_used() -> None:
    memory = MemoryBackend()
    other_memory = MemoryBackend()
    assert read_cache_for(memory, memory) is None
    assert read_cache_for(memory, other_memory) is None  # a process-local cache: others could not invalidate


# Two daemons, one PostgreSQL, one Redis --------------------------------------------------------------------


@pytest.fixture
def two_daemons(postgres_server: PostgresServer, redis_server: RedisServer) -> Iterator[tuple[str, str, str]]:
    """Two daemons on one fresh database and the shared Redis: their targets and the database URL."""
    database = postgres_server.create_database(f"read_cache_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    settings = Settings(listen="127.0.0.1:0", database=database, cache=redis_server.url, log_level="warning")
    first = DaemonThread(settings).start()
    try:
        second = DaemonThread(settings).start()
        try:
            yield first.target, second.target, database
        finally:
            second.stop()
    finally:
        first.stop()


def test_hot_reads_come_from_the_shared_cache(
    two_daemons: tuple[str, str, str], redis_server: RedisServer
) -> None:
    first, second, database = two_daemons
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    with Client(first, namespace=namespace) as writer, Client(second, namespace=namespace) as reader:
        writer.agents.set("cached", name="v1")
        for _ in range(2):  # the first read starts the generation, the second fills the entry
            assert reader.agents.get("cached") is not None
        with psycopg.connect(database, autocommit=True) as connection:
            connection.execute("DELETE FROM agents WHERE namespace = %s", (namespace,))
        agent = reader.agents.get("cached")  # gone from the database, still in the cache
        assert agent is not None
        assert agent.name == "v1"
    keys = redis.Redis.from_url(redis_server.url).keys(f"stord:cache:{NAMESPACE}:*")
    assert keys


def test_a_write_on_one_daemon_is_never_followed_by_a_stale_read_on_the_other(
    two_daemons: tuple[str, str, str],
) -> None:
    first, second, _ = two_daemons
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    stop = threading.Event()

    def hammer() -> None:
        """Keep filling the other daemon's cache entries, so fills race with every invalidation."""
        with Client(second, namespace=namespace) as client:
            while not stop.is_set():
                client.agents.get("agent")
                client.manifests.get_manifest("handler")

    readers = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        with Client(first, namespace=namespace) as writer, Client(second, namespace=namespace) as reader:
            for index in range(100):
                writer.agents.set("agent", name=f"v{index}")
                agent = reader.agents.get("agent")
                assert agent is not None
                assert agent.name == f"v{index}"
                version = f"{index:04d}"
                writer.manifests.store_manifest(
                    manifests_pb2.HandlerManifest(handler_id="handler", version=version)
                )
                latest = reader.manifests.get_manifest("handler")
                assert latest is not None
                assert latest.version == version
            writer.agents.delete("agent")
            assert reader.agents.get("agent") is None
            writer.manifests.clear()
            assert reader.manifests.get_manifest("handler") is None
    finally:
        stop.set()
        for thread in readers:
            thread.join()
