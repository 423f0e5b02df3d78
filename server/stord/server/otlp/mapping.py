"""OpenTelemetry log records -> stord events, by documented attribute names (README, "OTLP ingest").

Each field is taken from the first of these that is present, looking at the record's attributes and then at
its resource's:

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

Values: strings, booleans and doubles as themselves, integers as JSON numbers, bytes as base64, arrays as
lists, maps as objects; NaN and infinities as the strings "NaN", "Infinity", "-Infinity".
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.struct_pb2 import Struct
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs

from stord.v1 import events_pb2 as pb

__all__ = ["MappedRecord", "map_resource_logs"]

ID_KEYS = ("stord.event_id", "log.record.uid")
SESSION_KEYS = ("stord.session_id", "session.id")
AGENT_KEYS = ("stord.agent_id", "gen_ai.agent.id", "service.name")
TYPE_KEY = "stord.event_type"
EVENT_NAME_KEY = "event.name"
SEVERITY_KEY = "stord.severity"
_CONSUMED = frozenset({*ID_KEYS, *SESSION_KEYS, *AGENT_KEYS, TYPE_KEY, SEVERITY_KEY, EVENT_NAME_KEY})

_TYPES = {name.removeprefix("EVENT_TYPE_").lower(): number for name, number in pb.EventType.items()}
_TYPES.pop("unspecified")
_SEVERITIES = {name.removeprefix("SEVERITY_").lower(): number for name, number in pb.Severity.items()}
_SEVERITIES.pop("unspecified")
# OpenTelemetry's severity numbers: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL.
_BY_SEVERITY_NUMBER = (
    (4, pb.SEVERITY_DEBUG),
    (8, pb.SEVERITY_DEBUG),
    (12, pb.SEVERITY_INFO),
    (16, pb.SEVERITY_WARN),
    (20, pb.SEVERITY_ERROR),
)


@dataclass(frozen=True, slots=True)
class MappedRecord:
    """One log record as an event message, or why it cannot be one."""

    event: pb.Event | None
    problem: str | None = None


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
        return value.int_value
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


def _severity(record: LogRecord, attributes: Mapping[str, Any]) -> int:
    named = attributes.get(SEVERITY_KEY)
    if isinstance(named, str) and named.lower() in _SEVERITIES:
        return _SEVERITIES[named.lower()]
    number = int(record.severity_number)
    if number <= 0:
        return pb.SEVERITY_INFO
    for ceiling, severity in _BY_SEVERITY_NUMBER:
        if number <= ceiling:
            return severity
    return pb.SEVERITY_CRITICAL


def _event_type(record: LogRecord, attributes: Mapping[str, Any]) -> int | str:
    named = attributes.get(TYPE_KEY)
    if isinstance(named, str):
        return _TYPES.get(named.lower(), f"{TYPE_KEY} {named!r} is not an event type")
    for candidate in (record.event_name, attributes.get(EVENT_NAME_KEY)):
        if isinstance(candidate, str) and candidate.lower() in _TYPES:
            return _TYPES[candidate.lower()]
    return pb.EVENT_TYPE_CUSTOM


def _struct(document: Mapping[str, Any]) -> Struct:
    message = Struct()
    message.update(document)
    return message


def _map_record(record: LogRecord, resource: Mapping[str, Any], scope: Mapping[str, str]) -> MappedRecord:
    attributes = attribute_map(record.attributes)
    session_id = _first_text(SESSION_KEYS, attributes, resource) or (record.trace_id.hex() or None)
    if session_id is None:
        return MappedRecord(
            None, "no session: set the stord.session_id or session.id attribute, or a trace id"
        )
    agent_id = _first_text(AGENT_KEYS, attributes, resource)
    if agent_id is None:
        return MappedRecord(None, "no agent: set the stord.agent_id attribute or the service.name resource")
    event_type = _event_type(record, attributes)
    if isinstance(event_type, str):
        return MappedRecord(None, event_type)
    body = plain_value(record.body) if record.HasField("body") else None
    payload: dict[str, Any] = (
        dict(body) if isinstance(body, dict) else ({} if body is None else {"body": body})
    )
    payload.update((key, value) for key, value in attributes.items() if key not in _CONSUMED)
    metadata: dict[str, Any] = {}
    if resource:
        metadata["resource"] = dict(resource)
    if scope:
        metadata["scope"] = dict(scope)
    if record.trace_id:
        metadata["traceId"] = record.trace_id.hex()
    if record.span_id:
        metadata["spanId"] = record.span_id.hex()
    if record.severity_text:
        metadata["severityText"] = record.severity_text
    event = pb.Event(
        id=_first_text(ID_KEYS, attributes, {}) or "",
        session_id=session_id,
        agent_id=agent_id,
        event_type=event_type,  # type: ignore[arg-type]
        severity=_severity(record, attributes),  # type: ignore[arg-type]
        payload=_struct(payload),
        metadata=_struct(metadata),
    )
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    if nanos:
        event.timestamp.FromNanoseconds(nanos)
    return MappedRecord(event)


def map_resource_logs(resource_logs: Iterable[ResourceLogs]) -> Iterator[MappedRecord]:
    """Yield every log record of an export request as an event, in order."""
    for resource_log in resource_logs:
        resource = attribute_map(resource_log.resource.attributes)
        for scope_log in resource_log.scope_logs:
            scope = {
                key: value
                for key, value in (("name", scope_log.scope.name), ("version", scope_log.scope.version))
                if value
            }
            for record in scope_log.log_records:
                yield _map_record(record, resource, scope)
