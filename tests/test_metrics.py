"""The Prometheus endpoint: scraped after real traffic, parsed, and checked series by series."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from stord.client import (
    Client,
    EnqueueJob,
    EventIngestor,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StordError,
    Unauthenticated,
    make_event,
)
from stord.server.app import StartupError, stord_version
from stord.server.backends import create_backend
from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite._key_value import SqliteKeyValueStore
from stord.server.config import ConfigError, ConnectOptions, PostgresOptions, Settings, load_settings
from stord.server.metrics import UNKNOWN_METHOD, Metrics
from stord.server.rpc.auth import Role
from tests.harness._system import free_port
from tests.harness.auth import Tenant, write_keys
from tests.harness.clock import ManualClock
from tests.harness.daemon import DaemonThread
from tests.harness.postgres import PostgresServer

Labels = tuple[tuple[str, str], ...]


def scrape(daemon: DaemonThread) -> dict[tuple[str, Labels], float]:
    """Return every sample of the endpoint by name and sorted labels."""
    url = f"http://127.0.0.1:{daemon.daemon.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """Return one sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rpcs(
    samples: dict[tuple[str, Labels], float],
    service: str,
    method: str,
    status: str = "OK",
    grpc_type: str = "unary",
) -> float:
    """Return grpc_server_handled_total of one method and code."""
    return value(
        samples,
        "grpc_server_handled_total",
        grpc_type=grpc_type,
        grpc_service=f"stord.v1.{service}",
        grpc_method=method,
        grpc_code=status,
    )


def rpc_labels(service: str, method: str, grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": f"stord.v1.{service}", "grpc_method": method}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonThread]:
    # A cache on another engine that is not memory: GetAgent then reads through it, so hits and misses count.
    settings = Settings(
        listen="127.0.0.1:0",
        database=f"sqlite:///{tmp_path / 'stord.db'}",
        cache=f"sqlite:///{tmp_path / 'cache.db'}",
        metrics_listen="127.0.0.1:0",
        log_level="warning",
    )
    served = DaemonThread(settings).start()
    yield served
    served.stop()


def test_counters_move_with_traffic(daemon: DaemonThread) -> None:
    before = scrape(daemon)
    assert value(before, "stord_info", version=stord_version()) == 1
    assert rpcs(before, "DatabaseService", "Set") == 0

    with Client(daemon.target, namespace="metrics") as client:
        for index in range(3):
            client.db.set(f"key-{index}", b"value")
        assert client.db.get("key-0") == b"value"
        with pytest.raises(InvalidArgument):
            client.db.set("", b"no key")
        with pytest.raises(NotFound):
            client.events.get("no-such-event")
        client.events.insert([make_event("s1", "a1", "custom") for _ in range(4)])
        client.jobs.enqueue("emails", {"to": "a@example.com"})
        client.jobs.enqueue("emails", {"to": "b@example.com"})
        client.jobs.enqueue("reports")
        [job] = client.jobs.dequeue("reports")
        client.agents.set("agent://one", name="one")
        for _ in range(3):
            assert client.agents.get("agent://one") is not None
    with Client(daemon.target, namespace="other") as client:
        client.jobs.enqueue("emails")
    with EventIngestor(daemon.target, namespace="metrics", batch_size=10) as ingestor:
        ingestor.add_many(make_event("s2", "a1", "tool_call") for _ in range(25))
        ingestor.flush()

    after = scrape(daemon)
    assert rpcs(after, "DatabaseService", "Set") == 3
    assert rpcs(after, "DatabaseService", "Get") == 1
    assert rpcs(after, "DatabaseService", "Set", "INVALID_ARGUMENT") == 1
    assert rpcs(after, "EventStoreService", "GetEvent", "NOT_FOUND") == 1
    assert rpcs(after, "EventStoreService", "IngestEvents", grpc_type="bidi_stream") == 1
    assert rpcs(after, "JobQueueService", "Enqueue") == 4
    assert rpcs(after, "AgentStoreService", "GetAgent") == 3

    latency = rpc_labels("DatabaseService", "Set")
    assert value(after, "grpc_server_started_total", **latency) == 4  # the refused one too
    assert value(after, "grpc_server_handling_seconds_count", **latency) == 4
    assert value(after, "grpc_server_handling_seconds_bucket", le="+Inf", **latency) == 4
    assert 0 < value(after, "grpc_server_handling_seconds_sum", **latency) < 10
    assert value(after, "grpc_server_handling_seconds_bucket", le="1.0", **latency) >= 1
    assert value(after, "grpc_server_handling_seconds_bucket", le="3600.0", **latency) == 4
    assert value(after, "grpc_server_msg_sent_total", **latency) == 0  # unary messages are not counted

    # 25 events in batches of 10: three request messages, each answered once.
    ingest = rpc_labels("EventStoreService", "IngestEvents", "bidi_stream")
    assert value(after, "grpc_server_started_total", **ingest) == 1
    assert value(after, "grpc_server_msg_received_total", **ingest) == 3
    assert value(after, "grpc_server_msg_sent_total", **ingest) == 3

    assert value(after, "stord_events_ingested_total", backend="sqlite") == 4 + 25
    assert value(after, "stord_ingest_batches_total", backend="sqlite") == 1 + 3
    assert value(after, "stord_sqlite_writer_queue_depth", role="database") == 0
    assert value(after, "stord_sqlite_writer_queue_depth", role="cache") == 0

    assert value(after, "stord_job_queue_depth", queue="emails", status="pending") == 3  # two namespaces
    assert value(after, "stord_job_queue_depth", queue="reports", status="pending") == 0
    assert value(after, "stord_job_queue_depth", queue="reports", status="running") == 1
    assert value(after, "stord_job_queue_depth", queue="reports", status="completed") == 0

    # SetAgent starts the agent's generation; the first read fills the entry, the next two are served by it.
    cache = {"store": "agents"}
    assert value(after, "stord_read_cache_lookups_total", result="miss", **cache) == 1
    assert value(after, "stord_read_cache_lookups_total", result="hit", **cache) == 2
    assert value(after, "stord_read_cache_lookups_total", result="unavailable", **cache) == 0

    assert value(after, "stord_backend_healthy", role="database", kind="sqlite") == 1
    assert value(after, "stord_backend_healthy", role="cache", kind="sqlite") == 1
    assert value(after, "stord_backend_fallback", role="database") == 0
    assert value(after, "stord_backend_fallback", role="cache") == 0
    assert value(after, "process_resident_memory_bytes") > 0

    with Client(daemon.target, namespace="metrics") as client:
        client.jobs.acknowledge([job])
    assert value(scrape(daemon), "stord_job_queue_depth", queue="reports", status="completed") == 1


def test_fallback_and_daemons_keep_their_own_registries(tmp_path: Path) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}"
    settings = Settings(
        listen="127.0.0.1:0",
        database="memory://",
        cache=unreachable,
        metrics_listen="127.0.0.1:0",
        connect=ConnectOptions(attempts=1),
        log_level="error",
    )
    first = DaemonThread(settings).start()
    second = DaemonThread(settings.model_copy(update={"cache": "memory://"})).start()
    try:
        with Client(first.target) as client:
            client.cache.set("k", b"v")
        samples = scrape(first)
        assert value(samples, "stord_backend_fallback", role="cache") == 1
        assert value(samples, "stord_backend_healthy", role="cache", kind="memory") == 1
        assert rpcs(samples, "CacheService", "Set") == 1
        # A memory cache reads nothing through: no read-cache series at all.
        assert not any(name == "stord_read_cache_lookups_total" for name, _ in samples)

        other = scrape(second)
        assert value(other, "stord_backend_fallback", role="cache") == 0
        assert rpcs(other, "CacheService", "Set") == 0
    finally:
        second.stop()
        first.stop()


def test_refused_calls_are_counted_with_their_status(tmp_path: Path) -> None:
    reader = Tenant("reader", "shop", "svc-report", Role.READ_ONLY)
    settings = Settings(
        listen="127.0.0.1:0",
        database="memory://",
        api_keys_file=write_keys(tmp_path / "keys.yaml", [reader]),
        metrics_listen="127.0.0.1:0",
        log_level="error",
    )
    daemon = DaemonThread(settings).start()
    try:
        with Client(daemon.target) as anonymous, pytest.raises(Unauthenticated):
            anonymous.db.get("k")
        with Client(daemon.target, api_key=reader.secret) as client:
            assert client.db.get("k") is None
            with pytest.raises(PermissionDenied):
                client.db.set("k", b"v")
        samples = scrape(daemon)
        assert rpcs(samples, "DatabaseService", "Get", "UNAUTHENTICATED") == 1
        assert rpcs(samples, "DatabaseService", "Get") == 1
        assert rpcs(samples, "DatabaseService", "Set", "PERMISSION_DENIED") == 1
        get = rpc_labels("DatabaseService", "Get")
        assert value(samples, "grpc_server_handling_seconds_count", **get) == 2
        assert value(samples, "grpc_server_started_total", **get) == 2
    finally:
        daemon.stop()


def test_off_unless_asked_and_a_taken_port_fails_startup(tmp_path: Path) -> None:
    plain = DaemonThread(Settings(listen="127.0.0.1:0", database="memory://", log_level="error")).start()
    try:
        assert plain.daemon.metrics is None
        assert plain.daemon.metrics_port == 0
        with Client(plain.target) as client:
            client.db.set("k", b"v")  # the interceptor works without metrics
    finally:
        plain.stop()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            listen="127.0.0.1:0", database="memory://", metrics_listen=f"127.0.0.1:{port}", log_level="error"
        )
        thread = DaemonThread(settings)
        try:
            with pytest.raises(StartupError, match="cannot serve metrics"):
                thread.start()
        finally:
            thread.stop(0)


def test_metrics_listen_setting() -> None:
    settings = load_settings(environ={"STORD_METRICS_LISTEN": "[::1]:9464"})
    assert settings.metrics_listen == "[::1]:9464"
    assert settings.metrics_address == ("::1", 9464)
    assert load_settings(environ={}).metrics_address is None
    flagged = load_settings(
        environ={"STORD_METRICS_LISTEN": "0.0.0.0:1"}, flags={"metrics_listen": "127.0.0.1:2"}
    )
    assert flagged.metrics_address == ("127.0.0.1", 2)
    with pytest.raises(ConfigError, match=r"metrics_listen: .*HOST:PORT"):
        load_settings(environ={"STORD_METRICS_LISTEN": "9464"})


def test_methods_no_proto_declares_share_one_series() -> None:
    # An unserved service (a Redis database's DocumentService) answers any method name clients make up.
    metrics = Metrics("test")
    for name in ("Nope", "Nada", "CreateDocument"):
        meter = metrics.rpc(f"/stord.v1.DocumentService/{name}", "unary")
        meter.start()
        meter.observe(StatusCode.UNIMPLEMENTED, 0.0001)
    counted = {
        sample.labels["grpc_method"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "grpc_server_handled"
        for sample in family.samples
    }
    assert counted == {UNKNOWN_METHOD: 2, "CreateDocument": 1}


CONVENTIONAL_FAMILIES = {
    # name as exposed: label names (histograms: of their _count series)
    "grpc_server_started_total": {"grpc_type", "grpc_service", "grpc_method"},
    "grpc_server_handled_total": {"grpc_type", "grpc_service", "grpc_method", "grpc_code"},
    "grpc_server_handling_seconds_count": {"grpc_type", "grpc_service", "grpc_method"},
    "grpc_server_msg_received_total": {"grpc_type", "grpc_service", "grpc_method"},
    "grpc_server_msg_sent_total": {"grpc_type", "grpc_service", "grpc_method"},
    "stord_events_ingested_total": {"backend"},
    "stord_ingest_batches_total": {"backend"},
    "stord_tail_subscribers": set(),
    "stord_tail_dropped_total": set(),
    "stord_sqlite_writer_queue_depth": {"role"},
    "stord_job_queue_depth": {"queue", "status"},
    "stord_backend_healthy": {"role", "kind"},
    "stord_backend_fallback": {"role"},
    "stord_info": {"version"},
}
"""What dashboards query: renaming a family or a label breaks them, so this test must change with it."""


def test_names_and_labels_dashboards_rely_on(daemon: DaemonThread) -> None:
    with Client(daemon.target, namespace="names") as client:
        client.db.set("k", b"v")
        client.jobs.enqueue("q")
        client.events.insert([make_event("s", "a", "custom")])
    with EventIngestor(daemon.target, namespace="names") as ingestor:
        ingestor.add(make_event("s2", "a", "custom"))
        ingestor.flush()
    labels_by_name: dict[str, set[str]] = {}
    for name, labels in scrape(daemon):
        labels_by_name.setdefault(name, set()).update(label for label, _ in labels)
    for name, expected in CONVENTIONAL_FAMILIES.items():
        assert name in labels_by_name, name
        assert labels_by_name[name] == expected, name
    buckets = {
        float(dict(labels)["le"])
        for name, labels in scrape(daemon)
        if name == "grpc_server_handling_seconds_bucket"
    }
    assert {0.0001, 1.0, 60.0, 3600.0} <= buckets  # from a cached read past the longest long poll
    assert not any(name.startswith("stord_rpc") for name in labels_by_name)  # the old names are gone


def test_tail_subscribers_and_drops(daemon: DaemonThread) -> None:
    with Client(daemon.target, namespace="tails") as client:
        assert value(scrape(daemon), "stord_tail_subscribers") == 0
        with client.events.tail() as tail:
            client.events.insert([make_event("s", "a", "custom")])
            assert len(next(iter(tail))) == 1
            assert value(scrape(daemon), "stord_tail_subscribers") == 1
            tail_labels = rpc_labels("EventStoreService", "TailEvents", "server_stream")
            sent = value(scrape(daemon), "grpc_server_msg_sent_total", **tail_labels)
            assert sent >= 1
    deadline = time.monotonic() + 10
    while value(scrape(daemon), "stord_tail_subscribers") != 0:  # the server sees the cancel a little later
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert value(scrape(daemon), "stord_tail_dropped_total") == 0
    # A drop is a TailEvents call ending with RESOURCE_EXHAUSTED; a subscriber 10,000 events behind is
    # exercised by the events suite, so here the meter is driven directly.
    assert daemon.daemon.metrics is not None
    meter = daemon.daemon.metrics.rpc("/stord.v1.EventStoreService/TailEvents", "server_stream")
    meter.start()
    meter.observe(StatusCode.RESOURCE_EXHAUSTED, 1.0)
    assert value(scrape(daemon), "stord_tail_dropped_total") == 1


def test_postgres_pool_gauges(postgres_server: PostgresServer) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database=postgres_server.create_database("stord_metrics_pool"),
        metrics_listen="127.0.0.1:0",
        log_level="warning",
    )
    daemon = DaemonThread(settings).start()
    try:
        with Client(daemon.target) as client:
            client.db.set("k", b"v")
        samples = scrape(daemon)
        connections = value(samples, "stord_postgres_pool_connections", role="database")
        assert connections >= 1
        assert 0 <= value(samples, "stord_postgres_pool_in_use", role="database") <= connections
        assert value(samples, "stord_postgres_pool_waiting", role="database") == 0
        assert not any(name == "stord_sqlite_writer_queue_depth" and labels for name, labels in samples)
    finally:
        daemon.stop()

    # A connection held by a call shows as in use; a call waiting for one as waiting.
    one = Settings(postgres=PostgresOptions(pool_min_size=1, pool_max_size=1))
    backend = create_backend(settings.database, one)
    metrics = Metrics("test")
    metrics.watch_backend_load({"database": backend, "cache": backend})

    def gauges() -> dict[str, float]:
        return {
            family.name: sample.value
            for family in metrics.registry.collect()
            if family.name.startswith("stord_postgres_pool")
            for sample in family.samples
        }

    async def hold() -> tuple[dict[str, float], dict[str, float]]:
        await backend.open()
        try:
            assert isinstance(backend, PostgresBackend)
            async with backend.pool.connection():
                held = gauges()
                waiter = asyncio.create_task(backend.check())
                for _ in range(1000):  # until the waiter asks the pool, 10 s at most
                    waiting = gauges()
                    if waiting["stord_postgres_pool_waiting"]:
                        break
                    await asyncio.sleep(0.01)
            await waiter
            return held, waiting
        finally:
            await backend.close()

    held, waiting = asyncio.run(hold())
    assert held == {
        "stord_postgres_pool_connections": 1,
        "stord_postgres_pool_in_use": 1,
        "stord_postgres_pool_waiting": 0,
    }
    assert waiting["stord_postgres_pool_waiting"] == 1


def test_the_job_sweepers_count_what_they_settled_and_deleted(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = Settings(
        listen="127.0.0.1:0",
        database=f"sqlite:///{tmp_path / 'stord.db'}",
        metrics_listen="127.0.0.1:0",
        log_level="warning",
        expiry_sweep_interval=24 * 3600,  # sweeps run when the test asks
    )
    daemon = DaemonThread(settings, clock=clock).start()
    try:
        with Client(daemon.target) as client:
            client.jobs.enqueue_many([EnqueueJob("q", {"n": n}, max_attempts=1 + n) for n in range(3)])
            *_, third = client.jobs.dequeue("q", max_jobs=3, lease=10)  # max_attempts 1, 2 and 3
            client.jobs.acknowledge([third])
            clock.advance(11)
            daemon.run(daemon.daemon.settle_lapsed_leases())  # the first on its last attempt, the second not
            clock.advance(8 * 86_400)
            daemon.run(daemon.daemon.purge_finished_jobs())  # third, completed 8 days ago
        samples = scrape(daemon)
        assert value(samples, "stord_job_leases_lapsed_total", outcome="failed") == 1
        assert value(samples, "stord_job_leases_lapsed_total", outcome="retried") == 1
        assert value(samples, "stord_jobs_deleted_total", status="completed") == 1
        assert value(samples, "stord_jobs_deleted_total", status="failed") == 0  # within its 30 days
    finally:
        daemon.stop()


@pytest.mark.internal_errors_expected
def test_internal_errors_are_counted(daemon: DaemonThread, monkeypatch: pytest.MonkeyPatch) -> None:
    assert value(scrape(daemon), "stord_internal_errors_total") == 0

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(SqliteKeyValueStore, "get", broken)
    with Client(daemon.target, namespace="metrics") as client:
        for _ in range(2):
            with pytest.raises(StordError, match="internal error; request id"):
                client.db.get("key")
    after = scrape(daemon)
    assert value(after, "stord_internal_errors_total") == 2
    assert rpcs(after, "DatabaseService", "Get", "INTERNAL") == 2
