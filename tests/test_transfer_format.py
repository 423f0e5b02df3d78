"""The export format (stord.server.transfer): every kind of line round-trips, and bad lines are named."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from stord.server.jobs.port import JobStatus
from stord.server.transfer import FORMAT, VERSION, FormatError
from stord.server.transfer._format import RECORD_KINDS, decode_record, encode_record
from stord.server.transfer._run import _Reader
from stord.server.transfer.port import EventRecord, JobRecord

HASH = "ab" * 32

LINES: list[dict[str, Any]] = [
    {"keyspace": "cache", "key": "k", "value": "AP8=", "expires_at": 1.5},
    {"keyspace": "database", "key": "log", "position": 0, "value": "eA=="},
    {"collection": "c", "id": "d", "revision": 2, "create_time": 1.25, "update_time": 2.5, "data": {"a": []}},
    {
        "id": "j", "queue": "q", "sequence": 7, "status": "running", "priority": -1, "run_at": 3.5,
        "attempts": 1, "max_attempts": 3, "dedupe_key": None, "payload": {}, "last_error": "x",
        "lease_token": "t", "lease_expires_at": 9.75, "create_time": 1.0, "update_time": 2.0,
    },
    {
        "id": "e", "timestamp": 1717372800000, "session_id": "s", "agent_id": "a", "event_type": "tool_call",
        "severity": "info", "payload": '{"b":1,"a":2}', "metadata": "{}", "prev_hash": None, "hash": HASH,
        "chain_index": 0,
    },
    {
        "id": "s", "agent_id": "a", "agent_name": None, "started_at": 1, "ended_at": None, "status": "active",
        "event_count": 1, "tool_call_count": 1, "error_count": 0, "total_cost_usd": 0.5, "tags": ["t"],
        "chain_length": 1, "last_hash": HASH,
    },
    {"id": "a", "name": "A", "description": None, "first_seen_at": 1, "last_seen_at": 2, "session_count": 0},
    {
        "id": "r", "name": "R", "enabled": True, "condition": "cost_exceeds", "threshold": 2.5,
        "window_minutes": 5, "scope_agent_id": None, "scope_tags": [], "notify_channels": ["p"],
        "created_at": 1, "updated_at": 2,
    },
    {
        "id": "h", "rule_id": "r", "triggered_at": 1, "resolved_at": None, "current_value": 3.0,
        "threshold": 2.5, "message": "m",
    },
    {
        "uri": "agent://x", "position": 3, "name": "X", "version": "1", "status": "inactive",
        "visibility": "private", "owner": "alice", "configuration": {"k": None}, "update_time": 4.5,
    },
    {"handler_id": "h", "version": "1.0", "created_at": 1_700_000_000_123_456_789, "document": {"p": "/"}},
    {"id": "t", "handler_id": "h", "from_version": "1", "to_version": "2", "document": {"hash": "x"}},
    {"id": "h", "version": "", "document": {"hooks": []}},
    {"id": "T", "version": "", "document": {"object": {}}},
    {"id": "h", "version": "", "document": {"versions": []}},
    {"id": "h", "version": "2", "document": {"fingerprint": "f"}},
]  # fmt: skip


def _line(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "namespace": "shop", **fields}


SAMPLES = [_line(kind, fields) for kind, fields in zip(RECORD_KINDS, LINES, strict=True)]


@pytest.mark.parametrize("line", SAMPLES, ids=RECORD_KINDS)
def test_every_kind_of_line_decodes_and_encodes_back_unchanged(line: dict[str, Any]) -> None:
    record = decode_record(json.loads(json.dumps(line)), 2)
    assert record.namespace == "shop"
    assert encode_record(record) == line
    assert list(encode_record(record)) == list(line)  # the same fields in the same order


def test_decoding_gives_the_domain_values() -> None:
    job = decode_record(SAMPLES[3], 2)
    event = decode_record(SAMPLES[4], 2)
    assert isinstance(job, JobRecord)
    assert job.job.status is JobStatus.RUNNING
    assert isinstance(event, EventRecord)
    assert event.event.payload == '{"b":1,"a":2}'  # the hashed text, not a re-serialized object


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hash": None}, "event: field 'hash' must be a string"),
        ({"chain_index": -1}, "event: field 'chain_index' must be at least 0"),
        ({"timestamp": True}, "event: field 'timestamp' must be an integer"),
        ({"severity": "loud"}, "event: field 'severity' must be one of debug, info, warn, error, critical"),
        ({"namespace": "-x"}, "event: field 'namespace' is not a valid namespace"),
        ({"extra": 1}, "event: unknown field(s) extra"),
        ({"kind": "events"}, "unknown record kind 'events'"),
    ],
)
def test_a_bad_line_is_named_with_what_is_wrong(change: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=r"^line 9: ") as caught:
        decode_record({**SAMPLES[4], **change}, 9)
    assert message in str(caught.value)


def test_missing_fields_and_bad_values_of_other_kinds() -> None:
    missing = {key: value for key, value in SAMPLES[0].items() if key != "expires_at"}
    with pytest.raises(FormatError, match="kv_value: missing field\\(s\\) expires_at"):
        decode_record(missing, 3)
    with pytest.raises(FormatError, match="field 'value' must be standard base64"):
        decode_record({**SAMPLES[0], "value": "***"}, 3)
    with pytest.raises(FormatError, match="field 'threshold' must be a finite number"):
        decode_record({**SAMPLES[7], "threshold": "1"}, 3)
    with pytest.raises(FormatError, match="field 'tags' must be a list of strings"):
        decode_record({**SAMPLES[5], "tags": ["a", 1]}, 3)


def _export(*lines: dict[str, Any] | str) -> io.BytesIO:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return io.BytesIO(text.encode())


HEADER = {"kind": "header", "format": FORMAT, "version": VERSION}


def test_a_whole_file_reads_in_batches_up_to_its_footer() -> None:
    footer = {"kind": "footer", "records": 2, "counts": {"kv_value": 1, "event": 1}}
    batches = list(_Reader(_export(HEADER, SAMPLES[0], "", SAMPLES[4], footer, "")).batches())
    assert [record.namespace for batch in batches for record in batch] == ["shop", "shop"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "line 1: the input is empty"),
        (({"kind": "header", "format": "other"},), "line 1: not a stord export"),
        (({**HEADER, "version": VERSION + 1},), f"line 1: format version {VERSION + 1}"),
        ((HEADER, SAMPLES[0]), "line 2: the input ends without its footer line"),
        ((HEADER, SAMPLES[0], "{"), "line 3: not valid JSON"),
        (
            (HEADER, SAMPLES[0], {"kind": "footer", "records": 2, "counts": {"kv_value": 2}}),
            "line 3: footer: the file should hold 2 records",
        ),
        (
            (HEADER, {"kind": "footer", "records": 0, "counts": {}}, SAMPLES[0]),
            "line 3: a line after the footer (line 2)",
        ),
    ],
    ids=["empty", "foreign", "version", "cut", "json", "counts", "after"],
)
def test_a_damaged_file_is_refused_naming_the_line(lines: tuple[Any, ...], message: str) -> None:
    with pytest.raises(FormatError) as caught:
        list(_Reader(_export(*lines)).batches())
    assert str(caught.value).startswith(message)
