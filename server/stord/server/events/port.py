"""The event store port (DESIGN 4.4): the EventStore Protocol and its domain types."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Only for annotations: stord.server.ports re-exports this module, so importing it here would be a cycle.
    from stord.server.ports._base import Clock

# Times are integers: milliseconds since the epoch, UTC. Payloads and metadata are canonical JSON text.


class EventType(enum.Enum):
    """What an event records; the values are the original's names, which the hash chain covers."""

    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"
    TOOL_CALL = "tool_call"
    TOOL_RESPONSE = "tool_response"
    TOOL_ERROR = "tool_error"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    FORM_SUBMITTED = "form_submitted"
    FORM_COMPLETED = "form_completed"
    FORM_EXPIRED = "form_expired"
    COST_TRACKED = "cost_tracked"
    ALERT_TRIGGERED = "alert_triggered"
    ALERT_RESOLVED = "alert_resolved"
    CUSTOM = "custom"


class Severity(enum.Enum):
    """How much an event matters; the values are the original's names."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"
    CRITICAL = "critical"


class SessionStatus(enum.Enum):
    """Where a session stands."""

    ACTIVE = "active"
    COMPLETED = "completed"
    ERROR = "error"


class Granularity(enum.Enum):
    """The width of an analytics bucket."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


class AlertCondition(enum.Enum):
    """What an alert rule watches."""

    ERROR_RATE_EXCEEDS = "error_rate_exceeds"
    COST_EXCEEDS = "cost_exceeds"
    LATENCY_EXCEEDS = "latency_exceeds"
    EVENT_COUNT_EXCEEDS = "event_count_exceeds"
    NO_EVENTS_FOR = "no_events_for"


@dataclass(slots=True)
class EventInput:
    """A validated event for the store to link into its session's chain and store; treat it as immutable.

    Not frozen, like Event: both are built once per event on the ingest path, where a frozen dataclass's
    constructor costs about as much as hashing the event.

    `claims_prev_hash` says whether `prev_hash` is a claim to check (None claiming the session's first
    event) or absent, asking the store to link. `hash`, when given, is checked against the computed one. The
    remaining fields are facts read from the payload once, for the derived sessions and analytics.
    """

    id: str
    timestamp: int
    session_id: str
    agent_id: str
    event_type: EventType
    severity: Severity
    payload: str
    metadata: str
    claims_prev_hash: bool = False
    prev_hash: str | None = None
    hash: str | None = None
    cost_usd: float | None = None
    """payload.costUsd of a cost_tracked event."""
    latency_ms: float | None = None
    """payload.durationMs of a tool_response event."""
    agent_name: str | None = None
    """payload.agentName."""
    tags: tuple[str, ...] = ()
    """payload.tags of a session_started event."""
    ends_in_error: bool = False
    """True for a session_ended event whose payload.reason is "error"."""


@dataclass(slots=True)
class Event:
    """A stored event: `prev_hash` None for its chain's first, `chain_index` its position from 0.

    Treat it as immutable (not frozen for speed, see EventInput).
    """

    id: str
    timestamp: int
    session_id: str
    agent_id: str
    event_type: EventType
    severity: Severity
    payload: str
    metadata: str
    prev_hash: str | None
    hash: str
    chain_index: int


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to select; every condition given must hold. Times inclusive."""

    session_id: str | None = None
    agent_id: str | None = None
    event_types: frozenset[EventType] = frozenset()
    severities: frozenset[Severity] = frozenset()
    from_time: int | None = None
    to_time: int | None = None
    search: str | None = None
    """Text the payload's JSON contains; A-Z and a-z match each other, `%` and `_` are plain."""


@dataclass(frozen=True, slots=True)
class EventPosition:
    """A place in the (timestamp, id) order of events, to resume a listing after it."""

    timestamp: int
    id: str


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A page of filtered events: after `after` (in the query's order) or skipping `offset`."""

    filter: EventFilter
    descending: bool
    limit: int
    offset: int = 0
    after: EventPosition | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """Up to the query's limit of events, and how many match over every page."""

    events: list[Event]
    total: int


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    """What a batch stored, in batch order, and how many of its events were stored already."""

    stored: list[Event]
    duplicates: int
    feed_position: int = 0
    """The batch's position in its namespace's event feed; 0 when it stored nothing (and is not in it)."""


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """The new events of one committed batch, in batch order, at its position in the namespace's feed.

    Positions count a namespace's batches from 1 in commit order, without gaps, whichever process committed
    them. An event deleted by retention since its batch committed is left out.
    """

    position: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Committed batches after a position, in order; `missed` when some of them can no longer be read.

    The feed keeps batches for a while (minutes), long enough for every follower to read them; `missed` says
    that batches right after the position were pruned (or the feed went back, as after restoring a backup),
    so a follower at that position cannot deliver everything any more.
    """

    batches: list[FeedBatch]
    missed: bool = False


FEED_KEEP_SECONDS = 300.0
"""How long a store keeps a committed batch in its event feed: far longer than followers take to read it,
even across a database restart."""

CommitListener = Callable[[str | None, int], None]
"""Told, on the event loop, that a batch may have been committed: its namespace and feed position, or
(None, 0) when any namespace's feed may have grown (after a reconnect, or when the store cannot tell)."""


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """The result of checking a session's stored chain."""

    valid: bool
    checked_events: int
    first_chain_index: int
    broken_event_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A session, derived from its events or upserted."""

    id: str
    agent_id: str
    agent_name: str | None
    started_at: int
    ended_at: int | None
    status: SessionStatus
    event_count: int
    tool_call_count: int
    error_count: int
    total_cost_usd: float
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """Fields to write on a session, creating it: only the names in `written` change an existing one.

    Names: agent_id, agent_name, started_at, ended_at, status, tags. A new session takes every value given
    here, whatever `written` says.
    """

    id: str
    written: frozenset[str]
    agent_id: str = ""
    agent_name: str | None = None
    started_at: int = 0
    ended_at: int | None = None
    status: SessionStatus = SessionStatus.ACTIVE
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """A page of sessions, newest started_at first, ties by id descending."""

    agent_id: str | None
    statuses: frozenset[SessionStatus]
    from_time: int | None
    to_time: int | None
    tags: frozenset[str]
    """Sessions carrying any of these tags; empty selects every session."""
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class SessionPage:
    """Up to the query's limit of sessions, and how many match over every page."""

    sessions: list[Session]
    total: int


@dataclass(frozen=True, slots=True)
class EventAgent:
    """An agent of the event store, derived from its events or upserted."""

    id: str
    name: str
    description: str | None
    first_seen_at: int
    last_seen_at: int
    session_count: int


@dataclass(frozen=True, slots=True)
class EventAgentUpdate:
    """Fields to write on an agent, creating it (seen at `now`); only names in `written` change one."""

    id: str
    written: frozenset[str]
    """Among name and description."""
    name: str
    description: str | None
    now: int


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    """Events of [from_time, to_time], optionally of one agent, bucketed by `granularity`."""

    from_time: int
    to_time: int
    agent_id: str | None
    granularity: Granularity


@dataclass(frozen=True, slots=True)
class AnalyticsFigures:
    """The figures of a bucket or of a whole range (DESIGN 4.4, as the original defines them)."""

    event_count: int
    tool_call_count: int
    error_count: int
    avg_latency_ms: float
    total_cost_usd: float
    unique_sessions: int


@dataclass(frozen=True, slots=True)
class Analytics:
    """Non-empty buckets by start time, and the range's totals with its number of distinct agents."""

    buckets: list[tuple[int, AnalyticsFigures]]
    totals: AnalyticsFigures
    unique_agents: int


@dataclass(frozen=True, slots=True)
class AlertRule:
    """When to raise an alert; the caller evaluates it."""

    id: str
    name: str
    enabled: bool
    condition: AlertCondition
    threshold: float
    window_minutes: int
    scope_agent_id: str | None
    scope_tags: tuple[str, ...]
    notify_channels: tuple[str, ...]
    created_at: int
    updated_at: int


ALERT_RULE_FIELDS = frozenset(
    {"name", "enabled", "condition", "threshold", "window_minutes", "scope", "notify_channels"}
)
"""The fields of an alert rule an update may write; `scope` covers scope_agent_id and scope_tags."""


@dataclass(frozen=True, slots=True)
class AlertHistoryEntry:
    """One alert raised by a rule."""

    id: str
    rule_id: str
    triggered_at: int
    resolved_at: int | None
    current_value: float
    threshold: float
    message: str


@dataclass(frozen=True, slots=True)
class AlertHistoryPage:
    """Up to the query's limit of entries, and how many match over every page."""

    entries: list[AlertHistoryEntry]
    total: int


@dataclass(frozen=True, slots=True)
class RetentionOutcome:
    """What retention deleted."""

    deleted_events: int
    deleted_sessions: int


@dataclass(frozen=True, slots=True)
class EventStats:
    """What a namespace holds; `storage_size_bytes` is the whole store's, every namespace together."""

    total_events: int
    total_sessions: int
    total_agents: int
    oldest_event_at: int | None
    newest_event_at: int | None
    storage_size_bytes: int


class EventStore(Protocol):
    """Hash-chained agent events with derived sessions and agents, analytics and alert rules (DESIGN 4.4).

    Arguments arrive validated. Events are append-only but for retention. Each session's chain is decided
    inside the transaction that stores a batch, so concurrent writers, in this process or another one on the
    same database, extend it one after the other.
    """

    @property
    def clock(self) -> Clock:
        """The clock the store's callers take `now` from."""
        ...

    async def insert_events(self, namespace: str, events: Sequence[EventInput]) -> InsertOutcome:
        """Store the batch, all or nothing, skipping events whose id is stored already.

        Each new event is linked after its session's last one; a claimed prev_hash or hash that does not
        match raises FailedPrecondition naming the event. Sessions and agents are updated in the same
        transaction, and so is the namespace's event feed, which gets the batch's new events (if any) at
        the next position. Ids are unique within the batch.
        """
        ...

    async def feed_position(self, namespace: str) -> int:
        """Return the position of the namespace's newest committed batch in its feed; 0 before the first."""
        ...

    async def read_feed(self, namespace: str, *, after: int, limit: int) -> FeedPage:
        """Return up to `limit` of the namespace's committed batches after position `after`, in order."""
        ...

    def watch_feed(self, listener: CommitListener) -> AbstractAsyncContextManager[None]:
        """While the context is open, tell `listener` about batches committed by any process on the store.

        A notice may come for a batch already read, or for nothing new; a batch is never left out: the
        listener hears (None, 0) once the watch is live, and again whenever the store may have missed some
        (a reconnect), so that a follower reading the feed after its position from then on misses nothing.
        """
        ...

    async def get_event(self, namespace: str, event_id: str) -> Event | None:
        """Return one event, or None."""
        ...

    async def query_events(self, namespace: str, query: EventQuery) -> EventPage:
        """Return a page of matching events by (timestamp, id), and the number of matches."""
        ...

    async def count_events(self, namespace: str, event_filter: EventFilter) -> int:
        """Count the matching events."""
        ...

    async def session_timeline(
        self, namespace: str, session_id: str, *, after: EventPosition | None, limit: int
    ) -> list[Event]:
        """Return up to `limit` of the session's events after `after`, by ascending (timestamp, id)."""
        ...

    async def verify_chain(self, namespace: str, session_id: str) -> ChainVerification | None:
        """Check the session's stored chain; None when the session does not exist."""
        ...

    async def upsert_session(self, namespace: str, update: SessionUpdate) -> Session:
        """Create the session or write the fields named in `update.written`; return it."""
        ...

    async def get_session(self, namespace: str, session_id: str) -> Session | None:
        """Return one session, or None."""
        ...

    async def query_sessions(self, namespace: str, query: SessionQuery) -> SessionPage:
        """Return a page of matching sessions and the number of matches."""
        ...

    async def upsert_agent(self, namespace: str, update: EventAgentUpdate) -> EventAgent:
        """Create the agent or write the fields named in `update.written`; return it."""
        ...

    async def get_agent(self, namespace: str, agent_id: str) -> EventAgent | None:
        """Return one agent, or None."""
        ...

    async def list_agents(self, namespace: str, *, after: str | None, limit: int) -> list[EventAgent]:
        """Return up to `limit` agents with an id above `after`, by id."""
        ...

    async def analytics(self, namespace: str, query: AnalyticsQuery) -> Analytics:
        """Aggregate the range's events."""
        ...

    async def create_alert_rule(self, namespace: str, rule: AlertRule) -> None:
        """Store a new rule; AlreadyExists when its id is taken."""
        ...

    async def get_alert_rule(self, namespace: str, rule_id: str) -> AlertRule | None:
        """Return one rule, or None."""
        ...

    async def update_alert_rule(self, namespace: str, rule: AlertRule, written: frozenset[str]) -> AlertRule:
        """Write the fields named in `written` (ALERT_RULE_FIELDS) and updated_at; NotFound when missing."""
        ...

    async def delete_alert_rule(self, namespace: str, rule_id: str) -> bool:
        """Remove a rule, keeping its history; return whether it existed."""
        ...

    async def list_alert_rules(self, namespace: str, *, after: str | None, limit: int) -> list[AlertRule]:
        """Return up to `limit` rules with an id above `after`, by id."""
        ...

    async def record_alert(self, namespace: str, entry: AlertHistoryEntry) -> None:
        """Add a history entry; NotFound when its rule does not exist, AlreadyExists when its id is taken."""
        ...

    async def list_alert_history(
        self, namespace: str, *, rule_id: str | None, offset: int, limit: int
    ) -> AlertHistoryPage:
        """Return a page of entries, newest triggered_at first (ties by id descending), and the total."""
        ...

    async def apply_retention(self, namespace: str | None, cutoff: int) -> RetentionOutcome:
        """Delete events at or before `cutoff`, then sessions started by then with no event left.

        `namespace` None applies it to every namespace (the daemon's daily pass).
        """
        ...

    async def stats(self, namespace: str) -> EventStats:
        """Count what the namespace holds."""
        ...
