"""The event store (DESIGN 4.4) in dicts per namespace, for tests and the memory database."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stord.server.events.chain import ChainHead, verify_chain
from stord.server.events.ingest import EventRow, store_batch
from stord.server.events.model import (
    AgentChange,
    SessionChange,
    analytics_bucket,
    apply_agent_change,
    apply_session_change,
    counts_as_error,
    matches,
)
from stord.server.events.port import (
    FEED_KEEP_SECONDS,
    AlertHistoryEntry,
    AlertHistoryPage,
    AlertRule,
    Analytics,
    AnalyticsFigures,
    AnalyticsQuery,
    ChainVerification,
    CommitListener,
    Event,
    EventAgent,
    EventAgentUpdate,
    EventFilter,
    EventInput,
    EventPage,
    EventPosition,
    EventQuery,
    EventStats,
    EventType,
    FeedBatch,
    FeedPage,
    InsertOutcome,
    RetentionOutcome,
    Session,
    SessionPage,
    SessionQuery,
    SessionUpdate,
    Severity,
)
from stord.server.ports import AlreadyExists, Clock, NotFound

_Row = TypeVar("_Row")

# Every method runs to completion without awaiting, so each is atomic on the event loop and needs no lock.


@dataclass(slots=True)
class _Record:
    """A stored event and the payload facts analytics reads."""

    event: Event
    cost_usd: float | None
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class _FeedEntry:
    position: int
    committed_at: float
    events: list[Event]


@dataclass(slots=True)
class _Space:
    records: dict[str, _Record] = field(default_factory=dict)
    """By id, in the order they were stored."""
    feed: deque[_FeedEntry] = field(default_factory=deque)
    """The batches committed in the last FEED_KEEP_SECONDS, by position (consecutive)."""
    feed_head: int = 0
    sessions: dict[str, Session] = field(default_factory=dict)
    heads: dict[str, ChainHead] = field(default_factory=dict)
    agents: dict[str, EventAgent] = field(default_factory=dict)
    rules: dict[str, AlertRule] = field(default_factory=dict)
    history: dict[str, AlertHistoryEntry] = field(default_factory=dict)


_EMPTY = _Space()
"""What reads see of a namespace that holds nothing; never written to."""


def _position(event: Event) -> tuple[int, str]:
    return event.timestamp, event.id


def _page(events: list[Event], query: EventQuery) -> list[Event]:
    events.sort(key=_position, reverse=query.descending)
    if query.after is not None:
        after = (query.after.timestamp, query.after.id)
        events = [
            event
            for event in events
            if (_position(event) < after if query.descending else _position(event) > after)
        ]
    return events[query.offset : query.offset + query.limit]


def _figures(records: Sequence[_Record]) -> AnalyticsFigures:
    latencies = [record.latency_ms for record in records if record.latency_ms is not None]
    return AnalyticsFigures(
        event_count=len(records),
        tool_call_count=sum(record.event.event_type is EventType.TOOL_CALL for record in records),
        error_count=sum(
            counts_as_error(record.event.event_type, record.event.severity) for record in records
        ),
        avg_latency_ms=sum(latencies) / len(latencies) if latencies else 0.0,
        total_cost_usd=sum(record.cost_usd or 0.0 for record in records),
        unique_sessions=len({record.event.session_id for record in records}),
    )


class _IngestTransaction:
    """The primitives of ingest.store_batch over a namespace's dicts.

    A batch runs to completion without awaiting, so it is atomic on the event loop; a primitive that fails
    changes nothing (insert_events checks every id first).
    """

    def __init__(self, space: _Space, now: float, feed_keep_seconds: float) -> None:
        self._space = space
        self._now = now
        self._feed_keep_seconds = feed_keep_seconds

    def chain_heads(self, session_ids: Sequence[str]) -> dict[str, ChainHead]:
        heads = self._space.heads
        return {session_id: heads[session_id] for session_id in session_ids if session_id in heads}

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        return {event_id for event_id in event_ids if event_id in self._space.records}

    def insert_events(self, rows: Sequence[EventRow]) -> bool:
        records = self._space.records
        if any(row[1] in records for row in rows):
            return False
        for row in rows:
            event = Event(row[1], row[2], row[3], row[4], EventType(row[5]), Severity(row[6]), *row[7:12])
            records[event.id] = _Record(event, row[12], row[13])
        return True

    def upsert_sessions(self, changes: Sequence[SessionChange]) -> None:
        sessions = self._space.sessions
        for change in changes:
            sessions[change.session_id] = apply_session_change(sessions.get(change.session_id), change)
            self._space.heads[change.session_id] = change.head

    def upsert_agents(self, changes: Sequence[AgentChange]) -> None:
        agents = self._space.agents
        for change in changes:
            agents[change.agent_id] = apply_agent_change(agents.get(change.agent_id), change)

    def update_rollups(self, event_ids: Sequence[str]) -> None:
        pass  # memory answers analytics by scanning its events: there are no rollups to keep

    def append_to_feed(self, events: list[Event]) -> int:
        space, now = self._space, self._now
        space.feed_head += 1
        space.feed.append(_FeedEntry(space.feed_head, now, events))
        while space.feed[0].committed_at < now - self._feed_keep_seconds:
            space.feed.popleft()
        return space.feed_head


class MemoryEventStore:
    """Events, sessions, agents and alert rules in dicts, per namespace."""

    def __init__(self, clock: Clock, *, feed_keep_seconds: float = FEED_KEEP_SECONDS) -> None:
        self._clock = clock
        self._namespaces: dict[str, _Space] = {}
        self._feed_keep_seconds = feed_keep_seconds
        self._listeners: list[CommitListener] = []

    @property
    def clock(self) -> Clock:
        return self._clock

    def _space(self, namespace: str) -> _Space:
        space = self._namespaces.get(namespace)
        if space is None:
            space = self._namespaces[namespace] = _Space()
        return space

    def _view(self, namespace: str) -> _Space:
        return self._namespaces.get(namespace) or _EMPTY

    def spaces(self) -> list[tuple[str, _Space]]:
        """Return every namespace's data, for the alert state store beside this one."""
        return list(self._namespaces.items())

    def history(self, namespace: str) -> dict[str, AlertHistoryEntry]:
        """Return a namespace's alert history by id, for the alert state store to resolve entries."""
        return self._view(namespace).history

    async def insert_events(self, namespace: str, events: Sequence[EventInput]) -> InsertOutcome:
        space = self._space(namespace)
        outcome = store_batch(
            _IngestTransaction(space, self._clock(), self._feed_keep_seconds), namespace, events
        )
        if outcome.stored:
            for listener in list(self._listeners):
                listener(namespace, outcome.feed_position)
        return outcome

    async def feed_position(self, namespace: str) -> int:
        return self._view(namespace).feed_head

    async def read_feed(self, namespace: str, *, after: int, limit: int) -> FeedPage:
        space = self._view(namespace)
        oldest = space.feed[0].position if space.feed else space.feed_head + 1
        start = max(after + 1 - oldest, 0)
        batches = [
            FeedBatch(entry.position, list(entry.events))
            for entry in itertools.islice(space.feed, start, start + limit)
        ]
        return FeedPage(batches, missed=after > space.feed_head or after + 1 < oldest)

    @contextlib.asynccontextmanager
    async def watch_feed(self, listener: CommitListener) -> AsyncIterator[None]:
        # One process owns the data: every commit is told about by insert_events itself.
        self._listeners.append(listener)
        try:
            listener(None, 0)
            yield
        finally:
            self._listeners.remove(listener)

    async def get_event(self, namespace: str, event_id: str) -> Event | None:
        record = self._view(namespace).records.get(event_id)
        return None if record is None else record.event

    def _matching(self, namespace: str, event_filter: EventFilter) -> list[Event]:
        return [
            record.event
            for record in self._view(namespace).records.values()
            if matches(event_filter, record.event)
        ]

    async def query_events(self, namespace: str, query: EventQuery) -> EventPage:
        found = self._matching(namespace, query.filter)
        return EventPage(_page(list(found), query), len(found))

    async def count_events(self, namespace: str, event_filter: EventFilter) -> int:
        return len(self._matching(namespace, event_filter))

    async def session_timeline(
        self, namespace: str, session_id: str, *, after: EventPosition | None, limit: int
    ) -> list[Event]:
        found = self._matching(namespace, EventFilter(session_id=session_id))
        return _page(found, EventQuery(EventFilter(), descending=False, limit=limit, after=after))

    async def verify_chain(self, namespace: str, session_id: str) -> ChainVerification | None:
        space = self._view(namespace)
        if session_id not in space.sessions:
            return None
        events = sorted(
            (r.event for r in space.records.values() if r.event.session_id == session_id),
            key=lambda event: event.chain_index,
        )
        return verify_chain(events, space.heads.get(session_id, ChainHead()))

    async def upsert_session(self, namespace: str, update: SessionUpdate) -> Session:
        space = self._space(namespace)
        old = space.sessions.get(update.id)
        values: dict[str, Any] = {
            "agent_id": update.agent_id,
            "agent_name": update.agent_name,
            "started_at": update.started_at,
            "ended_at": update.ended_at,
            "status": update.status,
            "tags": update.tags,
        }
        if old is None:
            session = Session(
                id=update.id, event_count=0, tool_call_count=0, error_count=0, total_cost_usd=0.0, **values
            )
        else:
            session = dataclasses.replace(
                old, **{name: value for name, value in values.items() if name in update.written}
            )
        space.sessions[update.id] = session
        return session

    async def get_session(self, namespace: str, session_id: str) -> Session | None:
        return self._view(namespace).sessions.get(session_id)

    async def query_sessions(self, namespace: str, query: SessionQuery) -> SessionPage:
        found = [
            session
            for session in self._view(namespace).sessions.values()
            if (query.agent_id is None or session.agent_id == query.agent_id)
            and (not query.statuses or session.status in query.statuses)
            and (query.from_time is None or session.started_at >= query.from_time)
            and (query.to_time is None or session.started_at <= query.to_time)
            and (not query.tags or not query.tags.isdisjoint(session.tags))
        ]
        found.sort(key=lambda session: (session.started_at, session.id), reverse=True)
        return SessionPage(found[query.offset : query.offset + query.limit], len(found))

    async def upsert_agent(self, namespace: str, update: EventAgentUpdate) -> EventAgent:
        space = self._space(namespace)
        old = space.agents.get(update.id)
        if old is None:
            agent = EventAgent(update.id, update.name, update.description, update.now, update.now, 0)
        else:
            values: dict[str, Any] = {"name": update.name, "description": update.description}
            agent = dataclasses.replace(
                old, **{name: value for name, value in values.items() if name in update.written}
            )
        space.agents[update.id] = agent
        return agent

    async def get_agent(self, namespace: str, agent_id: str) -> EventAgent | None:
        return self._view(namespace).agents.get(agent_id)

    async def list_agents(self, namespace: str, *, after: str | None, limit: int) -> list[EventAgent]:
        return _after(self._view(namespace).agents, after, limit)

    async def analytics(self, namespace: str, query: AnalyticsQuery) -> Analytics:
        records = [
            record
            for record in self._view(namespace).records.values()
            if query.from_time <= record.event.timestamp <= query.to_time
            and (query.agent_id is None or record.event.agent_id == query.agent_id)
        ]
        buckets: dict[int, list[_Record]] = {}
        for record in records:
            start = analytics_bucket(record.event.timestamp, query.granularity.value)
            buckets.setdefault(start, []).append(record)
        return Analytics(
            buckets=[(start, _figures(buckets[start])) for start in sorted(buckets)],
            totals=_figures(records),
            unique_agents=len({record.event.agent_id for record in records}),
        )

    async def create_alert_rule(self, namespace: str, rule: AlertRule) -> None:
        space = self._space(namespace)
        if rule.id in space.rules:
            raise AlreadyExists(f"alert rule {rule.id} exists already")
        space.rules[rule.id] = rule

    async def get_alert_rule(self, namespace: str, rule_id: str) -> AlertRule | None:
        return self._view(namespace).rules.get(rule_id)

    async def update_alert_rule(self, namespace: str, rule: AlertRule, written: frozenset[str]) -> AlertRule:
        space = self._view(namespace)
        old = space.rules.get(rule.id)
        if old is None:
            raise NotFound(f"alert rule {rule.id} does not exist")
        names = {"scope_agent_id", "scope_tags"} if "scope" in written else set()
        names |= written - {"scope"}
        changed = {name: getattr(rule, name) for name in names}
        updated = dataclasses.replace(old, updated_at=rule.updated_at, **changed)
        space.rules[rule.id] = updated
        return updated

    async def delete_alert_rule(self, namespace: str, rule_id: str) -> bool:
        return self._view(namespace).rules.pop(rule_id, None) is not None

    async def list_alert_rules(self, namespace: str, *, after: str | None, limit: int) -> list[AlertRule]:
        return _after(self._view(namespace).rules, after, limit)

    async def record_alert(self, namespace: str, entry: AlertHistoryEntry) -> None:
        space = self._view(namespace)
        if entry.rule_id not in space.rules:
            raise NotFound(f"alert rule {entry.rule_id} does not exist")
        if entry.id in space.history:
            raise AlreadyExists(f"alert {entry.id} exists already")
        space.history[entry.id] = entry

    async def list_alert_history(
        self, namespace: str, *, rule_id: str | None, offset: int, limit: int
    ) -> AlertHistoryPage:
        found = [
            entry
            for entry in self._view(namespace).history.values()
            if rule_id is None or entry.rule_id == rule_id
        ]
        found.sort(key=lambda entry: (entry.triggered_at, entry.id), reverse=True)
        return AlertHistoryPage(found[offset : offset + limit], len(found))

    async def apply_retention(self, namespace: str | None, cutoff: int) -> RetentionOutcome:
        spaces = self._namespaces.values() if namespace is None else [self._view(namespace)]
        deleted_events = deleted_sessions = 0
        for space in spaces:
            expired = [key for key, record in space.records.items() if record.event.timestamp <= cutoff]
            for key in expired:
                del space.records[key]
            with_events = {record.event.session_id for record in space.records.values()}
            emptied = [
                session.id
                for session in space.sessions.values()
                if session.started_at <= cutoff and session.id not in with_events
            ]
            for session_id in emptied:
                del space.sessions[session_id]
                space.heads.pop(session_id, None)
            deleted_events += len(expired)
            deleted_sessions += len(emptied)
        return RetentionOutcome(deleted_events, deleted_sessions)

    async def stats(self, namespace: str) -> EventStats:
        space = self._view(namespace)
        times = [record.event.timestamp for record in space.records.values()]
        return EventStats(
            total_events=len(space.records),
            total_sessions=len(space.sessions),
            total_agents=len(space.agents),
            oldest_event_at=min(times, default=None),
            newest_event_at=max(times, default=None),
            storage_size_bytes=sum(
                len(record.event.payload) + len(record.event.metadata)
                for each in self._namespaces.values()
                for record in each.records.values()
            ),
        )


def _after(rows: dict[str, _Row], after: str | None, limit: int) -> list[_Row]:
    keys = sorted(key for key in rows if after is None or key > after)
    return [rows[key] for key in keys[:limit]]
