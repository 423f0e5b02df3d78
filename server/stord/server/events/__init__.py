"""The event store contract (DESIGN 4.4): hash-chained agent events, derived sessions and agents, analytics.

Modules:
- `port`: the EventStore Protocol and its domain types (re-exported here and from stord.server.ports);
- `service`: EventStoreServicer, the gRPC front (validate, translate, map errors);
- `codec`: messages <-> domain values; `chain`: canonical JSON, hashes and chain checks; `model`: the rules
  of derived sessions, agents, filters and analytics buckets;
- `ingest`: how a batch is stored, written once over the primitives each backend supplies
  (`IngestTransaction`, `AsyncIngestTransaction`);
- `tail`: TailEvents subscriptions fed from the store's feed; `retention`: the daily retention pass.

Only the port is imported here: the other modules import stord.server.ports, which imports this package.
"""

from __future__ import annotations

from stord.server.events.port import (
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

__all__ = [
    "ALERT_RULE_FIELDS",
    "FEED_KEEP_SECONDS",
    "AlertCondition",
    "AlertHistoryEntry",
    "AlertHistoryPage",
    "AlertRule",
    "Analytics",
    "AnalyticsFigures",
    "AnalyticsQuery",
    "ChainVerification",
    "CommitListener",
    "Event",
    "EventAgent",
    "EventAgentUpdate",
    "EventFilter",
    "EventInput",
    "EventPage",
    "EventPosition",
    "EventQuery",
    "EventStats",
    "EventStore",
    "EventType",
    "FeedBatch",
    "FeedPage",
    "Granularity",
    "InsertOutcome",
    "RetentionOutcome",
    "Session",
    "SessionPage",
    "SessionQuery",
    "SessionStatus",
    "SessionUpdate",
    "Severity",
]
