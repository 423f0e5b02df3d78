"""OTLP ingest on the daemon's own port: `opentelemetry.proto.collector.logs.v1.LogsService/Export` and
`opentelemetry.proto.collector.trace.v1.TraceService/Export`.

Both go through the same interceptors as every stord RPC (API key, namespace from the key or `stord-namespace`
metadata, access log, metrics). Log records and spans are mapped to events (`mapping`), validated as
InsertEvents validates events, and stored through the event store in batches of at most 1000, each all or
nothing. One that cannot become an event is left out and counted in the answer's `partial_success` (OTLP's
way to say so without failing the rest). A store failure (UNAVAILABLE) fails the call, and OTLP exporters
retry it: what has an id (every span; records carrying one) is then stored once, records without one again
(a request of over 1000 may have had its first batches stored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from stord.server.events.port import EventInput, EventStore
from stord.server.otlp.mapping import MappedRecord, map_resource_logs, map_resource_spans
from stord.server.rpc import calls
from stord.server.rpc.validate import MAX_BATCH

__all__ = ["LOGS_SERVICE", "TRACE_SERVICE", "OtlpLogsServicer", "OtlpTraceServicer"]

LOGS_SERVICE: str = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
TRACE_SERVICE: str = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]

_MAX_PROBLEMS_SHOWN = 3


class _Ingest:
    """Stores what an export request maps to; reports what it left out."""

    def __init__(self, store: EventStore, count_stored: Callable[[int], None] | None) -> None:
        self._store = store
        self._count_stored = count_stored
        """Told how many events each batch stored (the metrics' ingest counter)."""

    def _now(self) -> int:
        return int(self._store.clock() * 1000)

    async def _ingest(self, mapped: Iterable[MappedRecord]) -> tuple[int, str]:
        """Store the mapped events; return how many were left out and why (the first few reasons)."""
        events: list[EventInput] = []
        seen: set[str] = set()
        problems: list[str] = []
        for each in mapped:
            event = each.event
            if event is None:
                problems.append(each.problem)
            elif event.id not in seen:  # sent twice in one request: stored once
                seen.add(event.id)
                events.append(event)
        namespace = calls.namespace()
        for start in range(0, len(events), MAX_BATCH):
            outcome = await self._store.insert_events(namespace, events[start : start + MAX_BATCH])
            if self._count_stored is not None:
                self._count_stored(len(outcome.stored))
        more = len(problems) - _MAX_PROBLEMS_SHOWN
        message = "; ".join(problems[:_MAX_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        return len(problems), message


class OtlpLogsServicer(_Ingest):
    """LogsService/Export: log records in, events stored."""

    def __init__(self, store: EventStore, *, count_stored: Callable[[int], None] | None = None) -> None:
        super().__init__(store, count_stored)

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Context
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        rejected, message = await self._ingest(map_resource_logs(request.resource_logs, self._now()))
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
        return response


class OtlpTraceServicer(_Ingest):
    """TraceService/Export: spans in, one event each stored."""

    def __init__(self, store: EventStore, *, count_stored: Callable[[int], None] | None = None) -> None:
        super().__init__(store, count_stored)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Context
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        rejected, message = await self._ingest(map_resource_spans(request.resource_spans, self._now()))
        response = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message
        return response
