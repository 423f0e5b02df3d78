"""The export format: JSON Lines, a header line, one line per stored record, a footer line.

    {"kind":"header","format":"stord-export","version":1,"created_at":"...","stord_version":"...",
     "source":"sqlite","namespace":null}
    {"kind":"event","namespace":"shop","id":"01J...","timestamp":1718000000000,...}
    ...
    {"kind":"footer","records":104321,"counts":{"event":100000,...}}

Every record line has `kind` and `namespace`, then the fields of what the store keeps, named as the domain
(ports) names them: bytes in standard base64; JSON documents as JSON objects; an event's payload and
metadata as the exact canonical JSON text its hash covers; times in the unit the store keeps them (seconds as
a float for key-value expiry, documents and agents; milliseconds for events, sessions, agents of the event
store and alert rules; nanoseconds for manifests), except jobs: their stores keep integer microseconds, and
the format carries them as float seconds, as version 1 always did (exact to the microsecond within a few
centuries of now; a far instant may move by up to ~30 us, never past 9999-12-31T23:59:59.999999Z).
A reader accepts exactly the fields of its format
version: anything else in a line is an error, as is a line after the footer or a file without one.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stord.server.agents.port import AgentStatus, AgentVisibility, StoredAgent
from stord.server.documents.port import Document
from stord.server.events.port import (
    AlertCondition,
    AlertHistoryEntry,
    AlertRule,
    Event,
    EventAgent,
    EventType,
    Session,
    SessionStatus,
    Severity,
)
from stord.server.jobs.port import MAX_INSTANT, MICROS, MIN_INSTANT, Job, JobStatus
from stord.server.kv.port import Keyspace
from stord.server.manifests.port import HandlerManifestRecord, ManifestDocumentKind, TransformerRecord
from stord.server.transfer import _fields as field
from stord.server.transfer.port import (
    AgentRecord,
    AlertHistoryRecord,
    AlertRuleRecord,
    DocumentRecord,
    EventAgentRecord,
    EventRecord,
    JobRecord,
    ListItemRecord,
    ManifestDocumentRecord,
    ManifestRecord,
    ManifestTransformerRecord,
    SessionRecord,
    TransferRecord,
    ValueRecord,
)

__all__ = [
    "FOOTER",
    "FORMAT",
    "HEADER",
    "RECORD_KINDS",
    "VERSION",
    "FormatError",
    "check_footer",
    "check_header",
    "decode_record",
    "encode_record",
    "footer",
    "header",
    "record_kind",
]

FORMAT = "stord-export"
"""The `format` of the header line, naming the file type."""

VERSION = 1
"""The format version this stord writes and the only one it reads."""

HEADER = "header"
FOOTER = "footer"

_KINDS: dict[type, str] = {
    ValueRecord: "kv_value",
    ListItemRecord: "kv_list_item",
    DocumentRecord: "document",
    JobRecord: "job",
    EventRecord: "event",
    SessionRecord: "session",
    EventAgentRecord: "event_agent",
    AlertRuleRecord: "alert_rule",
    AlertHistoryRecord: "alert_history",
    AgentRecord: "agent",
    ManifestRecord: "manifest",
    ManifestTransformerRecord: "transformer",
}

RECORD_KINDS: tuple[str, ...] = (
    *_KINDS.values(),
    *(kind.value for kind in ManifestDocumentKind),
)
"""Every record kind, in the order a dump writes them; a manifest document's kind is its own name."""


class FormatError(Exception):
    """A line of an export file cannot be read; `line` is its number, from 1."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def record_kind(record: TransferRecord) -> str:
    """Return the `kind` a record's line carries."""
    if isinstance(record, ManifestDocumentRecord):
        return record.kind.value
    return _KINDS[type(record)]


@dataclass(frozen=True, slots=True)
class _Shape:
    """The fields of one kind of line, each with its check, and how the checked values make the record."""

    fields: dict[str, field.Check]
    build: Callable[[str, dict[str, Any]], TransferRecord]
    keys: frozenset[str] = frozenset()
    """Every key of such a line, `kind` and `namespace` included."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", frozenset({"kind", "namespace", *self.fields}))


def _value(namespace: str, v: dict[str, Any]) -> TransferRecord:
    return ValueRecord(namespace, **v)


def _list_item(namespace: str, v: dict[str, Any]) -> TransferRecord:
    return ListItemRecord(namespace, **v)


def _session(namespace: str, v: dict[str, Any]) -> TransferRecord:
    chain_length, last_hash = v.pop("chain_length"), v.pop("last_hash")
    return SessionRecord(namespace, Session(**v), chain_length, last_hash)


def _agent(namespace: str, v: dict[str, Any]) -> TransferRecord:
    position = v.pop("position")
    return AgentRecord(namespace, StoredAgent(**v), position)


_JOB_INSTANTS = ("run_at", "lease_expires_at", "create_time", "update_time")


def _job(namespace: str, v: dict[str, Any]) -> TransferRecord:
    for name in _JOB_INSTANTS:
        if v[name] is not None:
            v[name] = min(max(round(v[name] * MICROS), MIN_INSTANT), MAX_INSTANT)
    return JobRecord(namespace, Job(**v))


def _manifest_document(kind: ManifestDocumentKind) -> Callable[[str, dict[str, Any]], TransferRecord]:
    def build(namespace: str, v: dict[str, Any]) -> TransferRecord:
        return ManifestDocumentRecord(namespace, kind, (v["id"], v["version"]), v["document"])

    return build


_DOCUMENT_FIELDS: dict[str, field.Check] = {
    "id": field.text,
    "version": field.text,
    "document": field.json_object,
}

_SHAPES: dict[str, _Shape] = {
    "kv_value": _Shape(
        {
            "keyspace": field.member(Keyspace),
            "key": field.text,
            "value": field.blob,
            "expires_at": field.MAYBE_NUMBER,
        },
        _value,
    ),
    "kv_list_item": _Shape(
        {"keyspace": field.member(Keyspace), "key": field.text, "position": field.COUNT, "value": field.blob},
        _list_item,
    ),
    "document": _Shape(
        {
            "collection": field.text,
            "id": field.text,
            "revision": field.at_least(1),
            "create_time": field.number,
            "update_time": field.number,
            "data": field.json_object,
        },
        lambda namespace, v: DocumentRecord(namespace, Document(**v)),
    ),
    "job": _Shape(
        {
            "id": field.text,
            "queue": field.text,
            "sequence": field.at_least(1),
            "status": field.member(JobStatus),
            "priority": field.integer,
            "run_at": field.number,
            "attempts": field.COUNT,
            "max_attempts": field.at_least(1),
            "dedupe_key": field.MAYBE_TEXT,
            "payload": field.json_object,
            "last_error": field.MAYBE_TEXT,
            "lease_token": field.MAYBE_TEXT,
            "lease_expires_at": field.MAYBE_NUMBER,
            "create_time": field.number,
            "update_time": field.number,
        },
        _job,
    ),
    "event": _Shape(
        {
            "id": field.text,
            "timestamp": field.integer,
            "session_id": field.text,
            "agent_id": field.text,
            "event_type": field.member(EventType),
            "severity": field.member(Severity),
            "payload": field.text,
            "metadata": field.text,
            "prev_hash": field.MAYBE_TEXT,
            "hash": field.text,
            "chain_index": field.COUNT,
        },
        lambda namespace, v: EventRecord(namespace, Event(**v)),
    ),
    "session": _Shape(
        {
            "id": field.text,
            "agent_id": field.text,
            "agent_name": field.MAYBE_TEXT,
            "started_at": field.integer,
            "ended_at": field.MAYBE_INTEGER,
            "status": field.member(SessionStatus),
            "event_count": field.COUNT,
            "tool_call_count": field.COUNT,
            "error_count": field.COUNT,
            "total_cost_usd": field.number,
            "tags": field.texts,
            "chain_length": field.COUNT,
            "last_hash": field.MAYBE_TEXT,
        },
        _session,
    ),
    "event_agent": _Shape(
        {
            "id": field.text,
            "name": field.text,
            "description": field.MAYBE_TEXT,
            "first_seen_at": field.integer,
            "last_seen_at": field.integer,
            "session_count": field.COUNT,
        },
        lambda namespace, v: EventAgentRecord(namespace, EventAgent(**v)),
    ),
    "alert_rule": _Shape(
        {
            "id": field.text,
            "name": field.text,
            "enabled": field.boolean,
            "condition": field.member(AlertCondition),
            "threshold": field.number,
            "window_minutes": field.integer,
            "scope_agent_id": field.MAYBE_TEXT,
            "scope_tags": field.texts,
            "notify_channels": field.texts,
            "created_at": field.integer,
            "updated_at": field.integer,
        },
        lambda namespace, v: AlertRuleRecord(namespace, AlertRule(**v)),
    ),
    "alert_history": _Shape(
        {
            "id": field.text,
            "rule_id": field.text,
            "triggered_at": field.integer,
            "resolved_at": field.MAYBE_INTEGER,
            "current_value": field.number,
            "threshold": field.number,
            "message": field.text,
        },
        lambda namespace, v: AlertHistoryRecord(namespace, AlertHistoryEntry(**v)),
    ),
    "agent": _Shape(
        {
            "uri": field.text,
            "position": field.at_least(1),
            "name": field.text,
            "version": field.text,
            "status": field.member(AgentStatus),
            "visibility": field.member(AgentVisibility),
            "owner": field.text,
            "configuration": field.optional(field.json_object),
            "update_time": field.number,
        },
        _agent,
    ),
    "manifest": _Shape(
        {
            "handler_id": field.text,
            "version": field.text,
            "created_at": field.integer,
            "document": field.json_object,
        },
        lambda namespace, v: ManifestRecord(namespace, HandlerManifestRecord(**v)),
    ),
    "transformer": _Shape(
        {
            "id": field.text,
            "handler_id": field.text,
            "from_version": field.text,
            "to_version": field.text,
            "document": field.json_object,
        },
        lambda namespace, v: ManifestTransformerRecord(namespace, TransformerRecord(**v)),
    ),
    **{kind.value: _Shape(_DOCUMENT_FIELDS, _manifest_document(kind)) for kind in ManifestDocumentKind},
}


def decode_record(line: object, number: int) -> TransferRecord:
    """Return the record of a parsed line; raise FormatError naming the line and what is wrong with it."""
    if not isinstance(line, dict):
        raise FormatError(number, "a line must hold a JSON object")
    kind = line.get("kind")
    shape = _SHAPES.get(kind) if isinstance(kind, str) else None
    if shape is None:
        raise FormatError(number, f"unknown record kind {kind!r}")
    fields = shape.fields
    if line.keys() != shape.keys:
        missing, unknown = sorted(shape.keys - set(line)), sorted(set(line) - shape.keys)
        problems = [f"missing field(s) {', '.join(missing)}"] if missing else []
        problems += [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        raise FormatError(number, f"{kind}: {'; '.join(problems)}")
    name = "namespace"
    try:
        namespace = field.namespace_name(field.text(line[name]))
        values: dict[str, Any] = {}
        for name, check in fields.items():
            values[name] = check(line[name])
    except field.Invalid as error:
        raise FormatError(number, f"{kind}: field {name!r} {error}") from None
    return shape.build(namespace, values)


_INNER: dict[type, str] = {
    DocumentRecord: "document",
    JobRecord: "job",
    EventRecord: "event",
    SessionRecord: "session",
    EventAgentRecord: "agent",
    AlertRuleRecord: "rule",
    AlertHistoryRecord: "entry",
    AgentRecord: "agent",
    ManifestRecord: "manifest",
    ManifestTransformerRecord: "transformer",
}
"""The attribute holding a record's domain object, whose fields its line carries (with the record's own)."""

_ABSENT = object()


def _plain(value: Any) -> Any:
    """Return a field's value as JSON carries it."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple):
        return list(value)
    return value


def encode_record(record: TransferRecord) -> dict[str, Any]:
    """Return the JSON object of a record's line: the fields its kind's shape names, in that order."""
    if isinstance(record, ManifestDocumentRecord):
        key_id, version = record.key
        return {
            "kind": record.kind.value,
            "namespace": record.namespace,
            "id": key_id,
            "version": version,
            "document": record.document,
        }
    kind = _KINDS[type(record)]
    inner = getattr(record, _INNER[type(record)]) if type(record) in _INNER else record
    line: dict[str, Any] = {"kind": kind, "namespace": record.namespace}
    for name in _SHAPES[kind].fields:
        value = getattr(inner, name, _ABSENT)
        line[name] = _plain(getattr(record, name) if value is _ABSENT else value)
    if kind == "job":
        for name in _JOB_INSTANTS:
            if line[name] is not None:
                line[name] = line[name] / MICROS
    return line


def header(*, source: str, namespace: str | None, created_at: str, stord_version: str) -> dict[str, Any]:
    """Return the first line of an export."""
    return {
        "kind": HEADER,
        "format": FORMAT,
        "version": VERSION,
        "created_at": created_at,
        "stord_version": stord_version,
        "source": source,
        "namespace": namespace,
    }


def check_header(line: object) -> None:
    """Raise FormatError unless `line` (the first, parsed) is the header of a version this stord reads."""
    if not isinstance(line, dict) or line.get("kind") != HEADER or line.get("format") != FORMAT:
        raise FormatError(1, f"not a stord export: the first line must be its header ({FORMAT!r})")
    if line.get("version") != VERSION:
        raise FormatError(
            1, f"format version {line.get('version')!r}: this stord reads version {VERSION} only"
        )


def footer(counts: Mapping[str, int]) -> dict[str, Any]:
    """Return the last line of an export: how many records of each kind it holds."""
    return {"kind": FOOTER, "records": sum(counts.values()), "counts": dict(counts)}


def check_footer(line: Mapping[str, Any], number: int, counts: Mapping[str, int]) -> None:
    """Raise FormatError unless the footer's counts are those of the records read before it."""
    read = {kind: count for kind, count in counts.items() if count}
    claimed = line.get("counts")
    if set(line) != {"kind", "records", "counts"} or not isinstance(claimed, dict):
        raise FormatError(number, "footer: must hold exactly `records` and `counts`")
    claimed = {kind: count for kind, count in claimed.items() if count}
    if claimed != read or line["records"] != sum(read.values()):
        raise FormatError(
            number,
            f"footer: the file should hold {line['records']!r} records {claimed!r} but holds"
            f" {sum(read.values())} {read!r}: it is damaged",
        )
