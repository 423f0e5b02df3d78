"""Fixtures of the fault tests: PostgreSQL and Redis inside a network namespace the test can partition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.network import IsolatedHost, isolated_host
from tests.harness.postgres import PostgresServer, start_postgres
from tests.harness.redis import RedisServer, start_redis


@pytest.fixture
def isolated() -> Iterator[IsolatedHost]:
    """A network namespace the test can partition; removed afterwards, and the host checked intact."""
    with isolated_host() as host:
        yield host


@pytest.fixture
def postgres(isolated: IsolatedHost, tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own inside `isolated`."""
    server = start_postgres(tmp_path / "postgres", host=isolated)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(isolated: IsolatedHost, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own inside `isolated`."""
    server = start_redis(tmp_path / "redis", host=isolated)
    try:
        yield server
    finally:
        server.stop()
