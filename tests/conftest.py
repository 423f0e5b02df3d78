"""Fixtures: throwaway PostgreSQL and Redis, and a daemon per backend with a fresh namespace per test."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from stord.client import Client
from stord.server.backends import KINDS, declared_capabilities
from stord.server.config import Settings
from stord.server.logs import configure_logging
from stord.server.ports import Capability
from tests.harness.clock import ManualClock
from tests.harness.daemon import DaemonThread
from tests.harness.postgres import PostgresServer, start_postgres
from tests.harness.redis import RedisServer, start_redis


def backends_with(capability: Capability) -> list[str]:
    """Return the backends that declare `capability`, in `KINDS` order: tests read the declarations."""
    return [kind for kind in KINDS if capability in declared_capabilities(kind)]


KV_BACKENDS = backends_with(Capability.KEY_VALUE)
"""Backends that serve the key-value contract, each run through the same conformance suite."""

DATABASE_BACKENDS = backends_with(Capability.DOCUMENTS)
"""Backends that serve every contract but the cache and key-value ones alone (Redis does not)."""

CLOCKED = set(backends_with(Capability.INJECTABLE_CLOCK))
"""Backends whose expiry follows the daemon's injectable clock; Redis expires keys by its own clock."""

SHARED_DATABASES = [
    kind for kind in DATABASE_BACKENDS if kind in backends_with(Capability.SHARED_BY_PROCESSES)
]
"""Databases that several daemon processes can serve at once (and that outlive a daemon)."""

NO_RECHECK = 3600.0
"""A long poll's recheck interval longer than any wait (60 s at most): only wake-ups end a wait early."""

_database_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def make_backend_url(request: pytest.FixtureRequest, kind: str, directory: Path) -> str:
    """Return the URL of an empty backend of `kind` (a new database or file where the kind has them)."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{directory / 'stord.db'}"
    if kind == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(f"stord_{os.getpid()}_{next(_database_names)}")
    if kind == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return redis.url
    raise ValueError(kind)


@dataclass
class SharedDaemon:
    """A running daemon over one backend, shared by the tests of a session."""

    kind: str
    target: str
    clock: ManualClock
    thread: DaemonThread

    def client(self, namespace: str | None = None) -> Client:
        return Client(self.target, namespace=namespace or f"t-{uuid.uuid4().hex[:12]}")


class Daemons:
    """One daemon per backend kind, started on first use and shared by every test of the session."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._request = request
        self._tmp_path_factory = tmp_path_factory
        self._running: dict[str, SharedDaemon] = {}

    def get(self, kind: str) -> SharedDaemon:
        if kind not in self._running:
            url = make_backend_url(self._request, kind, self._tmp_path_factory.mktemp(kind))
            clock = ManualClock()
            # Alert evaluation off: its alert events would land in the namespaces of the events suite's rules
            # (tests/conformance/test_alerts.py runs daemons of its own with it on).
            # Sweeps run when a test asks (daemon.sweep_expired, settle_lapsed_leases), never on their own
            # in the middle of a test that inspects what they would change.
            settings = Settings(
                listen="127.0.0.1:0",
                database=url,
                cache=url,
                log_level="warning",
                # Time moves only by the manual clock here: no job falls due on its own, so a long poll
                # has nothing to recheck for, and whatever answers a waiting Dequeue early is a wake-up.
                long_poll_recheck_interval=NO_RECHECK,
                alert_interval=0,
                expiry_sweep_interval=24 * 3600,
            )
            thread = DaemonThread(settings, clock=clock).start()
            self._running[kind] = SharedDaemon(kind, thread.target, clock, thread)
        return self._running[kind]

    def stop(self) -> None:
        for served in self._running.values():
            served.thread.stop()


@pytest.fixture(scope="session")
def daemons(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    running = Daemons(request, tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(params=KV_BACKENDS)
def served(request: pytest.FixtureRequest, daemons: Daemons) -> SharedDaemon:
    """A daemon whose database and cache are both the parametrized key-value backend."""
    return daemons.get(request.param)


@pytest.fixture(params=DATABASE_BACKENDS)
def database_served(request: pytest.FixtureRequest, daemons: Daemons) -> SharedDaemon:
    """A daemon on each backend that serves the database-only contracts (documents, jobs, events, ...)."""
    return daemons.get(request.param)


@pytest.fixture
def database_client(database_served: SharedDaemon) -> Iterator[Client]:
    """A client in a namespace of its own on a daemon that serves the database-only contracts."""
    with database_served.client() as client:
        yield client


@pytest.fixture
def redis_served(daemons: Daemons) -> SharedDaemon:
    """A daemon on Redis, to check that it answers UNIMPLEMENTED for the contracts it does not serve."""
    return daemons.get("redis")


@pytest.fixture
def client(served: SharedDaemon) -> Iterator[Client]:
    """A client in a namespace of its own, so tests share a daemon without seeing each other."""
    with served.client() as client:
        yield client


INTERNAL_ERROR_EVENTS = frozenset({"rpc_failed", "health_check_crashed", "expiry_sweep_crashed"})
"""What a daemon logs for a bug: an RPC answered INTERNAL, a background task that crashed."""

_internal_errors: list[str] = []
"""Every internal error that a daemon of this process logged, in order."""


def _record_internal_errors(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    if event.get("event") in INTERNAL_ERROR_EVENTS:
        _internal_errors.append(f"{event.get('event')} {event.get('method', '')}: {event.get('exc_info')!r}")
    return event


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    """Keep the daemons' access logs out of the test output; failures still show warnings and errors.

    Every daemon this process starts also reports its internal errors to `_no_internal_errors`.
    """
    configure_logging(log_format="console", level="warning")
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[_record_internal_errors, *processors])


@pytest.fixture(autouse=True)
def _no_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which any in-process daemon logged an internal error: INTERNAL is a bug everywhere.

    A test that provokes one on purpose says so with `@pytest.mark.internal_errors_expected`.
    """
    seen = len(_internal_errors)
    yield
    found = _internal_errors[seen:]
    if found and request.node.get_closest_marker("internal_errors_expected") is None:
        pytest.fail("a daemon logged internal errors:\n" + "\n".join(found), pytrace=False)
