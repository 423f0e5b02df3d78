"""Conversions shared by the sync and async event store clients and the ingestor."""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from stord.client import _codec
from stord.v1 import events_pb2 as pb

__all__ = [
    "EventTypeName",
    "Order",
    "SeverityName",
    "Time",
    "event_filter",
    "make_event",
    "new_event_id",
    "timestamp",
]

Time = datetime.datetime | float
"""An aware datetime, or seconds since the epoch."""

EventTypeName = str | int
"""An event type by its original name (`"tool_call"`) or its EventType number."""

SeverityName = str | int
"""A severity by its original name (`"warn"`) or its Severity number."""

Order = Literal["asc", "desc"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id() -> str:
    """Return a new ULID (time-sortable, 26 characters): what EventIngestor gives events without an id."""
    value = (time.time_ns() // 1_000_000 % (1 << 48)) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def timestamp(value: Time) -> Timestamp:
    """Return a Timestamp for a datetime (naive ones are refused) or seconds since the epoch."""
    message = Timestamp()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: give a timezone, e.g. datetime.UTC")
        message.FromDatetime(value)
    else:
        message.FromNanoseconds(round(value * 1e9))
    return message


def _enum(value: str | int, proto_enum: Any, prefix: str) -> Any:
    if isinstance(value, int):
        return value
    names = {name.removeprefix(prefix).lower(): number for name, number in proto_enum.items() if number != 0}
    return _codec.choice(value, names, prefix.removesuffix("_").lower())


def event_type_number(value: EventTypeName) -> pb.EventType.ValueType:
    """Return the EventType number of a name such as `tool_call`."""
    number: pb.EventType.ValueType = _enum(value, pb.EventType, "EVENT_TYPE_")
    return number


def severity_number(value: SeverityName) -> pb.Severity.ValueType:
    """Return the Severity number of a name such as `warn`."""
    number: pb.Severity.ValueType = _enum(value, pb.Severity, "SEVERITY_")
    return number


def granularity_number(value: str | int) -> pb.Granularity.ValueType:
    """Return the Granularity number of a name: `hour`, `day` or `week`."""
    number: pb.Granularity.ValueType = _enum(value, pb.Granularity, "GRANULARITY_")
    return number


def session_status(value: str | int) -> pb.SessionStatus.ValueType:
    """Return the SessionStatus number of a name such as `completed`."""
    number: pb.SessionStatus.ValueType = _enum(value, pb.SessionStatus, "SESSION_STATUS_")
    return number


def struct(document: Mapping[str, Any] | None) -> Struct | None:
    """Return a JSON object as a Struct, None for None."""
    if document is None:
        return None
    message = Struct()
    message.update(document)
    return message


def _json_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def make_event(
    session_id: str,
    agent_id: str,
    event_type: EventTypeName,
    *,
    severity: SeverityName = "info",
    payload: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    event_id: str = "",
    at: Time | None = None,
    prev_hash: str | None = None,
    event_hash: str = "",
    json_text: bool = False,
) -> pb.Event:
    """Return an Event message; what is left out the server fills (see events.proto).

    `json_text` sends payload and metadata as JSON text (`payload_json`, `metadata_json`) rather than as
    Structs: the same event, stored and hashed alike, which the daemon reads several times faster, so use it
    for high-volume ingest. It needs a daemon that knows those fields (one that does not would store empty
    objects). NaN and infinities raise ValueError here (as JSON they do not exist).
    """
    message = pb.Event(
        id=event_id,
        session_id=session_id,
        agent_id=agent_id,
        event_type=event_type_number(event_type),
        severity=severity_number(severity),
        hash=event_hash,
    )
    if json_text:
        if payload is not None:
            message.payload_json = _json_text(payload)
        if metadata is not None:
            message.metadata_json = _json_text(metadata)
    else:
        if payload is not None:
            message.payload.update(payload)
        if metadata is not None:
            message.metadata.update(metadata)
    if at is not None:
        message.timestamp.CopyFrom(timestamp(at))
    if prev_hash is not None:
        message.prev_hash = prev_hash
    return message


def event_filter(
    *,
    session_id: str | None,
    agent_id: str | None,
    event_types: Iterable[EventTypeName],
    severities: Iterable[SeverityName],
    from_time: Time | None,
    to_time: Time | None,
    search: str | None,
) -> pb.EventFilter:
    """Return an EventFilter; None and empty arguments select everything."""
    return pb.EventFilter(
        session_id=session_id or "",
        agent_id=agent_id or "",
        event_types=[event_type_number(value) for value in event_types],
        severities=[severity_number(value) for value in severities],
        from_time=None if from_time is None else timestamp(from_time),
        to_time=None if to_time is None else timestamp(to_time),
        search=search or "",
    )


def sort_order(order: Order | None) -> pb.SortOrder.ValueType | None:
    """Return the SortOrder of `asc`/`desc`; None leaves the server's default (newest first)."""
    if order is None:
        return None
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return pb.SORT_ORDER_ASCENDING if order == "asc" else pb.SORT_ORDER_DESCENDING


def session_update(
    session_id: str,
    *,
    agent_id: str | None,
    agent_name: str | None,
    start_time: Time | None,
    end_time: Time | None,
    status: str | int | None,
    tags: Iterable[str] | None,
) -> pb.UpsertSessionRequest:
    """Return an UpsertSessionRequest writing exactly the arguments that are not None (one at least)."""
    session = pb.Session(
        id=session_id,
        agent_id=agent_id or "",
        agent_name=agent_name or "",
        start_time=None if start_time is None else timestamp(start_time),
        end_time=None if end_time is None else timestamp(end_time),
        status=pb.SESSION_STATUS_UNSPECIFIED if status is None else session_status(status),
        tags=tags,
    )
    given = {
        "agent_id": agent_id,
        "agent_name": agent_name,
        "start_time": start_time,
        "end_time": end_time,
        "status": status,
        "tags": tags,
    }
    paths = [name for name, value in given.items() if value is not None]
    if not paths:
        raise ValueError("give at least one field to write")
    return pb.UpsertSessionRequest(session=session, update_mask=mask(paths))


def agent_update(agent_id: str, name: str | None, description: str | None) -> pb.UpsertAgentRequest:
    """Return an UpsertAgentRequest writing exactly the arguments that are not None (one at least)."""
    paths = [path for path, value in (("name", name), ("description", description)) if value is not None]
    if not paths:
        raise ValueError("give at least one field to write")
    agent = pb.Agent(id=agent_id, name=name or "", description=description or "")
    return pb.UpsertAgentRequest(agent=agent, update_mask=mask(paths))


def mask(paths: Iterable[str]) -> FieldMask:
    """Return a FieldMask naming `paths`."""
    return FieldMask(paths=list(paths))
