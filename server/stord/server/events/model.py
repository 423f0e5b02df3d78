"""Event store rules all backends share: payload facts, ids, filters, and what a batch does to sessions.

`ingest.link_batch` folds a batch into one `SessionChange` per session and one `AgentChange` per agent;
backends apply them in the transaction that stores the batch, in SQL or in dicts (`apply_session_change`,
`apply_agent_change`), so derived sessions and agents follow the same rules everywhere (DESIGN 4.4).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stord.server.events.chain import ChainHead
from stord.server.events.port import (
    Event,
    EventAgent,
    EventFilter,
    EventType,
    Session,
    SessionStatus,
    Severity,
)

__all__ = [
    "AgentChange",
    "SessionChange",
    "analytics_bucket",
    "apply_agent_change",
    "apply_session_change",
    "counts_as_error",
    "matches",
    "new_ulid",
    "payload_facts",
    "search_pattern",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ERROR_SEVERITIES = frozenset({Severity.ERROR, Severity.CRITICAL})
_HOUR_MS = 3_600_000
_BUCKET_WIDTHS = {"hour": _HOUR_MS, "day": 24 * _HOUR_MS, "week": 7 * 24 * _HOUR_MS}
_WEEK_ORIGIN_MS = -3 * 24 * _HOUR_MS
"""Monday 1969-12-29 00:00 UTC: weeks start on Mondays (ISO weeks), days and hours at the epoch's grid."""


def new_ulid(now_ms: int) -> str:
    """Return a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32 (26 characters)."""
    value = (now_ms % (1 << 48)) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def payload_facts(event_type: EventType, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return the EventInput facts a payload holds, as keyword arguments."""
    facts: dict[str, Any] = {}
    name = payload.get("agentName")
    if isinstance(name, str) and name:
        facts["agent_name"] = name
    if event_type is EventType.COST_TRACKED:
        facts["cost_usd"] = _number(payload.get("costUsd"))
    elif event_type is EventType.TOOL_RESPONSE:
        facts["latency_ms"] = _number(payload.get("durationMs"))
    elif event_type is EventType.SESSION_STARTED:
        tags = payload.get("tags")
        if isinstance(tags, list):
            facts["tags"] = tuple(tag for tag in tags if isinstance(tag, str))
    elif event_type is EventType.SESSION_ENDED:
        facts["ends_in_error"] = payload.get("reason") == "error"
    return facts


def counts_as_error(event_type: EventType, severity: Severity) -> bool:
    """Return whether an event counts in error_count: severity error or critical, or a tool_error."""
    return severity in _ERROR_SEVERITIES or event_type is EventType.TOOL_ERROR


def analytics_bucket(timestamp: int, granularity: str) -> int:
    """Return the start of the bucket holding `timestamp`: the hour, the UTC day, or the ISO week."""
    width = _BUCKET_WIDTHS[granularity]
    origin = _WEEK_ORIGIN_MS if granularity == "week" else 0
    return timestamp - (timestamp - origin) % width


def search_pattern(search: str) -> str:
    """Return the LIKE pattern (escape character `\\`) that finds `search` anywhere, `%` and `_` literal."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def matches(event_filter: EventFilter, event: Event) -> bool:
    """Return whether an event passes the filter, as the SQL backends decide it."""
    f = event_filter
    return (
        (f.session_id is None or event.session_id == f.session_id)
        and (f.agent_id is None or event.agent_id == f.agent_id)
        and (not f.event_types or event.event_type in f.event_types)
        and (not f.severities or event.severity in f.severities)
        and (f.from_time is None or event.timestamp >= f.from_time)
        and (f.to_time is None or event.timestamp <= f.to_time)
        and (f.search is None or f.search.translate(_ASCII_LOWER) in event.payload.translate(_ASCII_LOWER))
    )


@dataclass(slots=True)
class SessionChange:
    """What one batch does to one session: counters to add, and the values its events set last."""

    session_id: str
    agent_id: str
    """The agent of the batch's first event of the session: a new session's agent."""
    first_timestamp: int
    head: ChainHead
    event_count: int = 0
    tool_call_count: int = 0
    error_count: int = 0
    cost_usd: float = 0.0
    agent_name: str | None = None
    tags: tuple[str, ...] | None = None
    status: SessionStatus | None = None
    ended_at: int | None = None


def apply_session_change(session: Session | None, change: SessionChange) -> Session:
    """Return the session after the change; a new one when `session` is None."""
    if session is None:
        return Session(
            id=change.session_id,
            agent_id=change.agent_id,
            agent_name=change.agent_name,
            started_at=change.first_timestamp,
            ended_at=change.ended_at,
            status=change.status or SessionStatus.ACTIVE,
            event_count=change.event_count,
            tool_call_count=change.tool_call_count,
            error_count=change.error_count,
            total_cost_usd=change.cost_usd,
            tags=change.tags or (),
        )
    return Session(
        id=session.id,
        agent_id=session.agent_id,
        agent_name=change.agent_name or session.agent_name,
        started_at=min(session.started_at, change.first_timestamp),
        ended_at=session.ended_at if change.ended_at is None else change.ended_at,
        status=change.status or session.status,
        event_count=session.event_count + change.event_count,
        tool_call_count=session.tool_call_count + change.tool_call_count,
        error_count=session.error_count + change.error_count,
        total_cost_usd=session.total_cost_usd + change.cost_usd,
        tags=session.tags if change.tags is None else change.tags,
    )


@dataclass(slots=True)
class AgentChange:
    """What one batch does to one agent."""

    agent_id: str
    first_seen_at: int
    last_seen_at: int
    name: str | None = None
    """The first agentName of the batch's events: a new agent's name (else its id)."""
    sessions_started: int = 0


def apply_agent_change(agent: EventAgent | None, change: AgentChange) -> EventAgent:
    """Return the agent after the change; a new one when `agent` is None."""
    if agent is None:
        return EventAgent(
            id=change.agent_id,
            name=change.name or change.agent_id,
            description=None,
            first_seen_at=change.first_seen_at,
            last_seen_at=change.last_seen_at,
            session_count=change.sessions_started,
        )
    return EventAgent(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        first_seen_at=min(agent.first_seen_at, change.first_seen_at),
        last_seen_at=max(agent.last_seen_at, change.last_seen_at),
        session_count=agent.session_count + change.sessions_started,
    )
