"""OpenTelemetry log records and spans -> stord events, by documented attribute names (README, "OTLP ingest").

For a log record, each field is taken from the first of these that is present, looking at the record's
attributes and then at its resource's:

- id: `stord.event_id`, `log.record.uid`; else the server makes one. A record with an id is stored once
  however often it is exported again (as InsertEvents);
- session_id: `stord.session_id`, `session.id`; else the record's trace id (hex); else refused;
- agent_id: `stord.agent_id`, `gen_ai.agent.id`, `service.name`; else refused;
- event_type: `stord.event_type`, then the record's `event_name` or `event.name` when one of the 16 type
  names (`tool_call`, ...); else `custom`;
- severity: `stord.severity` (`debug` ... `critical`); else from the severity number: TRACE and DEBUG
  debug, INFO info, WARN warn, ERROR error, FATAL critical, unset info;
- timestamp: the record's time, else its observed time, else the server's clock;
- payload: the body's entries when it is a map, else `{"body": <body>}` (no body: `{}`), then every record
  attribute but the ones above (dotted keys stay as they are: `{"http.status": 200}`), attributes winning;
- metadata: `resource` (the resource's attributes), `scope` (`name`, `version`), `traceId`, `spanId` and
  `severityText`, each when present.

Values: strings, booleans and doubles as themselves, integers as JSON numbers (beyond 2**53 as the nearest
double, as a Struct would hold them), bytes as base64, arrays as lists, maps as objects; NaN and infinities
as the strings "NaN", "Infinity", "-Infinity".

A span becomes one event the same way, but: its id is `stord.event_id` or else its trace id and span id
(hex, joined by `-`), so a span exported again is always stored once; the timestamp is its end time; the
severity is `stord.severity`, else error for an ERROR status, else info; the payload starts with `name`,
`kind` (`server`, `client`, ...), `durationMs` (end minus start) and `status` (`code`, `message`) when set;
metadata adds `parentSpanId`.

Records and spans become domain events directly, checked as InsertEvents checks events (ids of 1 to 256
bytes without NUL): going through a stord.v1.Event and its Structs cost twice the mapping itself.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_ERROR,
    SEVERITY_NUMBER_INFO,
    LogRecord,
    ResourceLogs,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from stord.server.events.chain import canonical_json
from stord.server.events.model import new_ulid, payload_facts
from stord.server.events.port import EventInput, EventType, Severity
from stord.server.ports import InvalidArgument
from stord.server.rpc import validate as check

__all__ = ["MappedRecord", "map_resource_logs", "map_resource_spans"]

ID_KEYS = ("stord.event_id", "log.record.uid")
SESSION_KEYS = ("stord.session_id", "session.id")
AGENT_KEYS = ("stord.agent_id", "gen_ai.agent.id", "service.name")
TYPE_KEY = "stord.event_type"
EVENT_NAME_KEY = "event.name"
SEVERITY_KEY = "stord.severity"
_CONSUMED = frozenset({*ID_KEYS, *SESSION_KEYS, *AGENT_KEYS, TYPE_KEY, SEVERITY_KEY, EVENT_NAME_KEY})

_TYPES = {member.value: member for member in EventType}
_SEVERITIES = {member.value: member for member in Severity}
# OpenTelemetry's severity numbers: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL.
_BY_SEVERITY_NUMBER = (
    (8, Severity.DEBUG),
    (12, Severity.INFO),
    (16, Severity.WARN),
    (20, Severity.ERROR),
)
_EXACT_INTEGERS = 2**53


@dataclass(frozen=True, slots=True)
class MappedRecord:
    """One log record as an event to store, or why it cannot be one."""

    event: EventInput | None
    problem: str = ""


def plain_value(value: AnyValue) -> Any:
    """Return an OpenTelemetry value as a JSON value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        number = value.double_value
        if math.isfinite(number):
            return number
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    if kind == "int_value":
        integer = value.int_value
        return integer if abs(integer) <= _EXACT_INTEGERS else float(integer)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [plain_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_map(value.kvlist_value.values)
    return getattr(value, kind)


def attribute_map(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Return key-value pairs as a dict (the last of repeated keys wins)."""
    return {pair.key: plain_value(pair.value) for pair in attributes}


def _first_text(keys: Iterable[str], *maps: Mapping[str, Any]) -> str | None:
    for key in keys:
        for attributes in maps:
            found = attributes.get(key)
            if isinstance(found, str) and found:
                return found
    return None


def _severity(severity_number: int, attributes: Mapping[str, Any]) -> Severity:
    named = attributes.get(SEVERITY_KEY)
    if isinstance(named, str) and named.lower() in _SEVERITIES:
        return _SEVERITIES[named.lower()]
    number = int(severity_number)
    if number <= 0:
        return Severity.INFO
    for ceiling, severity in _BY_SEVERITY_NUMBER:
        if number <= ceiling:
            return severity
    return Severity.CRITICAL


def _event_type(event_name: str, attributes: Mapping[str, Any]) -> EventType | str:
    """Return the event type the attributes (or a log record's event name) name, or why they name none."""
    named = attributes.get(TYPE_KEY)
    if isinstance(named, str):
        return _TYPES.get(named.lower(), f"{TYPE_KEY} {named!r} is not an event type")
    for candidate in (event_name, attributes.get(EVENT_NAME_KEY)):
        if isinstance(candidate, str) and candidate.lower() in _TYPES:
            return _TYPES[candidate.lower()]
    return EventType.CUSTOM


def _event(
    field: str,
    attributes: Mapping[str, Any],
    resource: Mapping[str, Any],
    *,
    trace_id: bytes,
    default_id: str | None,
    event_type: EventType | str,
    severity: Severity,
    payload: dict[str, Any],
    metadata: dict[str, Any],
    nanos: int,
    now_ms: int,
) -> MappedRecord:
    """Return the event of a record or span whose own fields the caller read; attributes fill the rest."""
    session_id = _first_text(SESSION_KEYS, attributes, resource) or trace_id.hex()
    if not session_id:
        return MappedRecord(None, f"{field}: no session: set attribute stord.session_id or session.id")
    agent_id = _first_text(AGENT_KEYS, attributes, resource)
    if agent_id is None:
        return MappedRecord(None, f"{field}: no agent: set attribute stord.agent_id or resource service.name")
    if isinstance(event_type, str):
        return MappedRecord(None, f"{field}: {event_type}")
    payload.update((key, value) for key, value in attributes.items() if key not in _CONSUMED)
    event_id = _first_text(ID_KEYS, attributes) or default_id
    try:
        event = EventInput(
            id=check.identifier(event_id, f"{field}.id") if event_id else new_ulid(now_ms),
            timestamp=nanos // 1_000_000 if nanos else now_ms,
            session_id=check.identifier(session_id, f"{field}.session_id"),
            agent_id=check.identifier(agent_id, f"{field}.agent_id"),
            event_type=event_type,
            severity=severity,
            payload=canonical_json(payload),
            metadata=canonical_json(metadata),
            **payload_facts(event_type, payload),
        )
    except InvalidArgument as error:
        return MappedRecord(None, str(error))
    return MappedRecord(event)


def _scope(name: str, version: str) -> dict[str, str]:
    return {key: value for key, value in (("name", name), ("version", version)) if value}


def _ids(metadata: dict[str, Any], trace_id: bytes, span_id: bytes) -> dict[str, Any]:
    if trace_id:
        metadata["traceId"] = trace_id.hex()
    if span_id:
        metadata["spanId"] = span_id.hex()
    return metadata


def _map_record(
    record: LogRecord, resource: Mapping[str, Any], scope: Mapping[str, str], field: str, now_ms: int
) -> MappedRecord:
    attributes = attribute_map(record.attributes)
    body = plain_value(record.body) if record.HasField("body") else None
    payload: dict[str, Any] = {} if body is None else {"body": body}
    if isinstance(body, dict):
        payload = body
    metadata = _ids(_context(resource, scope), record.trace_id, record.span_id)
    if record.severity_text:
        metadata["severityText"] = record.severity_text
    return _event(
        field,
        attributes,
        resource,
        trace_id=record.trace_id,
        default_id=None,
        event_type=_event_type(record.event_name, attributes),
        severity=_severity(record.severity_number, attributes),
        payload=payload,
        metadata=metadata,
        nanos=record.time_unix_nano or record.observed_time_unix_nano,
        now_ms=now_ms,
    )


def _map_span(
    span: Span, resource: Mapping[str, Any], scope: Mapping[str, str], field: str, now_ms: int
) -> MappedRecord:
    attributes = attribute_map(span.attributes)
    payload: dict[str, Any] = {"name": span.name}
    if span.kind:
        payload["kind"] = Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower()
    if span.end_time_unix_nano >= span.start_time_unix_nano > 0:
        payload["durationMs"] = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    if span.status.code or span.status.message:
        code = Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_").lower()
        payload["status"] = {"code": code, "message": span.status.message}
    metadata = _ids(_context(resource, scope), span.trace_id, span.span_id)
    if span.parent_span_id:
        metadata["parentSpanId"] = span.parent_span_id.hex()
    failed = span.status.code == Status.STATUS_CODE_ERROR
    ids = f"{span.trace_id.hex()}-{span.span_id.hex()}" if span.trace_id and span.span_id else None
    return _event(
        field,
        attributes,
        resource,
        trace_id=span.trace_id,
        default_id=ids,
        event_type=_event_type("", attributes),
        severity=_severity(SEVERITY_NUMBER_ERROR if failed else SEVERITY_NUMBER_INFO, attributes),
        payload=payload,
        metadata=metadata,
        nanos=span.end_time_unix_nano or span.start_time_unix_nano,
        now_ms=now_ms,
    )


def _context(resource: Mapping[str, Any], scope: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if resource:
        metadata["resource"] = dict(resource)
    if scope:
        metadata["scope"] = dict(scope)
    return metadata


def map_resource_logs(resource_logs: Iterable[ResourceLogs], now_ms: int) -> Iterator[MappedRecord]:
    """Yield every log record of an export request as an event, in order; `now_ms` dates timeless ones."""
    index = 0
    for resource_log in resource_logs:
        resource = attribute_map(resource_log.resource.attributes)
        for scope_log in resource_log.scope_logs:
            scope = _scope(scope_log.scope.name, scope_log.scope.version)
            for record in scope_log.log_records:
                yield _map_record(record, resource, scope, f"record {index}", now_ms)
                index += 1


def map_resource_spans(resource_spans: Iterable[ResourceSpans], now_ms: int) -> Iterator[MappedRecord]:
    """Yield every span of an export request as an event, in order; `now_ms` dates timeless ones."""
    index = 0
    for resource_span in resource_spans:
        resource = attribute_map(resource_span.resource.attributes)
        for scope_span in resource_span.scope_spans:
            scope = _scope(scope_span.scope.name, scope_span.scope.version)
            for span in scope_span.spans:
                yield _map_span(span, resource, scope, f"span {index}", now_ms)
                index += 1
