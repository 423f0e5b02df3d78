"""OTLP ingest (issue 16): the real OpenTelemetry SDK's gRPC exporters send logs and spans to the daemon, and
they are read back as events through QueryEvents, on every backend serving events."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_ERROR, LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from stord.client import Client
from stord.server.config import Settings
from stord.server.rpc.auth import Role
from stord.v1 import events_pb2 as pb
from tests.conftest import SharedDaemon
from tests.harness.auth import Tenant, write_keys
from tests.harness.daemon import DaemonThread


def _provider(target: str, headers: tuple[tuple[str, str], ...]) -> LoggerProvider:
    """An SDK logger provider exporting over OTLP/gRPC to the daemon, as an application would set it up."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout-agent"}))
    exporter = OTLPLogExporter(endpoint=target, insecure=True, headers=headers, timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


@pytest.fixture
def namespace() -> str:
    return f"otlp-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(database_served: SharedDaemon, namespace: str) -> Iterator[Client]:
    with database_served.client(namespace) as client:
        yield client


def test_sdk_logs_arrive_as_events(database_served: SharedDaemon, namespace: str, client: Client) -> None:
    provider = _provider(database_served.target, (("stord-namespace", namespace),))
    logger = provider.get_logger("checkout")
    logger.emit(
        body={"toolName": "search", "query": "shoes"},
        attributes={"session.id": "sess-1", "stord.event_type": "tool_call", "log.record.uid": "rec-1"},
        severity_number=SeverityNumber.INFO,
    )
    logger.emit(
        body="tool finished",
        attributes={"session.id": "sess-1", "stord.event_type": "tool_response", "durationMs": 120},
        severity_number=SeverityNumber.INFO,
    )
    logger.emit(
        body="payment failed",
        attributes={"session.id": "sess-1", "order": 42},
        severity_number=SeverityNumber.ERROR,
    )
    assert provider.force_flush(10_000)

    found = client.events.query(session_id="sess-1")
    assert found.total == 3
    by_type = {event.event_type: event for event in found.events}
    call = by_type[pb.EVENT_TYPE_TOOL_CALL]
    assert (call.id, call.agent_id, call.severity) == ("rec-1", "checkout-agent", pb.SEVERITY_INFO)
    assert json_format.MessageToDict(call.payload) == {"toolName": "search", "query": "shoes"}
    metadata = json_format.MessageToDict(call.metadata)
    assert metadata["resource"]["service.name"] == "checkout-agent"
    assert metadata["scope"] == {"name": "checkout"}
    response = json_format.MessageToDict(by_type[pb.EVENT_TYPE_TOOL_RESPONSE].payload)
    assert response == {"body": "tool finished", "durationMs": 120}
    failure = by_type[pb.EVENT_TYPE_CUSTOM]
    assert failure.severity == pb.SEVERITY_ERROR
    assert json_format.MessageToDict(failure.payload) == {"body": "payment failed", "order": 42}
    assert client.events.verify_chain("sess-1").valid
    day = datetime.timedelta(days=1)
    now = datetime.datetime.now(datetime.UTC)
    analytics = client.events.analytics(from_time=now - day, to_time=now + day)
    assert analytics.totals.avg_latency_ms == 120  # payload facts count as for InsertEvents

    # The same record exported again (a retry) is stored once: it carries an id.
    logger.emit(
        body={"toolName": "search", "query": "shoes"},
        attributes={"session.id": "sess-1", "stord.event_type": "tool_call", "log.record.uid": "rec-1"},
    )
    assert provider.force_flush(10_000)
    assert client.events.count(session_id="sess-1") == 3
    provider.shutdown()


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _export(target: str, records: list[LogRecord], **call: Any) -> logs_service_pb2.ExportLogsServiceResponse:
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )
    with grpc.insecure_channel(target) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        response: logs_service_pb2.ExportLogsServiceResponse = stub.Export(request, timeout=10, **call)
    return response


def test_records_that_cannot_be_events_are_rejected_and_the_rest_stored(
    database_served: SharedDaemon, namespace: str, client: Client
) -> None:
    good = LogRecord(
        attributes=[_string("stord.session_id", "s"), _string("stord.agent_id", "a")],
        severity_number=SEVERITY_NUMBER_ERROR,
        body=AnyValue(string_value="x"),
    )
    no_agent = LogRecord(attributes=[_string("session.id", "s")])
    bad_type = LogRecord(attributes=[*good.attributes, _string("stord.event_type", "nonsense")])
    traced = LogRecord(attributes=[_string("stord.agent_id", "a")], trace_id=bytes(range(16)))
    metadata = (("stord-namespace", namespace),)
    response = _export(database_served.target, [good, no_agent, bad_type, traced], metadata=metadata)
    assert response.partial_success.rejected_log_records == 2
    assert "no agent" in response.partial_success.error_message
    assert "nonsense" in response.partial_success.error_message
    assert client.events.count(session_id="s") == 1
    assert client.events.query(session_id="s").events[0].severity == pb.SEVERITY_ERROR
    assert client.events.count(session_id=bytes(range(16)).hex()) == 1  # the trace id as the session


def test_otlp_ingest_needs_a_writer_key_and_lands_in_its_namespace(tmp_path: Path) -> None:
    writer = Tenant("writer", "shop", "svc", Role.READ_WRITE)
    reader = Tenant("reader", "shop", "report", Role.READ_ONLY)
    keys = write_keys(tmp_path / "keys.yaml", [writer, reader])
    settings = Settings(listen="127.0.0.1:0", database="memory://", api_keys_file=keys, log_level="warning")
    thread = DaemonThread(settings).start()
    record = LogRecord(attributes=[_string("session.id", "s"), _string("stord.agent_id", "a")])
    try:
        with pytest.raises(grpc.RpcError) as anonymous:
            _export(thread.target, [record])
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as read_only:
            _export(thread.target, [record], metadata=(("authorization", f"Bearer {reader.secret}"),))
        assert read_only.value.code() == grpc.StatusCode.PERMISSION_DENIED

        provider = _provider(thread.target, (("authorization", f"Bearer {writer.secret}"),))
        provider.get_logger("app").emit(body="hello", attributes={"session.id": "s", "stord.agent_id": "a"})
        assert provider.force_flush(10_000)
        provider.shutdown()
        with Client(thread.target, api_key=writer.secret) as client:
            assert client.events.count(session_id="s") == 1
    finally:
        thread.stop()


def test_redis_answers_otlp_with_unimplemented(redis_served: SharedDaemon) -> None:
    record = LogRecord(attributes=[_string("session.id", "s"), _string("stord.agent_id", "a")])
    with pytest.raises(grpc.RpcError) as raised:
        _export(redis_served.target, [record])
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sdk_spans_arrive_as_events_once_each(
    database_served: SharedDaemon, namespace: str, client: Client
) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-agent"}))
    exporter = OTLPSpanExporter(
        endpoint=database_served.target, insecure=True, headers=(("stord-namespace", namespace),), timeout=10
    )
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("checkout")
    with tracer.start_as_current_span("plan", attributes={"session.id": "sess-t"}) as parent:
        with tracer.start_as_current_span(
            "search", attributes={"session.id": "sess-t", "stord.event_type": "tool_response", "q": "shoes"}
        ):
            pass
        with tracer.start_as_current_span("charge", attributes={"session.id": "sess-t"}) as failing:
            failing.set_status(Status(StatusCode.ERROR, "card declined"))

    found = client.events.query(session_id="sess-t")
    assert found.total == 3
    by_name = {event.payload["name"]: event for event in found.events}
    context = parent.get_span_context()
    plan = by_name["plan"]
    assert plan.id == f"{context.trace_id:032x}-{context.span_id:016x}"
    assert (plan.agent_id, plan.event_type, plan.severity) == (
        "checkout-agent",
        pb.EVENT_TYPE_CUSTOM,
        pb.SEVERITY_INFO,
    )
    search = by_name["search"]
    assert search.event_type == pb.EVENT_TYPE_TOOL_RESPONSE
    assert search.payload["q"] == "shoes"
    assert search.payload["durationMs"] >= 0  # type: ignore[operator]
    assert json_format.MessageToDict(search.metadata)["parentSpanId"] == f"{context.span_id:016x}"
    charge = by_name["charge"]
    assert charge.severity == pb.SEVERITY_ERROR
    assert json_format.MessageToDict(charge.payload)["status"] == {
        "code": "error",
        "message": "card declined",
    }

    # Spans always carry ids: exporting them again stores nothing new.
    assert exporter.export(captured.get_finished_spans()).name == "SUCCESS"
    assert client.events.count(session_id="sess-t") == 3
    provider.shutdown()
