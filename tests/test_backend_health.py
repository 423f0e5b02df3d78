"""Health follows each backend: a cache that goes away turns NOT_SERVING and UNAVAILABLE, then recovers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stord.client import Client, Unavailable
from stord.server.config import Settings
from tests.harness.daemon import DaemonThread
from tests.harness.redis import start_redis

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def status(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return int(response.status)


def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


def test_cache_outage_is_reported_and_recovered_without_restart(tmp_path: Path) -> None:
    redis = start_redis(tmp_path)
    settings = Settings(
        listen="127.0.0.1:0",
        database="memory://",
        cache=redis.url,
        health_check_interval=0.1,
        log_level="warning",
    )
    daemon = DaemonThread(settings).start()
    try:
        with Client(daemon.target, timeout=5) as client:
            client.cache.set("k", b"v")
            assert status(daemon.target, "stord.v1.CacheService") == SERVING

            redis.stop()
            eventually(lambda: status(daemon.target, "stord.v1.CacheService") == NOT_SERVING)
            assert status(daemon.target, "") == SERVING  # the database still serves
            with pytest.raises(Unavailable, match="Redis"):
                client.cache.get("k")
            client.db.set("still", b"works")
            cache_info = client.get_info().backends[1]
            assert (cache_info.kind, cache_info.healthy) == ("redis", False)

            redis = start_redis(tmp_path, port=redis.port)
            eventually(lambda: status(daemon.target, "stord.v1.CacheService") == SERVING)
            client.cache.set("k", b"back")
            assert client.cache.get("k") == b"back"
            assert client.get_info().backends[1].healthy
    finally:
        daemon.stop()
        redis.stop()
