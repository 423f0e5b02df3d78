"""Prometheus metrics of one daemon, served over HTTP from a thread when `metrics_listen` is set.

Each daemon has its own CollectorRegistry, so daemons in one process (tests) never share a series. RPCs are
counted in the families go-grpc-prometheus and etcd export (`grpc_server_started_total`,
`grpc_server_handled_total`, `grpc_server_handling_seconds`, `grpc_server_msg_*_total`), so existing gRPC
dashboards work unchanged. What an RPC pays is kept small: the interceptor binds an `RpcMeter` per method
once, with its label children made then, and a call then costs two counter increments, one histogram
observation and one dict lookup, all on the event loop's thread.

Figures that already live elsewhere are read when Prometheus scrapes rather than kept twice: backend health
and fallbacks from the daemon's `BackendStatus` list, and job queue depth from the job store's own counts. The
port counts one queue of one namespace at a time and cannot list queues, so depth covers the queues this
daemon has seen enqueued to or dequeued from since it started (at most `MAX_TRACKED_QUEUES` pairs of namespace
and queue), summed across namespaces; a scrape runs one count per pair on the event loop, within
`DEPTH_TIMEOUT` seconds. Backend gauges (PostgreSQL pool use, SQLite writer queue) are read from the backends
at scrape time too; tail subscribers are the TailEvents calls in progress.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from wsgiref.simple_server import WSGIServer

import structlog
from google.protobuf import descriptor_pool
from grpc import StatusCode
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stord.server.admin.service import BackendStatus
from stord.server.backends.postgres import PostgresBackend
from stord.server.backends.sqlite import SqliteBackend
from stord.server.jobs.port import JobQueueStore, QueueStats

__all__ = [
    "GRPC_TYPES",
    "LATENCY_BUCKETS",
    "MAX_TRACKED_QUEUES",
    "Metrics",
    "MetricsServer",
    "ReadCacheMeter",
    "RpcMeter",
]

_log = structlog.get_logger("stord.metrics")

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
)
"""Seconds: from a cached read (about 0.1 ms) through the longest Dequeue long poll (60 s) to streams
(TailEvents, IngestEvents) open for up to an hour; streams open longer land in +Inf."""

GRPC_TYPES = ("unary", "server_stream", "client_stream", "bidi_stream")
"""The `grpc_type` label's values, as go-grpc-prometheus names them."""

TAIL_METHOD = "/stord.v1.EventStoreService/TailEvents"

MAX_TRACKED_QUEUES = 1000
"""Pairs of namespace and queue whose depth a scrape counts; queues seen after that are not reported."""

DEPTH_TIMEOUT = 5.0
"""Seconds a scrape waits for the job store's counts before it reports no depth at all."""

UNKNOWN_METHOD = "(unknown)"
"""The method label of calls to a method no proto declares."""

_JOB_STATUSES = tuple(QueueStats.__dataclass_fields__)


class RpcMeter:
    """One RPC method's series, label children bound once: started, handled by code, latency, messages."""

    __slots__ = (
        "_by_status",
        "_handled",
        "_internal_errors",
        "_labels",
        "_latency",
        "active",
        "received",
        "sent",
        "started",
    )

    def __init__(self, families: _RpcFamilies, full_method: str, grpc_type: str) -> None:
        service, _, method = full_method.strip("/").partition("/")
        try:
            descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
        except KeyError:
            # A service the backend does not serve answers any method name: keep them to one series.
            method = UNKNOWN_METHOD
        self._labels = (grpc_type, service, method)
        self._handled = families.handled
        self._latency = families.latency.labels(*self._labels)
        self._by_status: dict[object, Callable[[], None]] = {}
        self._internal_errors = families.internal_errors
        self.active = 0
        """Calls begun and not yet finished."""
        self.started: Callable[[], None] = families.started.labels(*self._labels).inc
        streaming = grpc_type != "unary"
        self.received: Callable[[], None] | None = (
            families.received.labels(*self._labels).inc if streaming else None
        )
        """Count one message of a request stream; None for methods whose messages are not counted."""
        self.sent: Callable[[], None] | None = families.sent.labels(*self._labels).inc if streaming else None
        """Count one message of a response stream; None for methods whose messages are not counted."""

    def start(self) -> None:
        """Count one call begun."""
        self.active += 1
        self.started()

    def internal_error(self) -> None:
        """Count a call that failed with a bug (INTERNAL)."""
        self._internal_errors.inc()

    def observe(self, status: object, seconds: float) -> None:
        """Count one finished call with its status and record how long it took."""
        self.active -= 1
        self._latency.observe(seconds)
        count = self._by_status.get(status)
        if count is None:
            name = status.name if isinstance(status, StatusCode) else str(status)
            count = self._by_status[status] = self._handled.labels(*self._labels, name).inc
        count()


class _TailMeter(RpcMeter):
    """TailEvents: also counts the subscribers dropped for falling behind (ended with RESOURCE_EXHAUSTED)."""

    __slots__ = ("dropped",)

    def __init__(self, families: _RpcFamilies, full_method: str, grpc_type: str, dropped: Counter) -> None:
        super().__init__(families, full_method, grpc_type)
        self.dropped = dropped

    def observe(self, status: object, seconds: float) -> None:
        super().observe(status, seconds)
        if status is StatusCode.RESOURCE_EXHAUSTED:
            self.dropped.inc()


class _RpcFamilies:
    """The conventional gRPC server families of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure, by gRPC status code.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's arrival to its end (a stream's whole life), until the server answered.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Messages received in request streams (streaming RPCs only).",
            labels,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Messages sent in response streams (streaming RPCs only).",
            labels,
            registry=registry,
        )
        self.internal_errors = Counter(
            "stord_internal_errors",
            "Bugs: RPCs answered INTERNAL and background tasks that crashed. Alert on any increase.",
            registry=registry,
        )


class ReadCacheMeter:
    """Counts one read-through cache's lookups by result."""

    __slots__ = ("hit", "miss", "unavailable")

    def __init__(self, counter: Counter, store: str) -> None:
        self.hit: Callable[[], None] = counter.labels(store, "hit").inc
        self.miss: Callable[[], None] = counter.labels(store, "miss").inc
        """The entry was absent or stale, or its scope had no generation yet: the database answered."""
        self.unavailable: Callable[[], None] = counter.labels(store, "unavailable").inc
        """The cache could not be reached: the database answered."""


class Metrics:
    """Every series of one daemon, in its own registry."""

    def __init__(self, version: str) -> None:
        # Process-wide: `_created` series would double the output for little use (the function is untyped).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # memory, CPU, open files and start time of the process
        Info("stord", "The daemon's version.", registry=registry).info({"version": version})
        self._rpc_families = _RpcFamilies(registry)
        self._tail_dropped = Counter(
            "stord_tail_dropped",
            "TailEvents subscribers dropped for falling more than the limit behind (RESOURCE_EXHAUSTED).",
            registry=registry,
        )
        self._tail: RpcMeter | None = None
        Gauge(
            "stord_tail_subscribers", "TailEvents streams open on this daemon.", registry=registry
        ).set_function(lambda: 0.0 if self._tail is None else float(self._tail.active))
        self._ingest_batches = Counter(
            "stord_ingest_batches",
            "Event batches committed (InsertEvents calls and IngestEvents stream messages), by backend kind.",
            ["backend"],
            registry=registry,
        )
        self._events = Counter(
            "stord_events_ingested",
            "Events stored by InsertEvents and IngestEvents (duplicates not counted), by backend kind.",
            ["backend"],
            registry=registry,
        )
        self._read_cache = Counter(
            "stord_read_cache_lookups",
            "Read-through cache lookups by store (agents, manifests) and result (hit, miss, unavailable).",
            ["store", "result"],
            registry=registry,
        )
        self._jobs_deleted = Counter(
            "stord_jobs_deleted",
            "Finished jobs deleted by retention, by status (completed, failed).",
            ["status"],
            registry=registry,
        )
        self._job_leases_lapsed = Counter(
            "stord_job_leases_lapsed",
            "Running jobs whose lease ran out, settled by the sweeper, by outcome (failed, retried).",
            ["outcome"],
            registry=registry,
        )
        self._queues: set[tuple[str, str]] = set()
        self._queues_full_logged = False

    def rpc(self, full_method: str, grpc_type: str) -> RpcMeter:
        """Return the meter of one method, e.g. `/stord.v1.CacheService/Get`; bind it once per method.

        `grpc_type` is one of GRPC_TYPES.
        """
        if full_method == TAIL_METHOD:
            self._tail = _TailMeter(self._rpc_families, full_method, grpc_type, self._tail_dropped)
            return self._tail
        return RpcMeter(self._rpc_families, full_method, grpc_type)

    def internal_error(self) -> None:
        """Count a bug outside any RPC (a background task that crashed)."""
        self._rpc_families.internal_errors.inc()

    def events_ingested(self, backend_kind: str) -> Callable[[int], None]:
        """Return the function that counts one committed batch and the events it stored, for this backend."""
        count_events = self._events.labels(backend_kind).inc
        count_batch = self._ingest_batches.labels(backend_kind).inc

        def count(stored: int) -> None:
            count_batch()
            count_events(stored)

        return count

    def read_cache(self, store: str) -> ReadCacheMeter:
        """Return the counters of the read-through cache in front of one store (`agents`, `manifests`)."""
        return ReadCacheMeter(self._read_cache, store)

    def count_job_purge(self, completed: int, failed: int) -> None:
        """Count finished jobs deleted by retention."""
        self._jobs_deleted.labels("completed").inc(completed)
        self._jobs_deleted.labels("failed").inc(failed)

    def count_lapsed_leases(self, failed: int, retried: int) -> None:
        """Count lapsed leases the sweeper settled."""
        self._job_leases_lapsed.labels("failed").inc(failed)
        self._job_leases_lapsed.labels("retried").inc(retried)

    def saw_queue(self, namespace: str, queue: str) -> None:
        """Note a queue in use, so that scrapes report its depth; call it on the event loop's thread."""
        if (namespace, queue) in self._queues:
            return
        if len(self._queues) >= MAX_TRACKED_QUEUES:
            if not self._queues_full_logged:
                _log.warning("metrics_queue_limit", tracked=MAX_TRACKED_QUEUES, ignored_queue=queue)
                self._queues_full_logged = True
            return
        self._queues.add((namespace, queue))

    def watch_backends(self, statuses: Callable[[], Sequence[BackendStatus]]) -> None:
        """Report backend health and fallbacks from the daemon's live statuses at every scrape."""
        self.registry.register(_BackendCollector(statuses))

    def watch_backend_load(self, backends: Mapping[str, object]) -> None:
        """Report at every scrape the PostgreSQL pools' use and SQLite writer queues of the roles' backends.

        `backends` maps a role (`database`, `cache`) to its backend; one shared with another role counts once.
        """
        self.registry.register(_BackendLoadCollector(backends))

    def watch_jobs(self, store: JobQueueStore, loop: asyncio.AbstractEventLoop) -> None:
        """Report the depth of the queues seen so far, counted by `store` on `loop` at every scrape."""
        self.registry.register(_QueueDepthCollector(self, store, loop))

    async def queue_depths(self, store: JobQueueStore) -> dict[tuple[str, str], int]:
        """Count the jobs of every queue seen, by queue and status, summed across namespaces."""
        depths: dict[tuple[str, str], int] = {}
        for namespace, queue in sorted(self._queues):  # a copy, taken on the loop that adds to the set
            stats = await store.stats(namespace, queue)
            for status in _JOB_STATUSES:
                key = (queue, status)
                depths[key] = depths.get(key, 0) + getattr(stats, status)
        return depths


class _BackendCollector(Collector):
    def __init__(self, statuses: Callable[[], Sequence[BackendStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterable[Metric]:
        healthy = GaugeMetricFamily(
            "stord_backend_healthy",
            "1 when the backend filling the role answered its last health check, else 0.",
            labels=["role", "kind"],
        )
        fallback = GaugeMetricFamily(
            "stord_backend_fallback",
            "1 when the role is served by the memory fallback instead of the configured backend, else 0.",
            labels=["role"],
        )
        for status in self._statuses():
            healthy.add_metric([status.role, status.kind], 1.0 if status.healthy else 0.0)
            fallback.add_metric([status.role], 0.0 if status.configured_url is None else 1.0)
        return [healthy, fallback]


class _BackendLoadCollector(Collector):
    def __init__(self, backends: Mapping[str, object]) -> None:
        self._backends = backends

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily(
            "stord_postgres_pool_connections", "PostgreSQL connections open in the pool.", labels=["role"]
        )
        in_use = GaugeMetricFamily(
            "stord_postgres_pool_in_use", "PostgreSQL connections lent out to a call.", labels=["role"]
        )
        waiting = GaugeMetricFamily(
            "stord_postgres_pool_waiting", "Calls waiting for a PostgreSQL connection.", labels=["role"]
        )
        queued = GaugeMetricFamily(
            "stord_sqlite_writer_queue_depth",
            "Writes waiting for the SQLite writer thread (committed together in groups).",
            labels=["role"],
        )
        seen: set[int] = set()
        for role, backend in self._backends.items():
            if id(backend) in seen:
                continue
            seen.add(id(backend))
            if isinstance(backend, PostgresBackend):
                usage = backend.pool.usage()
                if usage is not None:
                    size.add_metric([role], float(usage[0]))
                    in_use.add_metric([role], float(usage[1]))
                    waiting.add_metric([role], float(usage[2]))
            elif isinstance(backend, SqliteBackend):
                queued.add_metric([role], float(backend.engine.queued_writes))
        return [size, in_use, waiting, queued]


class _QueueDepthCollector(Collector):
    def __init__(self, metrics: Metrics, store: JobQueueStore, loop: asyncio.AbstractEventLoop) -> None:
        self._metrics = metrics
        self._store = store
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "stord_job_queue_depth",
            "Jobs by queue and status, summed across namespaces, for the queues this daemon has seen.",
            labels=["queue", "status"],
        )
        future = asyncio.run_coroutine_threadsafe(self._metrics.queue_depths(self._store), self._loop)
        try:
            depths = future.result(DEPTH_TIMEOUT)
        except Exception as error:  # a backend error or a timeout costs this family, not the scrape
            future.cancel()
            _log.warning("metrics_queue_depth_failed", error=str(error) or type(error).__name__)
            return []
        for (queue, status), count in sorted(depths.items()):
            depth.add_metric([queue, status], float(count))
        return [depth]


class MetricsServer:
    """The HTTP endpoint of one registry, answering scrapes from its own thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        """Bind and start serving; raise OSError when the address cannot be bound."""
        server, thread = start_http_server(port, addr=host, registry=registry)
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.port: int = server.server_port
        """The bound port (useful with port 0)."""
        self._closed = False

    def close(self) -> None:
        """Stop answering and release the port; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
