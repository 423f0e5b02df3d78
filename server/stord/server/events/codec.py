"""Event store messages <-> domain values, validating as they go; every failure names the request field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

import orjson
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct, Value

from stord.server.events.chain import JsonValue, canonical_json, is_hash, orjson_writes_like_javascript
from stord.server.events.model import new_ulid, payload_facts
from stord.server.events.port import (
    AlertCondition,
    AlertHistoryEntry,
    AlertRule,
    Event,
    EventAgent,
    EventFilter,
    EventInput,
    EventPosition,
    EventType,
    Granularity,
    Session,
    SessionStatus,
    Severity,
)
from stord.server.ports import InvalidArgument
from stord.server.rpc import calls
from stord.server.rpc import validate as check
from stord.server.rpc.page_tokens import PageTokens
from stord.v1 import events_pb2 as pb

MAX_SEARCH_CHARACTERS = 500
MAX_TAGS = 100
MAX_CHANNEL_BYTES = 2048
MAX_MESSAGE_BYTES = 4096

_Domain = TypeVar("_Domain")


def _by_name(proto_enum: Any, prefix: str, domain: type[_Domain]) -> dict[int, _Domain]:
    """Map each proto enum number but UNSPECIFIED to the domain member of the same name."""
    return {
        number: domain[name.removeprefix(prefix)]  # type: ignore[index]
        for name, number in proto_enum.items()
        if not name.endswith("_UNSPECIFIED")
    }


EVENT_TYPES = _by_name(pb.EventType, "EVENT_TYPE_", EventType)
SEVERITIES = _by_name(pb.Severity, "SEVERITY_", Severity)
SESSION_STATUSES = _by_name(pb.SessionStatus, "SESSION_STATUS_", SessionStatus)
GRANULARITIES = _by_name(pb.Granularity, "GRANULARITY_", Granularity)
ALERT_CONDITIONS = _by_name(pb.AlertCondition, "ALERT_CONDITION_", AlertCondition)
_EVENT_TYPE_NUMBERS = {member: number for number, member in EVENT_TYPES.items()}
_SEVERITY_NUMBERS = {member: number for number, member in SEVERITIES.items()}
_SESSION_STATUS_NUMBERS = {member: number for number, member in SESSION_STATUSES.items()}
_ALERT_CONDITION_NUMBERS = {member: number for number, member in ALERT_CONDITIONS.items()}


def member(number: int, members: Mapping[int, _Domain], field: str, proto_enum: Any) -> _Domain:
    """Return the domain member of a proto enum number; UNSPECIFIED and unknown numbers are refused."""
    found = members.get(number)
    if found is None:
        return members[check.enum_value(number, proto_enum.DESCRIPTOR, field)]
    return found


# Scalars -------------------------------------------------------------------------------------------------


def optional_identifier(value: str, field: str) -> str | None:
    """Return an id, or None for the empty string (no condition)."""
    return check.identifier(value, field) if value else None


def optional_milliseconds(message: Any, name: str, field: str) -> int | None:
    """Return the Timestamp field `name` of `message` in milliseconds, None when unset."""
    return check.milliseconds(getattr(message, name), field) if message.HasField(name) else None


def update_mask(mask: FieldMask, allowed: Iterable[str], field: str = "update_mask") -> frozenset[str]:
    """Return the field names a mask writes: every allowed one when it is empty."""
    allowed = frozenset(allowed)
    paths = frozenset(mask.paths)
    unknown = sorted(paths - allowed)
    if unknown:
        raise InvalidArgument(
            field, f"cannot write {', '.join(unknown)}; writable: {', '.join(sorted(allowed))}"
        )
    return paths or allowed


# Page tokens -----------------------------------------------------------------------------------------------


# The codec binds each token to its listing, namespace and query; these say what a position is.


def event_position_token(tokens: PageTokens, request: Message, event: Event) -> str:
    """Return a token that resumes `request`'s event listing after `event`."""
    return tokens.issue(request, calls.namespace(), event.timestamp, event.id)


def event_position(tokens: PageTokens, request: Message) -> EventPosition | None:
    """Return where `request`'s event listing resumes, None for the first page."""
    position = tokens.resume(request, calls.namespace(), int, str)
    return None if position is None else EventPosition(int(position[0]), str(position[1]))


def offset_page_token(tokens: PageTokens, request: Message, offset: int) -> str:
    """Return a token that resumes `request`'s offset-paged listing at `offset`."""
    return tokens.issue(request, calls.namespace(), offset)


def offset_token(tokens: PageTokens, request: Message) -> int:
    """Return the offset `request`'s offset-paged listing resumes at, 0 for the first page."""
    position = tokens.resume(request, calls.namespace(), int)
    offset = 0 if position is None else int(position[0])
    if offset < 0:
        raise InvalidArgument("page_token", "is not a token this server issued for this listing and query")
    return offset


def id_page_token(tokens: PageTokens, request: Message, last_id: str) -> str:
    """Return a token that resumes `request`'s id-ordered listing after `last_id`."""
    return tokens.issue(request, calls.namespace(), last_id)


def id_token(tokens: PageTokens, request: Message) -> str | None:
    """Return the id `request`'s id-ordered listing resumes after, None for the first page."""
    position = tokens.resume(request, calls.namespace(), str)
    return None if position is None else str(position[0])


# JSON ------------------------------------------------------------------------------------------------------

_ORJSON_INT_LIMIT = 2**63


class _Numbers:
    """Whether every number met while converting a Struct can go to orjson as it is."""

    __slots__ = ("checked",)

    def __init__(self) -> None:
        self.checked = True


def _json_value(value: Value, numbers: _Numbers) -> JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # Integral doubles become ints, which canonical JSON writes without a fraction, as JavaScript does.
        if number.is_integer() and -_ORJSON_INT_LIMIT < number < _ORJSON_INT_LIMIT:
            return int(number)
        if not orjson_writes_like_javascript(number):
            numbers.checked = False
        return number
    if kind == "struct_value":
        fields = value.struct_value.fields
        return {key: _json_value(fields[key], numbers) for key in fields}
    if kind == "list_value":
        return [_json_value(item, numbers) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_json(struct: Struct, field: str) -> tuple[dict[str, JsonValue], str]:
    """Return a Struct as a JSON object and its canonical text; non-finite numbers are refused."""
    numbers = _Numbers()
    fields = struct.fields  # indexing a protobuf map is cheaper than its items()
    document: dict[str, JsonValue] = {key: _json_value(fields[key], numbers) for key in fields}
    try:
        return document, canonical_json(document, numbers_checked=numbers.checked)
    except ValueError as error:
        raise InvalidArgument(field, str(error)) from None


_EXACT_DOUBLE_INTS = 2**53
"""Integers below this magnitude are the same as JavaScript numbers (IEEE doubles) and as Struct numbers."""


def _written_alike(document: JsonValue) -> bool:
    """Return whether every number of a parsed JSON value is one a Struct holds as it is and orjson writes as
    JavaScript does: an integer below 2^53, or a non-integral double from 1e-5 up."""
    pending = [document]  # a stack, not recursion: this runs for every event ingested
    while pending:
        value = pending.pop()
        if isinstance(value, str) or value is None:
            continue
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, float):
            if not orjson_writes_like_javascript(value):
                return False
        elif not isinstance(value, bool) and not -_EXACT_DOUBLE_INTS < value < _EXACT_DOUBLE_INTS:
            return False
    return True


def _as_double(value: JsonValue) -> JsonValue:
    """Return a parsed JSON value with every number as a Struct holds it: a double, integral ones as ints."""
    if isinstance(value, dict):
        return {key: _as_double(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_double(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if number.is_integer() and -_ORJSON_INT_LIMIT < number < _ORJSON_INT_LIMIT:
            return int(number)
        return number
    return value


def json_text(text: str, field: str) -> tuple[dict[str, JsonValue], str]:
    """Return JSON object text as a JSON object and its canonical text, the same as for the equal Struct.

    One parse and one write with orjson; only when a number is one JavaScript writes otherwise (or holds
    rounded) are the numbers made doubles, as a Struct's are, and written the careful way.
    """
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidArgument(field, f"is not JSON text: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(field, "must be a JSON object")
    if _written_alike(document):
        return document, orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()
    document = cast(dict[str, JsonValue], _as_double(document))
    try:
        return document, canonical_json(document)
    except ValueError as error:
        raise InvalidArgument(field, str(error)) from None


def json_struct(canonical: str) -> Struct:
    """Return stored JSON object text as a Struct."""
    struct = Struct()
    struct.update(orjson.loads(canonical))
    return struct


# Events ----------------------------------------------------------------------------------------------------


def _event_id(value: str, field: str, name: str) -> str:
    """Return a required id of an event; the field's name is only built for an error (ingest's hot path)."""
    if value and len(value) <= check.MAX_ID_BYTES // 4 and "\x00" not in value:
        return value
    return check.identifier(value, f"{field}.{name}")


def _json_object(message: pb.Event, name: str, field: str) -> tuple[dict[str, JsonValue], str]:
    """Return the payload or metadata of an event, from its JSON text or its Struct."""
    text = message.payload_json if name == "payload" else message.metadata_json
    if text:
        if message.HasField(name):  # type: ignore[arg-type]
            raise InvalidArgument(f"{field}.{name}_json", f"cannot be combined with {name}")
        return json_text(text, f"{field}.{name}_json")
    struct: Struct = getattr(message, name)
    if not struct.fields:
        return {}, "{}"
    return struct_json(struct, f"{field}.{name}")


def event_input(message: pb.Event, field: str, now_ms: int) -> EventInput:
    """Return a validated event to store; `now_ms` fills an unset timestamp and dates a made id."""
    event_type = EVENT_TYPES.get(message.event_type) or member(
        message.event_type, EVENT_TYPES, f"{field}.event_type", pb.EventType
    )
    severity = SEVERITIES.get(message.severity) or member(
        message.severity, SEVERITIES, f"{field}.severity", pb.Severity
    )
    payload, payload_text = _json_object(message, "payload", field)
    metadata_text = _json_object(message, "metadata", field)[1]
    claims_prev_hash = message.HasField("prev_hash")
    prev_hash, claimed_hash = message.prev_hash, message.hash
    if claims_prev_hash and prev_hash and not is_hash(prev_hash):
        raise InvalidArgument(
            f"{field}.prev_hash", "must be 64 lowercase hex digits, or empty for a first event"
        )
    if claimed_hash and not is_hash(claimed_hash):
        raise InvalidArgument(f"{field}.hash", "must be 64 lowercase hex digits, or empty")
    event_id = message.id
    return EventInput(
        id=_event_id(event_id, field, "id") if event_id else new_ulid(now_ms),
        timestamp=check.milliseconds(message.timestamp, f"{field}.timestamp")
        if message.HasField("timestamp")
        else now_ms,
        session_id=_event_id(message.session_id, field, "session_id"),
        agent_id=_event_id(message.agent_id, field, "agent_id"),
        event_type=event_type,
        severity=severity,
        payload=payload_text,
        metadata=metadata_text,
        claims_prev_hash=claims_prev_hash,
        prev_hash=prev_hash or None,
        hash=claimed_hash or None,
        **payload_facts(event_type, payload),
    )


def event_message(event: Event) -> pb.Event:
    """Return a stored event as a message."""
    message = pb.Event(
        id=event.id,
        timestamp=check.timestamp_from_milliseconds(event.timestamp),
        session_id=event.session_id,
        agent_id=event.agent_id,
        event_type=_EVENT_TYPE_NUMBERS[event.event_type],  # type: ignore[arg-type]
        severity=_SEVERITY_NUMBERS[event.severity],  # type: ignore[arg-type]
        payload=json_struct(event.payload),
        metadata=json_struct(event.metadata),
        hash=event.hash,
        chain_index=event.chain_index,
    )
    if event.prev_hash is not None:
        message.prev_hash = event.prev_hash
    return message


def event_filter(message: pb.EventFilter, field: str = "filter") -> EventFilter:
    """Return a validated filter."""
    if len(message.search) > MAX_SEARCH_CHARACTERS:
        raise InvalidArgument(f"{field}.search", f"must be at most {MAX_SEARCH_CHARACTERS} characters")
    from_time = optional_milliseconds(message, "from_time", f"{field}.from_time")
    to_time = optional_milliseconds(message, "to_time", f"{field}.to_time")
    return EventFilter(
        session_id=optional_identifier(message.session_id, f"{field}.session_id"),
        agent_id=optional_identifier(message.agent_id, f"{field}.agent_id"),
        event_types=frozenset(
            member(number, EVENT_TYPES, f"{field}.event_types[{index}]", pb.EventType)
            for index, number in enumerate(message.event_types)
        ),
        severities=frozenset(
            member(number, SEVERITIES, f"{field}.severities[{index}]", pb.Severity)
            for index, number in enumerate(message.severities)
        ),
        from_time=from_time,
        to_time=to_time,
        search=check.text(message.search, f"{field}.search", 4 * MAX_SEARCH_CHARACTERS) or None,
    )


# Sessions, agents, alerts ----------------------------------------------------------------------------------


def tags(values: Iterable[str], field: str) -> tuple[str, ...]:
    """Return at most 100 tags, each a valid id."""
    found = tuple(check.identifier(tag, f"{field}[{index}]") for index, tag in enumerate(values))
    if len(found) > MAX_TAGS:
        raise InvalidArgument(field, f"must hold at most {MAX_TAGS} tags")
    return found


def session_status(number: int, field: str) -> SessionStatus:
    """Return a session status; UNSPECIFIED is refused."""
    return member(number, SESSION_STATUSES, field, pb.SessionStatus)


def session_message(session: Session) -> pb.Session:
    """Return a session as a message."""
    message = pb.Session(
        id=session.id,
        agent_id=session.agent_id,
        agent_name=session.agent_name or "",
        start_time=check.timestamp_from_milliseconds(session.started_at),
        status=_SESSION_STATUS_NUMBERS[session.status],  # type: ignore[arg-type]
        event_count=session.event_count,
        tool_call_count=session.tool_call_count,
        error_count=session.error_count,
        total_cost_usd=session.total_cost_usd,
        tags=session.tags,
    )
    if session.ended_at is not None:
        message.end_time.CopyFrom(check.timestamp_from_milliseconds(session.ended_at))
    return message


def agent_message(agent: EventAgent) -> pb.Agent:
    """Return an agent as a message."""
    return pb.Agent(
        id=agent.id,
        name=agent.name,
        description=agent.description or "",
        first_seen_time=check.timestamp_from_milliseconds(agent.first_seen_at),
        last_seen_time=check.timestamp_from_milliseconds(agent.last_seen_at),
        session_count=agent.session_count,
    )


def alert_rule_message(rule: AlertRule) -> pb.AlertRule:
    """Return an alert rule as a message."""
    return pb.AlertRule(
        id=rule.id,
        name=rule.name,
        enabled=rule.enabled,
        condition=_ALERT_CONDITION_NUMBERS[rule.condition],  # type: ignore[arg-type]
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        scope=pb.AlertScope(agent_id=rule.scope_agent_id or "", tags=rule.scope_tags),
        notify_channels=rule.notify_channels,
        create_time=check.timestamp_from_milliseconds(rule.created_at),
        update_time=check.timestamp_from_milliseconds(rule.updated_at),
    )


def alert_entry_message(entry: AlertHistoryEntry) -> pb.AlertHistoryEntry:
    """Return an alert history entry as a message."""
    message = pb.AlertHistoryEntry(
        id=entry.id,
        rule_id=entry.rule_id,
        triggered_time=check.timestamp_from_milliseconds(entry.triggered_at),
        current_value=entry.current_value,
        threshold=entry.threshold,
        message=entry.message,
    )
    if entry.resolved_at is not None:
        message.resolved_time.CopyFrom(check.timestamp_from_milliseconds(entry.resolved_at))
    return message
