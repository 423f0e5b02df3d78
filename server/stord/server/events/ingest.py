"""How a batch of events is stored, written once for every backend (DESIGN 4.4).

Inside the batch's transaction: read the heads of the batch's session chains, link the batch after them (one
pass: hashes, row tuples, one change per session and per agent), insert the rows as if every event were new,
and only when an id turns out to be stored already (a resend) find the stored ids and link the rest; then
upsert the sessions and agents, and append the batch to the namespace's event feed. A store may link the
batch ahead, outside the transaction (`HeadGuesses`); the transaction then only checks the heads it was
linked after.

A backend supplies the primitives as an `IngestTransaction` (blocking: SQLite's writer thread, memory) or an
`AsyncIngestTransaction` (PostgreSQL); the steps themselves are one generator (`_steps`) that yields the
primitive it needs next and receives its result, driven by `store_batch` or `store_batch_async`, so the
algorithm exists once whatever the engine's I/O (psycopg's own protocol generators work the same way). A new
primitive is a method in both Protocols and one `yield` in `_steps`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from stord.server.events.chain import ChainHead, event_hash
from stord.server.events.model import AgentChange, SessionChange, counts_as_error
from stord.server.events.port import Event, EventInput, EventType, InsertOutcome, SessionStatus
from stord.server.ports import Conflict, FailedPrecondition

__all__ = [
    "EVENT_ROW_COLUMNS",
    "AsyncIngestTransaction",
    "EventRow",
    "HeadGuesses",
    "IngestTransaction",
    "LinkedBatch",
    "link_batch",
    "store_batch",
    "store_batch_async",
]

EVENT_ROW_COLUMNS = (
    "namespace",
    "id",
    "timestamp",
    "session_id",
    "agent_id",
    "event_type",
    "severity",
    "payload",
    "metadata",
    "prev_hash",
    "hash",
    "chain_index",
    "cost_usd",
    "latency_ms",
)
"""The columns of the events table an `EventRow` fills, in its order."""

EventRow = tuple[
    str, str, int, str, str, str, str, str, str, str | None, str, int, float | None, float | None
]
"""One row of the events table, as the batch's INSERT or COPY writes it (EVENT_ROW_COLUMNS)."""

_NO_HEAD = ChainHead()
"""The head of a session without events."""
_MAX_RESENT_RETRIES = 2
"""Times a batch looks up stored ids again when another transaction stores one of its ids meanwhile."""


@dataclass(slots=True)
class LinkedBatch:
    """A batch linked after its sessions' heads: what its transaction writes, built in one pass."""

    events: list[Event]
    """As stored, in batch order."""
    rows: list[EventRow]
    sessions: list[SessionChange]
    """One per session, by session id (the order concurrent batches lock their rows in)."""
    agents: list[AgentChange]
    """One per agent, by agent id."""
    linked_after: dict[str, ChainHead]
    """The head each of the batch's sessions was linked after (ChainHead() for none)."""


def link_batch(namespace: str, events: Sequence[EventInput], heads: Mapping[str, ChainHead]) -> LinkedBatch:
    """Link each event after its session's head, in batch order, folding the batch's sessions and agents.

    `heads` holds the stored head of every session of the batch that has one. Raise FailedPrecondition,
    naming the event, when a claimed prev_hash or hash does not match: the batch must then store nothing.
    """
    linked: list[Event] = []
    rows: list[EventRow] = []
    sessions: dict[str, SessionChange] = {}
    agents: dict[str, AgentChange] = {}
    linked_after: dict[str, ChainHead] = {}
    tails: dict[str, tuple[int, str]] = {}
    """Each session's length and last hash so far (plain tuples: a ChainHead per event costs more)."""
    tool_call = EventType.TOOL_CALL
    started, ended = EventType.SESSION_STARTED, EventType.SESSION_ENDED
    for event in events:
        session_id, timestamp, kind = event.session_id, event.timestamp, event.event_type
        session = sessions.get(session_id)
        last_hash: str | None
        if session is None:
            head = linked_after[session_id] = heads.get(session_id) or _NO_HEAD
            session = sessions[session_id] = SessionChange(session_id, event.agent_id, timestamp, head)
            length, last_hash = head
        else:
            length, last_hash = tails[session_id]
        if event.claims_prev_hash and event.prev_hash != last_hash:
            raise FailedPrecondition(
                f"event {event.id}: prev_hash {event.prev_hash or '(empty: first event)'} does not match the "
                f"last hash of session {session_id}, "
                f"{last_hash or '(none: the session has no event yet)'}"
            )
        digest = event_hash(event, last_hash)
        if event.hash is not None and event.hash != digest:
            raise FailedPrecondition(
                f"event {event.id}: hash {event.hash} does not match its content, which hashes to {digest}"
            )
        linked.append(
            Event(
                event.id,
                timestamp,
                session_id,
                event.agent_id,
                kind,
                event.severity,
                event.payload,
                event.metadata,
                last_hash,
                digest,
                length,
            )
        )
        rows.append(
            (namespace, event.id, timestamp, session_id, event.agent_id, kind.value, event.severity.value,
             event.payload, event.metadata, last_hash, digest, length, event.cost_usd, event.latency_ms)
        )  # fmt: skip
        tails[session_id] = (length + 1, digest)
        # What the batch does to its session: counters add up; status, end, name and tags of the latest win.
        if timestamp < session.first_timestamp:
            session.first_timestamp = timestamp
        session.event_count += 1
        session.tool_call_count += kind is tool_call
        session.error_count += counts_as_error(kind, event.severity)
        if event.cost_usd:
            session.cost_usd += event.cost_usd
        if kind is started:
            session.status = SessionStatus.ACTIVE
            session.agent_name = event.agent_name or session.agent_name
            session.tags = event.tags or session.tags
        elif kind is ended:
            session.status = SessionStatus.ERROR if event.ends_in_error else SessionStatus.COMPLETED
            session.ended_at = timestamp
        agent = agents.get(event.agent_id)
        if agent is None:
            agent = agents[event.agent_id] = AgentChange(event.agent_id, timestamp, timestamp)
        elif timestamp < agent.first_seen_at:
            agent.first_seen_at = timestamp
        elif timestamp > agent.last_seen_at:
            agent.last_seen_at = timestamp
        agent.name = agent.name or event.agent_name
        agent.sessions_started += kind is started
    for session_id, session in sessions.items():
        session.head = ChainHead(*tails[session_id])
    return LinkedBatch(
        linked,
        rows,
        [sessions[key] for key in sorted(sessions)],
        [agents[key] for key in sorted(agents)],
        linked_after,
    )


class HeadGuesses:
    """The chain heads this process committed last, to link a batch before its transaction begins.

    The transaction then only checks the guess against the stored heads (`store_batch(..., guess=)`) and
    links again itself when another writer moved a head meanwhile, or the guess is gone: a wrong guess costs
    time, never correctness. Linking (hashing every event) thus leaves SQLite's writer thread, which the
    whole file waits for. Bounded: beyond `capacity` sessions it forgets them all and starts again.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._heads: dict[tuple[str, str], ChainHead] = {}

    def link(self, namespace: str, events: Sequence[EventInput]) -> LinkedBatch | None:
        """Return the batch linked after the heads as last seen here (none: a new session); None when a
        claimed hash already disagrees with them, which only the transaction may decide."""
        known = self._heads
        heads = {
            event.session_id: head
            for event in events
            if (head := known.get((namespace, event.session_id))) is not None
        }
        try:
            return link_batch(namespace, events, heads)
        except FailedPrecondition:
            return None

    def committed(self, namespace: str, stored: Sequence[Event]) -> None:
        """Note the heads a committed batch left (its events in batch order)."""
        if len(self._heads) > self._capacity:
            self._heads.clear()
        known = self._heads
        for event in stored:
            known[namespace, event.session_id] = ChainHead(event.chain_index + 1, event.hash)


class IngestTransaction(Protocol):
    """The primitives of one batch's transaction in one namespace, on an engine that blocks."""

    def chain_heads(self, session_ids: Sequence[str]) -> Mapping[str, ChainHead]:
        """Return the stored heads of those sessions that have one; no other writer moves them until the
        transaction ends. `session_ids` come sorted (a lock order)."""
        ...

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Return which of these event ids are stored already."""
        ...

    def insert_events(self, rows: Sequence[EventRow]) -> bool:
        """Insert the rows; return False, having inserted none of them, when an id is stored already."""
        ...

    def upsert_sessions(self, changes: Sequence[SessionChange]) -> None:
        """Apply each change to its session (model.apply_session_change), creating the new ones."""
        ...

    def upsert_agents(self, changes: Sequence[AgentChange]) -> None:
        """Apply each change to its agent (model.apply_agent_change), creating the new ones."""
        ...

    def update_rollups(self, event_ids: Sequence[str]) -> None:
        """Add the batch's newly stored events to the hourly analytics rollups (set-based, in SQL)."""
        ...

    def append_to_feed(self, events: list[Event]) -> int:
        """Append the batch's new events to the namespace's feed; return its position there."""
        ...


class AsyncIngestTransaction(Protocol):
    """`IngestTransaction` on an engine that awaits: the same primitives, with the same meaning."""

    async def chain_heads(self, session_ids: Sequence[str]) -> Mapping[str, ChainHead]: ...

    async def stored_ids(self, event_ids: Sequence[str]) -> set[str]: ...

    async def insert_events(self, rows: Sequence[EventRow]) -> bool: ...

    async def upsert_sessions(self, changes: Sequence[SessionChange]) -> None: ...

    async def upsert_agents(self, changes: Sequence[AgentChange]) -> None: ...

    async def update_rollups(self, event_ids: Sequence[str]) -> None: ...

    async def append_to_feed(self, events: list[Event]) -> int: ...


class _Step(NamedTuple):
    """A primitive the algorithm needs run next: the transaction's method name and its argument."""

    primitive: str
    argument: Any


def _steps(
    namespace: str, events: Sequence[EventInput], guess: LinkedBatch | None
) -> Generator[_Step, Any, InsertOutcome]:
    heads = yield _Step("chain_heads", sorted({event.session_id for event in events}))
    batch = guess
    if batch is not None and any(
        (heads.get(session_id) or _NO_HEAD) != head for session_id, head in batch.linked_after.items()
    ):
        batch = None
    fresh, lookups = events, 0
    while True:
        # Resends are rare: link and insert as if every event were new, and only when that fails (a stored
        # id, or a claimed prev_hash that a stored duplicate explains) look up which ids are stored.
        if batch is None:
            try:
                batch = link_batch(namespace, fresh, heads)
            except FailedPrecondition:
                if lookups:
                    raise
        if batch is not None and (yield _Step("insert_events", batch.rows)):
            break
        if lookups > _MAX_RESENT_RETRIES:
            raise Conflict("events of this batch were stored meanwhile by another writer; send it again")
        lookups += 1
        stored = yield _Step("stored_ids", [event.id for event in events])
        fresh, batch = [event for event in events if event.id not in stored], None
    if batch.sessions:
        yield _Step("upsert_sessions", batch.sessions)
        yield _Step("upsert_agents", batch.agents)
        # After the agents: every batch takes rollup row locks in that order (no deadlock on PostgreSQL).
        yield _Step("update_rollups", [event.id for event in batch.events])
    duplicates = len(events) - len(fresh)
    if not batch.events:
        return InsertOutcome([], duplicates)
    position = yield _Step("append_to_feed", batch.events)
    return InsertOutcome(batch.events, duplicates, position)


def store_batch(
    transaction: IngestTransaction,
    namespace: str,
    events: Sequence[EventInput],
    *,
    guess: LinkedBatch | None = None,
) -> InsertOutcome:
    """Store a batch (EventStore.insert_events) through a blocking engine's primitives.

    `guess` is the batch linked beforehand (HeadGuesses.link): used when the heads it was linked after are
    still the stored ones.
    """
    steps = _steps(namespace, events, guess)
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            result = getattr(transaction, step.primitive)(step.argument)
    except StopIteration as done:
        outcome: InsertOutcome = done.value
        return outcome


async def store_batch_async(
    transaction: AsyncIngestTransaction, namespace: str, events: Sequence[EventInput]
) -> InsertOutcome:
    """Store a batch (EventStore.insert_events) through an awaiting engine's primitives."""
    steps = _steps(namespace, events, None)
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            result = await getattr(transaction, step.primitive)(step.argument)
    except StopIteration as done:
        outcome: InsertOutcome = done.value
        return outcome
