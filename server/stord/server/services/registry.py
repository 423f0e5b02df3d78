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

from stord.server.metrics import Metrics
from stord.server.ports import Backend, Keyspace
from stord.server.rpc.page_tokens import PageTokens
from stord.server.services.agents import agent_store_servicer
from stord.server.services.documents import DocumentServicer
from stord.server.services.events import EventStoreServicer
from stord.server.services.jobs import JobQueueServicer
from stord.server.services.key_value import CacheServicer, DatabaseServicer
from stord.server.services.manifests import manifest_store_servicer
from stord.v1 import (
    agents_pb2,
    agents_pb2_grpc,
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
    servicer: Callable[[Backend, Backend, Metrics | None, PageTokens], object]
    """Build the servicer over the role's backend, the cache role's backend (for read-through caches), the
    daemon's metrics (None when off) and the role's page-token codec; raise Unimplemented when the role's
    backend does not serve it."""
    add_to_server: Callable[[Any, grpc.aio.Server], None]


def _service_name(descriptor: Any, name: str) -> str:
    full_name: str = descriptor.services_by_name[name].full_name
    return full_name


CONTRACTS: tuple[Contract, ...] = (
    Contract(
        _service_name(kv_pb2.DESCRIPTOR, "CacheService"),
        "cache",
        lambda backend, cache, metrics, tokens: CacheServicer(backend.key_value(Keyspace.CACHE), tokens),
        kv_pb2_grpc.add_CacheServiceServicer_to_server,
    ),
    Contract(
        _service_name(kv_pb2.DESCRIPTOR, "DatabaseService"),
        "database",
        lambda backend, cache, metrics, tokens: DatabaseServicer(
            backend.key_value(Keyspace.DATABASE), tokens
        ),
        kv_pb2_grpc.add_DatabaseServiceServicer_to_server,
    ),
    Contract(
        _service_name(documents_pb2.DESCRIPTOR, "DocumentService"),
        "database",
        lambda backend, cache, metrics, tokens: DocumentServicer(backend.documents(), tokens),
        documents_pb2_grpc.add_DocumentServiceServicer_to_server,
    ),
    Contract(
        _service_name(jobs_pb2.DESCRIPTOR, "JobQueueService"),
        "database",
        lambda backend, cache, metrics, tokens: JobQueueServicer(
            backend.jobs(), tokens=tokens, saw_queue=None if metrics is None else metrics.saw_queue
        ),
        jobs_pb2_grpc.add_JobQueueServiceServicer_to_server,
    ),
    Contract(
        _service_name(events_pb2.DESCRIPTOR, "EventStoreService"),
        "database",
        lambda backend, cache, metrics, tokens: EventStoreServicer(
            backend.events(),
            tokens=tokens,
            count_stored=None if metrics is None else metrics.events_ingested(backend.kind),
        ),
        events_pb2_grpc.add_EventStoreServiceServicer_to_server,
    ),
    Contract(
        _service_name(agents_pb2.DESCRIPTOR, "AgentStoreService"),
        "database",
        agent_store_servicer,
        agents_pb2_grpc.add_AgentStoreServiceServicer_to_server,
    ),
    Contract(
        _service_name(manifests_pb2.DESCRIPTOR, "ManifestStoreService"),
        "database",
        manifest_store_servicer,
        manifests_pb2_grpc.add_ManifestStoreServiceServicer_to_server,
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
