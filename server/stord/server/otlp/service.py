"""OTLP logs ingest: `opentelemetry.proto.collector.logs.v1.LogsService/Export` on the daemon's own port.

Goes through the same interceptors as every stord RPC (API key, namespace from the key or `stord-namespace`
metadata, access log, metrics). Records are mapped to events (`mapping`), validated as InsertEvents
validates them, and stored through the event store in batches of at most 1000, each all or nothing. A record
that cannot be mapped or is invalid is left out and counted in the answer's `partial_success` (OTLP's way to
say so without failing the rest). A store failure (UNAVAILABLE) fails the call, and OTLP exporters retry
it: records with an id are then stored once, records without one again (a request of over 1000 records may
have had its first batches stored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from stord.server import calls
from stord.server.otlp.mapping import map_resource_logs
from stord.server.ports import EventInput, EventStore
from stord.server.services._validate import MAX_BATCH

__all__ = ["LOGS_SERVICE", "OtlpLogsServicer"]

LOGS_SERVICE: str = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]

_MAX_PROBLEMS_SHOWN = 3


class OtlpLogsServicer:
    """Export: log records in, events stored."""

    def __init__(self, store: EventStore, *, count_stored: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._count_stored = count_stored

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Context
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        now = int(self._store.clock() * 1000)
        events: list[EventInput] = []
        seen: set[str] = set()
        problems: list[str] = []
        for mapped in map_resource_logs(request.resource_logs, now):
            event = mapped.event
            if event is None:
                problems.append(mapped.problem)
                continue
            if event.id not in seen:  # a record exported twice in one request is stored once
                seen.add(event.id)
                events.append(event)
        namespace = calls.namespace()
        for start in range(0, len(events), MAX_BATCH):
            outcome = await self._store.insert_events(namespace, events[start : start + MAX_BATCH])
            if self._count_stored is not None:
                self._count_stored(len(outcome.stored))
        response = logs_service_pb2.ExportLogsServiceResponse()
        if problems:
            response.partial_success.rejected_log_records = len(problems)
            shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
            more = len(problems) - _MAX_PROBLEMS_SHOWN
            response.partial_success.error_message = shown + (f"; and {more} more" if more > 0 else "")
        return response
