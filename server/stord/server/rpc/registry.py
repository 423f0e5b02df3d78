"""Every contract the daemon serves: its gRPC service, the role whose backend serves it, and how to wire it.

A new contract adds one `Contract` to `CONTRACTS`. When the backend of its role does not serve it (the
backend's accessor raises Unimplemented), every RPC of the service answers UNIMPLEMENTED with the reason and
health reports the service NOT_SERVING.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from stord.server.agents.service import agent_store_servicer
from stord.server.alerts.port import alert_state_store
from stord.server.alerts.service import AlertServicer
from stord.server.config import Settings
from stord.server.documents.service import DocumentServicer
from stord.server.events.service import EventStoreServicer
from stord.server.jobs.service import JobQueueServicer
from stord.server.kv.port import Keyspace
from stord.server.kv.service import CacheServicer, DatabaseServicer
from stord.server.manifests.service import manifest_store_servicer
from stord.server.metrics import Metrics
from stord.server.otlp.service import LOGS_SERVICE, TRACE_SERVICE, OtlpLogsServicer, OtlpTraceServicer
from stord.server.ports import Backend
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    alerts_pb2,
    alerts_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    kv_pb2,
    kv_pb2_grpc,
    manifests_pb2,
    manifests_pb2_grpc,
)

__all__ = ["CONTRACTS", "Contract", "UnservedService"]

Role = Literal["database", "cache"]


@dataclass(frozen=True, slots=True)
class Contract:
    """One proto service and how to serve it from a backend."""

    service: str
    """The full service name, e.g. `stord.v1.CacheService`."""
    role: Role
    servicer: Callable[[Backend, Backend, Metrics | None, Settings, PageTokens], object]
    """Build the servicer over the role's backend, the cache role's backend (for read-through caches), the
    daemon's metrics (None when off), its settings and the role's page-token codec; raise Unimplemented when
    the role's backend does not serve it."""
    add_to_server: Callable[[Any, grpc.aio.Server], None]


def _service_name(descriptor: Any, name: str) -> str:
    full_name: str = descriptor.services_by_name[name].full_name
    return full_name


CONTRACTS: tuple[Contract, ...] = (
    Contract(
        _service_name(kv_pb2.DESCRIPTOR, "CacheService"),
        "cache",
        lambda backend, cache, metrics, settings, tokens: CacheServicer(
            backend.key_value(Keyspace.CACHE), tokens
        ),
        kv_pb2_grpc.add_CacheServiceServicer_to_server,
    ),
    Contract(
        _service_name(kv_pb2.DESCRIPTOR, "DatabaseService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: DatabaseServicer(
            backend.key_value(Keyspace.DATABASE), tokens
        ),
        kv_pb2_grpc.add_DatabaseServiceServicer_to_server,
    ),
    Contract(
        _service_name(documents_pb2.DESCRIPTOR, "DocumentService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: DocumentServicer(
            backend.documents(), tokens, job_clock=backend.jobs().clock
        ),
        documents_pb2_grpc.add_DocumentServiceServicer_to_server,
    ),
    Contract(
        _service_name(jobs_pb2.DESCRIPTOR, "JobQueueService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: JobQueueServicer(
            backend.jobs(),
            tokens,
            saw_queue=None if metrics is None else metrics.saw_queue,
            recheck_interval=settings.long_poll_recheck_interval,
        ),
        jobs_pb2_grpc.add_JobQueueServiceServicer_to_server,
    ),
    Contract(
        _service_name(events_pb2.DESCRIPTOR, "EventStoreService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: EventStoreServicer(
            backend.events(),
            tokens,
            count_stored=None if metrics is None else metrics.events_ingested(backend.kind),
        ),
        events_pb2_grpc.add_EventStoreServiceServicer_to_server,
    ),
    Contract(
        _service_name(agents_pb2.DESCRIPTOR, "AgentStoreService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: agent_store_servicer(
            backend, cache, metrics, tokens
        ),
        agents_pb2_grpc.add_AgentStoreServiceServicer_to_server,
    ),
    Contract(
        _service_name(manifests_pb2.DESCRIPTOR, "ManifestStoreService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: manifest_store_servicer(
            backend, cache, metrics, tokens
        ),
        manifests_pb2_grpc.add_ManifestStoreServiceServicer_to_server,
    ),
    Contract(
        _service_name(alerts_pb2.DESCRIPTOR, "AlertService"),
        "database",
        lambda backend, cache, metrics, settings, tokens: AlertServicer(alert_state_store(backend)),
        alerts_pb2_grpc.add_AlertServiceServicer_to_server,
    ),
    Contract(
        LOGS_SERVICE,  # OTLP ingest, on the same port and behind the same interceptors
        "database",
        lambda backend, cache, metrics, settings, tokens: OtlpLogsServicer(
            backend.events(), count_stored=None if metrics is None else metrics.events_ingested(backend.kind)
        ),
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server,
    ),
    Contract(
        TRACE_SERVICE,  # OTLP ingest of spans, one event each
        "database",
        lambda backend, cache, metrics, settings, tokens: OtlpTraceServicer(
            backend.events(), count_stored=None if metrics is None else metrics.events_ingested(backend.kind)
        ),
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
    ),
)


class UnservedService(grpc.GenericRpcHandler):
    """Answer every method of one service with UNIMPLEMENTED and the reason, not 'Method not found'."""

    def __init__(self, service: str, reason: str) -> None:
        self._prefix = f"/{service}/"
        self._reason = reason

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if not handler_call_details.method.startswith(self._prefix):
            return None

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, self._reason)

        # Requests are not decoded: any method of the service is refused the same way.
        return grpc.unary_unary_rpc_method_handler(refuse)
