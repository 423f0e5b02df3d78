"""The storage contracts every backend implements, and the domain errors they raise.

Servicers depend on these Protocols only; backends never see protobuf or gRPC. A backend signals failure by
raising one of the `StoreError` subclasses, which the server maps to a gRPC status in one place. One module
per contract; everything is imported from here.
"""

from __future__ import annotations

from typing import Protocol

from stord.server.ports._agents_manifests import (
    AgentMatch,
    AgentStatus,
    AgentStore,
    AgentVisibility,
    AgentWrite,
    DocumentKey,
    HandlerManifestRecord,
    ManifestDocumentKind,
    ManifestStats,
    ManifestStore,
    StoredAgent,
    TransformerRecord,
)
from stord.server.ports._base import (
    AlreadyExists,
    Clock,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    JsonObject,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StoreError,
    Unavailable,
    Unimplemented,
    system_clock,
)
from stord.server.ports._documents_jobs import (
    UNFINISHED_JOB_STATUSES,
    CreateDocument,
    DeleteDocument,
    Document,
    DocumentOperation,
    DocumentQuery,
    DocumentStore,
    EnqueuedJob,
    FieldFilter,
    FieldPath,
    FilterOperator,
    Job,
    JobLease,
    JobQueueStore,
    JobStatus,
    JsonScalar,
    NewJob,
    OperationResult,
    QueueStats,
    SortKey,
    UpdateDocument,
)
from stord.server.ports._events import (
    ALERT_RULE_FIELDS,
    FEED_KEEP_SECONDS,
    AlertCondition,
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
    EventStore,
    EventType,
    FeedBatch,
    FeedPage,
    Granularity,
    InsertOutcome,
    RetentionOutcome,
    Session,
    SessionPage,
    SessionQuery,
    SessionStatus,
    SessionUpdate,
    Severity,
)
from stord.server.ports._key_value import (
    Keyspace,
    KeyValueStore,
    SetCondition,
    ValueEntry,
)
from stord.server.ports._transfer import (
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
    RecordSink,
    SessionRecord,
    TransferRecord,
    TransferStore,
    ValueRecord,
)

__all__ = [
    "ALERT_RULE_FIELDS",
    "FEED_KEEP_SECONDS",
    "UNFINISHED_JOB_STATUSES",
    "AgentMatch",
    "AgentRecord",
    "AgentStatus",
    "AgentStore",
    "AgentVisibility",
    "AgentWrite",
    "AlertCondition",
    "AlertHistoryEntry",
    "AlertHistoryPage",
    "AlertHistoryRecord",
    "AlertRule",
    "AlertRuleRecord",
    "AlreadyExists",
    "Analytics",
    "AnalyticsFigures",
    "AnalyticsQuery",
    "Backend",
    "ChainVerification",
    "Clock",
    "CommitListener",
    "Conflict",
    "CreateDocument",
    "DeleteDocument",
    "Document",
    "DocumentKey",
    "DocumentOperation",
    "DocumentQuery",
    "DocumentRecord",
    "DocumentStore",
    "EnqueuedJob",
    "Event",
    "EventAgent",
    "EventAgentRecord",
    "EventAgentUpdate",
    "EventFilter",
    "EventInput",
    "EventPage",
    "EventPosition",
    "EventQuery",
    "EventRecord",
    "EventStats",
    "EventStore",
    "EventType",
    "FailedPrecondition",
    "FeedBatch",
    "FeedPage",
    "FieldFilter",
    "FieldPath",
    "FilterOperator",
    "Granularity",
    "HandlerManifestRecord",
    "InsertOutcome",
    "InvalidArgument",
    "Job",
    "JobLease",
    "JobQueueStore",
    "JobRecord",
    "JobStatus",
    "JsonObject",
    "JsonScalar",
    "KeyValueStore",
    "Keyspace",
    "ListItemRecord",
    "ManifestDocumentKind",
    "ManifestDocumentRecord",
    "ManifestRecord",
    "ManifestStats",
    "ManifestStore",
    "ManifestTransformerRecord",
    "NewJob",
    "NotFound",
    "OperationResult",
    "PermissionDenied",
    "QueueStats",
    "RecordSink",
    "ResourceExhausted",
    "RetentionOutcome",
    "Session",
    "SessionPage",
    "SessionQuery",
    "SessionRecord",
    "SessionStatus",
    "SessionUpdate",
    "SetCondition",
    "Severity",
    "SortKey",
    "StoreError",
    "StoredAgent",
    "TransferRecord",
    "TransferStore",
    "TransformerRecord",
    "Unavailable",
    "Unimplemented",
    "UpdateDocument",
    "ValueEntry",
    "ValueRecord",
    "system_clock",
]


class Backend(Protocol):
    """A storage engine: its lifecycle, its health, and the contract stores it serves."""

    @property
    def kind(self) -> str:
        """Name the engine: `memory`, `sqlite`, `postgres` or `redis`."""
        ...

    async def open(self) -> None:
        """Connect and bring the schema up to date; raise Unavailable when the engine cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections and threads; safe to call more than once."""
        ...

    async def check(self) -> None:
        """Raise Unavailable when the engine does not answer now."""
        ...

    async def page_token_key(self) -> bytes:
        """Return the key that seals page tokens, the same for every daemon over this engine's data.

        Created on first use, race-free across daemons; the memory engine's lives as long as the process.
        """
        ...

    async def sweep(self) -> int:
        """Delete what expired by now and return how many records went; the daemon calls it periodically.

        Expired records are invisible from the moment they expire; sweeping only reclaims their space.
        """
        ...

    def key_value(self, keyspace: Keyspace) -> KeyValueStore:
        """Return the key-value store of one role."""
        ...

    def events(self) -> EventStore:
        """Return the event store; raise Unimplemented when the engine does not serve it."""
        ...

    def agents(self) -> AgentStore:
        """Return the agent registry; raise Unimplemented when the engine does not serve it."""
        ...

    def manifests(self) -> ManifestStore:
        """Return the manifest store; raise Unimplemented when the engine does not serve it."""
        ...

    def documents(self) -> DocumentStore:
        """Return the document store; raise Unimplemented when the engine does not serve it."""
        ...

    def jobs(self) -> JobQueueStore:
        """Return the job queue; raise Unimplemented when the engine does not serve it."""
        ...

    def transfer(self) -> TransferStore:
        """Return the raw dump and restore of every contract's data; raise Unimplemented where not served."""
        ...
