"""Raw dump and restore of a namespace's data, exactly as stored (`stord export` / `stord import`).

A backend dumps every record of one namespace (or of all) from one consistent snapshot, as the records below,
and restores a stream of them inside one transaction, so an import is written whole or not at all. The
records carry what the contracts store, also what no read returns but later writes rely on (a session's chain
head, a running job's lease token, an agent's insertion position), and leave out what a backend derives from
them (an event's analytics facts, an agent's case-folded search texts), which a restore computes again.
Hashes, ids, revisions, sequences and times are copied, never recomputed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from stord.server.agents.port import StoredAgent
from stord.server.documents.port import Document
from stord.server.events.port import AlertHistoryEntry, AlertRule, Event, EventAgent, Session
from stord.server.jobs.port import Job
from stord.server.kv.port import Keyspace
from stord.server.manifests.port import (
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    TransformerRecord,
)
from stord.server.ports._base import JsonObject


@dataclass(frozen=True, slots=True)
class ValueRecord:
    """A key-value value, live when dumped; `expires_at` in seconds since the epoch, None for never."""

    namespace: str
    keyspace: Keyspace
    key: str
    value: bytes
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class ListItemRecord:
    """One item of a key-value list, at `position` (0 is the oldest); a list is the run of its items."""

    namespace: str
    keyspace: Keyspace
    key: str
    position: int
    value: bytes


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document with its revision and times."""

    namespace: str
    document: Document


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job in whatever state it is, with its sequence and, while it runs, its lease token."""

    namespace: str
    job: Job


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event with its chain links (prev_hash, hash, chain_index) as stored."""

    namespace: str
    event: Event


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session, and the head of its hash chain that the next event links to.

    The head is not derived from the events on a restore: retention deletes events, not the chain's length.
    """

    namespace: str
    session: Session
    chain_length: int
    last_hash: str | None


@dataclass(frozen=True, slots=True)
class EventAgentRecord:
    """An agent of the event store."""

    namespace: str
    agent: EventAgent


@dataclass(frozen=True, slots=True)
class AlertRuleRecord:
    """An alert rule."""

    namespace: str
    rule: AlertRule


@dataclass(frozen=True, slots=True)
class AlertHistoryRecord:
    """An entry of the alert history (its rule may be deleted since)."""

    namespace: str
    entry: AlertHistoryEntry


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A registry agent and its position in insertion order (search pages resume after a position)."""

    namespace: str
    agent: StoredAgent
    position: int


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One version of a handler manifest."""

    namespace: str
    manifest: HandlerManifestRecord


@dataclass(frozen=True, slots=True)
class ManifestTransformerRecord:
    """A transformer of the manifest store."""

    namespace: str
    transformer: TransformerRecord


@dataclass(frozen=True, slots=True)
class ManifestDocumentRecord:
    """A hook manifest, GType, version graph or Timescape metadata document under its key."""

    namespace: str
    kind: ManifestDocumentKind
    key: DocumentKey
    document: JsonObject


TransferRecord = (
    ValueRecord
    | ListItemRecord
    | DocumentRecord
    | JobRecord
    | EventRecord
    | SessionRecord
    | EventAgentRecord
    | AlertRuleRecord
    | AlertHistoryRecord
    | AgentRecord
    | ManifestRecord
    | ManifestTransformerRecord
    | ManifestDocumentRecord
)
"""One stored row of any contract, with its namespace."""


class RecordSink(Protocol):
    """Where a restore writes: every batch goes into the restore's one transaction."""

    async def write(self, records: Sequence[TransferRecord]) -> None:
        """Write a batch; raise when a record cannot be written (the restore then writes nothing at all).

        The first record of a namespace checks the namespace first (see `TransferStore.restore`). A record
        that repeats one written before (same key) raises InvalidArgument.
        """
        ...


class TransferStore(Protocol):
    """Dump and restore a backend's data as records, for moving it to another backend (DESIGN 3).

    Served directly on the backend, as `stord serve` opens it (like pg_dump), not through a daemon's RPCs.
    """

    async def count(self, namespace: str | None) -> int:
        """Return about how many records a dump of `namespace` (None: every one) yields, for progress."""
        ...

    def dump(self, namespace: str | None, *, now: float) -> AsyncGenerator[Sequence[TransferRecord], None]:
        """Yield every record of `namespace` (None: of every namespace) in batches, from one snapshot.

        Values expired at `now` are left out. Close the generator (`contextlib.aclosing`) to release the
        snapshot when stopping early.
        """
        ...

    def restore(self, *, replace: bool) -> AbstractAsyncContextManager[RecordSink]:
        """Open one transaction to write records into; it commits when the context exits without error.

        The first record of each namespace checks that namespace: without `replace`, a namespace holding any
        data raises FailedPrecondition (an import never merges); with `replace`, everything the namespace
        holds is deleted first, in the same transaction. An exception rolls back everything, deletions too.
        """
        ...
