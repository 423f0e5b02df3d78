"""PostgreSQL and Redis behind a network partition: packets dropped silently, nothing refused.

The servers run inside a network namespace of the test's own (`tests/harness/network.py`); an nftables rule
there drops every packet of the link, so connections hang instead of failing, as behind a dead switch. The
daemon runs with short link timeouts (`_link.LINK`), so that calls answer UNAVAILABLE within the load's 3 s
deadline, health turns NOT_SERVING, and once the link heals the daemon serves again by itself, from
connections that work.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest

from stord.client import Client, Unavailable
from tests.faults._link import HOLD, ROUNDS, serve_linked
from tests.faults._load import (
    DEADLINE,
    NOT_SERVING,
    RECOVERY,
    SERVING,
    Load,
    Operation,
    Outcome,
    database_health,
    eventually,
    health_status,
    running,
)
from tests.faults.test_postgres_outage import OPERATIONS as DATABASE_OPERATIONS
from tests.harness.network import IsolatedHost
from tests.harness.postgres import PostgresServer
from tests.harness.redis import RedisServer
from tests.harness.served import Served

pytestmark = pytest.mark.process

CACHE = "stord.v1.CacheService"


def _cache(client: Client, count: int) -> None:
    client.cache.set(f"c{count % 50}", b"%d" % count, ttl=60)
    client.cache.get(f"c{count % 50}")


def _failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if outcome.code is not grpc.StatusCode.OK]


def _all_succeed(address: str, operations: Mapping[str, Operation], rounds: int) -> None:
    """Run every operation `rounds` times with a client that retries nothing: each call must succeed."""
    with Client(address, namespace="after-heal", timeout=DEADLINE, retry=None) as client:
        for count in range(rounds):
            for operation in operations.values():
                operation(client, count)


def _stop(daemon: Served | None) -> None:
    if daemon is not None and daemon.process.poll() is None:
        daemon.stop(signal.SIGKILL)


def _partition_under_load(
    isolated: IsolatedHost, address: str, operations: Mapping[str, Operation], round_number: int
) -> None:
    """Cut the link under load, hold it `HOLD` seconds more, heal it: UNAVAILABLE in time, then served."""
    with running(Load(address, operations, timeout=DEADLINE)) as load, Client(address) as admin:
        load.wait_all(grpc.StatusCode.OK, since=time.monotonic(), count=3)

        cut = time.monotonic()
        isolated.partition()
        load.wait_all(grpc.StatusCode.UNAVAILABLE, since=cut, count=3)
        eventually(lambda: database_health(address) == {NOT_SERVING}, 10, "database NOT_SERVING")
        assert health_status(address, CACHE) == NOT_SERVING
        database = admin.get_info().backends[0]
        assert (database.kind, database.healthy) == ("postgres", False)
        time.sleep(HOLD)

        healed = time.monotonic()
        isolated.heal()
        served_again = load.wait_all(grpc.StatusCode.OK, since=healed, count=3, timeout=RECOVERY)
        eventually(lambda: database_health(address) == {SERVING}, RECOVERY, "database SERVING again")
        settled = time.monotonic()
        load.wait_all(grpc.StatusCode.OK, since=settled, count=5)

    during = [outcome for outcome in load.since(cut) if outcome.started < healed]
    failures = _failures(load.since(cut))
    assert {outcome.code for outcome in failures} == {grpc.StatusCode.UNAVAILABLE}, failures[:5]
    slowest = max(outcome.duration for outcome in during)
    assert slowest < DEADLINE, f"a call took {slowest:.2f} s behind the partition"
    assert not _failures(load.since(settled)), _failures(load.since(settled))[:5]
    print(
        f"\npostgres partition {round_number + 1}: {len(during)} calls meanwhile, slowest {slowest:.2f} s;"
        f" served again {served_again - healed:.2f} s after the link healed; {failures[-1].message}"
    )


def test_postgres_partition_unavailable_within_deadline_then_served_again(
    isolated: IsolatedHost, postgres: PostgresServer, tmp_path: Path
) -> None:
    """PostgreSQL as database and cache: partitions under load (`ROUNDS`), then one while it is idle."""
    url = postgres.create_database("stord")
    daemon = serve_linked(tmp_path, "--database", url, "--cache", url)
    operations = {**DATABASE_OPERATIONS, "cache": _cache}
    try:
        address = daemon.address
        for round_number in range(ROUNDS):
            _partition_under_load(isolated, address, operations, round_number)

        # Partitioned while idle, for longer than the keepalives take to give up on pooled connections:
        # once health says SERVING again, no call meets a dead connection.
        isolated.partition()
        eventually(lambda: database_health(address) == {NOT_SERVING}, 10, "NOT_SERVING while idle")
        with Client(address, timeout=DEADLINE, retry=None) as client:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="unreachable"):
                client.db.get("k")
            # At once: the health check's connection broke (tcp_user_timeout), the probe found the server
            # unreachable, and no call waits for it any more.
            assert time.monotonic() - started < 0.9
        time.sleep(3)
        isolated.heal()
        eventually(lambda: database_health(address) == {SERVING}, RECOVERY, "SERVING after the idle one")
        _all_succeed(address, operations, rounds=20)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        _stop(daemon)


def test_redis_database_partition(isolated: IsolatedHost, redis: RedisServer, tmp_path: Path) -> None:
    """Redis as the database: key-value calls answer UNAVAILABLE, the daemon NOT_SERVING, then serves."""

    def key_value(client: Client, count: int) -> None:
        client.db.set(f"k{count % 50}", b"%d" % count)
        client.db.append("log", b"%d" % count)
        client.db.get(f"k{count % 50}")

    daemon = serve_linked(tmp_path, "--database", redis.url, "--cache", "memory://")
    try:
        address = daemon.address
        with running(Load(address, {"key-value": key_value}, timeout=DEADLINE)) as load:
            load.wait_all(grpc.StatusCode.OK, since=time.monotonic(), count=3)
            cut = time.monotonic()
            isolated.partition()
            load.wait_all(grpc.StatusCode.UNAVAILABLE, since=cut, count=3)
            eventually(lambda: health_status(address) == NOT_SERVING, 10, "NOT_SERVING")
            healed = time.monotonic()
            isolated.heal()
            load.wait_all(grpc.StatusCode.OK, since=healed, count=3, timeout=RECOVERY)
            eventually(lambda: health_status(address) == SERVING, RECOVERY, "SERVING again")
            settled = time.monotonic()
            load.wait_all(grpc.StatusCode.OK, since=settled, count=5)
        failures = _failures(load.since(cut))
        assert {outcome.code for outcome in failures} == {grpc.StatusCode.UNAVAILABLE}, failures[:5]
        assert all("Redis" in outcome.message for outcome in failures), failures[:5]
        slowest = max(outcome.duration for outcome in load.since(cut) if outcome.started < healed)
        assert slowest < DEADLINE
        assert not _failures(load.since(settled))
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        _stop(daemon)


def test_redis_cache_partition_falls_back_and_serves_nothing_stale(
    isolated: IsolatedHost, redis: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Redis as the cache behind a partition: cache calls UNAVAILABLE, the database serves on.

    GetAgent reads through the cache: meanwhile it reads the database; a write answers UNAVAILABLE (it
    committed, but could not invalidate the cache); after the link heals no read answers what that write
    replaced, though the caller did not retry it.
    """
    database = postgres_server.create_database(f"partition_{uuid.uuid4().hex[:12]}")
    daemon = serve_linked(tmp_path, "--database", database, "--cache", redis.url)

    def agents(client: Client, count: int) -> None:
        client.agents.set(f"agent-{count % 20}", name=f"v{count}")
        agent = client.agents.get(f"agent-{count % 20}")
        assert agent is not None

    def key_value(client: Client, count: int) -> None:
        client.db.set(f"k{count % 50}", b"%d" % count)

    operations = {"cache": _cache, "agents": agents, "key-value": key_value}
    try:
        address = daemon.address
        with (
            Client(address, namespace="cached", timeout=DEADLINE, retry=None) as client,
            running(Load(address, operations, timeout=DEADLINE)) as load,
        ):
            client.agents.set("watched", name="v1")
            for _ in range(3):  # start the generation, fill the entry, hit it
                assert (agent := client.agents.get("watched")) is not None
                assert agent.name == "v1"
            load.wait_all(grpc.StatusCode.OK, since=time.monotonic(), count=3)

            cut = time.monotonic()
            isolated.partition()
            eventually(lambda: health_status(address, CACHE) == NOT_SERVING, 10, "CacheService NOT_SERVING")
            assert database_health(address) == {SERVING}
            with pytest.raises(Unavailable, match="retry the write"):
                client.agents.set("watched", name="v2")
            for _ in range(3):  # from the database, within the deadline
                assert (agent := client.agents.get("watched")) is not None
                assert agent.name == "v2"
            seen = time.monotonic()
            eventually(lambda: sum(o.operation == "cache" for o in load.since(seen)) >= 3, 10, "cache calls")

            healed = time.monotonic()
            isolated.heal()
            eventually(lambda: health_status(address, CACHE) == SERVING, RECOVERY, "CacheService SERVING")
            for _ in range(3):  # never the value the unacknowledged write replaced
                assert (agent := client.agents.get("watched")) is not None
                assert agent.name == "v2"
            settled = time.monotonic()
            load.wait_all(grpc.StatusCode.OK, since=settled, count=5)

        during = [o for o in load.since(cut) if o.started < healed]
        cache_calls = [o for o in during if o.operation == "cache"]
        assert cache_calls
        assert {o.code for o in cache_calls if o.started >= seen} == {grpc.StatusCode.UNAVAILABLE}
        assert all(o.code is grpc.StatusCode.OK for o in during if o.operation == "key-value")
        failed_agents = [o for o in during if o.operation == "agents" and o.code is not grpc.StatusCode.OK]
        assert all("retry the write" in o.message for o in failed_agents), failed_agents[:3]
        slowest = max(o.duration for o in during)
        assert slowest < DEADLINE
        assert not _failures(load.since(settled))
        print(f"\nredis cache partition: {len(during)} calls meanwhile, slowest {slowest:.2f} s")
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        _stop(daemon)
