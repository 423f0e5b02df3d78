"""Redis, the cache, stopped and started again under load: the cache answers UNAVAILABLE meanwhile.

The memory fallback (`connect.cache_fallback`) applies at startup only: a cache that goes away later is not
swapped for an empty memory cache (which would hide the outage and serve values that other daemons cannot
invalidate), so cache calls answer UNAVAILABLE until Redis is back, and the database keeps serving.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from stord.client import Client
from tests.faults._load import (
    DEADLINE,
    NOT_SERVING,
    RECOVERY,
    SERVING,
    Load,
    database_health,
    eventually,
    health_status,
    running,
)
from tests.harness.redis import start_redis
from tests.harness.served import Served

pytestmark = pytest.mark.process

CACHE = "stord.v1.CacheService"


def _cache(client: Client, count: int) -> None:
    client.cache.set(f"c{count % 50}", b"%d" % count, ttl=60)
    client.cache.get(f"c{count % 50}")


def _database(client: Client, count: int) -> None:
    client.db.set(f"d{count % 50}", b"%d" % count)
    client.db.get(f"d{count % 50}")


def test_redis_restart_under_load(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    daemon: Served | None = None
    try:
        config = tmp_path / "stord.yaml"
        config.write_text("health_check_interval: 0.2\nconnect: {cache_fallback: true}\n")
        daemon = Served(tmp_path / "data", "--cache", redis.url, "--config", str(config))
        address = daemon.address
        operations = {"cache": _cache, "database": _database}
        with running(Load(address, operations, timeout=DEADLINE)) as load, Client(address) as admin:
            load.wait_all(grpc.StatusCode.OK, since=time.monotonic(), count=3)

            stopped = time.monotonic()
            redis.stop()
            eventually(lambda: health_status(address, CACHE) == NOT_SERVING, 10, "CacheService NOT_SERVING")
            seen = time.monotonic()
            eventually(
                lambda: sum(1 for o in load.since(seen) if o.operation == "cache") >= 5, 10, "cache calls"
            )
            assert database_health(address) == {SERVING}
            cache = admin.get_info().backends[1]
            assert (cache.kind, cache.healthy, cache.fallback) == ("redis", False, False)
            assert "Redis" in cache.detail
            assert daemon.process.poll() is None

            restarting = time.monotonic()
            redis = start_redis(tmp_path / "redis", port=redis.port)
            started = time.monotonic()
            served_again = load.wait_all(grpc.StatusCode.OK, since=started, count=3, timeout=RECOVERY)
            eventually(lambda: health_status(address, CACHE) == SERVING, RECOVERY, "CacheService SERVING")
            eventually(lambda: admin.get_info().backends[1].healthy, 10, "the cache healthy in GetInfo")
            settled = time.monotonic()
            load.wait_all(grpc.StatusCode.OK, since=settled, count=5)

        while_down = [o for o in load.since(seen) if o.finished < restarting]
        cache_down = [o for o in while_down if o.operation == "cache"]
        assert cache_down
        assert {o.code for o in cache_down} == {grpc.StatusCode.UNAVAILABLE}
        assert all("Redis" in o.message for o in cache_down), cache_down[:5]
        slowest = max(o.duration for o in cache_down)
        assert slowest < DEADLINE
        assert all(o.code is grpc.StatusCode.OK for o in load.since(stopped) if o.operation == "database")
        failures = [o for o in load.since(stopped) if o.code is not grpc.StatusCode.OK]
        assert {o.code for o in failures} <= {grpc.StatusCode.UNAVAILABLE}, failures[:5]
        assert not [o for o in load.since(settled) if o.code is not grpc.StatusCode.OK]
        print(
            f"\nredis: {len(cache_down)} cache calls while down, slowest {slowest:.3f} s;"
            f" served again {served_again - started:.2f} s after Redis was back; {cache_down[-1].message}"
        )
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
        redis.stop()
