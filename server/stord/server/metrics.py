"""Prometheus metrics of one daemon, served over HTTP from a thread when `metrics_listen` is set.

Each daemon has its own CollectorRegistry, so daemons in one process (tests) never share a series. What an RPC
pays is kept small: the interceptor binds an `RpcMeter` per method once, and a call then costs one histogram
observation, one dict lookup and one counter increment, all on the event loop's thread.

Figures that already live elsewhere are read when Prometheus scrapes rather than kept twice: backend health
and fallbacks from the daemon's `BackendStatus` list, and job queue depth from the job store's own counts. The
port counts one queue of one namespace at a time and cannot list queues, so depth covers the queues this
daemon has seen enqueued to or dequeued from since it started (at most `MAX_TRACKED_QUEUES` pairs of namespace
and queue), summed across namespaces; a scrape runs one count per pair on the event loop, within
`DEPTH_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from wsgiref.simple_server import WSGIServer

import structlog
from google.protobuf import descriptor_pool
from grpc import StatusCode
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stord.server.ports import JobQueueStore, QueueStats
from stord.server.services.admin import BackendStatus

__all__ = ["LATENCY_BUCKETS", "MAX_TRACKED_QUEUES", "Metrics", "MetricsServer", "ReadCacheMeter", "RpcMeter"]

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
)
"""Seconds: from a cached read (about 0.1 ms) to a slow batch (1 s); longer calls land in +Inf."""

MAX_TRACKED_QUEUES = 1000
"""Pairs of namespace and queue whose depth a scrape counts; queues seen after that are not reported."""

DEPTH_TIMEOUT = 5.0
"""Seconds a scrape waits for the job store's counts before it reports no depth at all."""

UNKNOWN_METHOD = "(unknown)"
"""The method label of calls to a method no proto declares."""

_JOB_STATUSES = tuple(QueueStats.__dataclass_fields__)


class RpcMeter:
    """The pre-bound series of one RPC method: its latency histogram and a counter per status seen."""

    __slots__ = ("_by_status", "_counter", "_internal_errors", "_latency", "_method", "_service")

    def __init__(
        self, counter: Counter, latency: Histogram, full_method: str, internal_errors: Counter
    ) -> None:
        service, _, method = full_method.strip("/").partition("/")
        try:
            descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
        except KeyError:
            # A service the backend does not serve answers any method name: keep them to one series.
            method = UNKNOWN_METHOD
        self._counter = counter
        self._service = service
        self._method = method
        self._latency = latency.labels(service, method)
        self._by_status: dict[object, Counter] = {}
        self._internal_errors = internal_errors

    def internal_error(self) -> None:
        """Count a call that failed with a bug (INTERNAL)."""
        self._internal_errors.inc()

    def observe(self, status: object, seconds: float) -> None:
        """Count one finished call with its status and record how long it took."""
        self._latency.observe(seconds)
        child = self._by_status.get(status)
        if child is None:
            name = status.name if isinstance(status, StatusCode) else str(status)
            child = self._by_status[status] = self._counter.labels(self._service, self._method, name)
        child.inc()


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
        self._rpcs = Counter(
            "stord_rpcs",
            "Finished stord RPCs by service, method and status code.",
            ["service", "method", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "stord_rpc_duration_seconds",
            "Time from a stord RPC's arrival to its end (a stream's whole life), by service and method.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
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
        self._internal_errors = Counter(
            "stord_internal_errors",
            "Bugs: RPCs answered INTERNAL and background tasks that crashed. Alert on any increase.",
            registry=registry,
        )
        self._queues: set[tuple[str, str]] = set()
        self._queues_full_logged = False

    def rpc(self, full_method: str) -> RpcMeter:
        """Return the meter of one method, e.g. `/stord.v1.CacheService/Get`; bind it once per method."""
        return RpcMeter(self._rpcs, self._latency, full_method, self._internal_errors)

    def internal_error(self) -> None:
        """Count a bug outside any RPC (a background task that crashed)."""
        self._internal_errors.inc()

    def events_ingested(self, backend_kind: str) -> Callable[[int], None]:
        """Return the function that counts events stored into a backend of this kind."""
        return self._events.labels(backend_kind).inc

    def read_cache(self, store: str) -> ReadCacheMeter:
        """Return the counters of the read-through cache in front of one store (`agents`, `manifests`)."""
        return ReadCacheMeter(self._read_cache, store)

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
