-- Event store (DESIGN 4.4). Times are integers: milliseconds since the epoch, UTC. Payloads and metadata are
-- canonical JSON text, exactly what the hash chain covers. Ids compare with BINARY collation (code point
-- order), as on every other backend.

CREATE TABLE events (
    namespace   TEXT NOT NULL,
    id          TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    session_id  TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,      -- the original's names: tool_call, session_ended, ...
    severity    TEXT NOT NULL,      -- debug, info, warn, error, critical
    payload     TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    prev_hash   TEXT,               -- NULL for the first event of its session's chain
    hash        TEXT NOT NULL,
    chain_index INTEGER NOT NULL,   -- position in the session's chain, from 0
    cost_usd    REAL,               -- payload.costUsd of cost_tracked events, for analytics
    latency_ms  REAL,               -- payload.durationMs of tool_response events, for analytics
    PRIMARY KEY (namespace, id)
);

-- The indexes follow the queries (DESIGN 6): time ranges, session timelines, agent and type filters. The time
-- index also covers every column analytics reads, so GetAnalytics scans it alone, not the wide rows.
CREATE INDEX events_time ON events (
    namespace, timestamp, event_type, severity, session_id, agent_id, cost_usd, latency_ms
);
CREATE INDEX events_session ON events (namespace, session_id, timestamp);
CREATE INDEX events_agent ON events (namespace, agent_id, event_type, timestamp);
CREATE INDEX events_type ON events (namespace, event_type, timestamp);

-- Sessions, derived from events in the transaction that stores them; chain_length and last_hash are the head
-- of the session's hash chain, which the next batch links to.
CREATE TABLE event_sessions (
    namespace       TEXT NOT NULL,
    id              TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_name      TEXT,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    status          TEXT NOT NULL,  -- active, completed, error
    event_count     INTEGER NOT NULL,
    tool_call_count INTEGER NOT NULL,
    error_count     INTEGER NOT NULL,
    total_cost_usd  REAL NOT NULL,
    tags            TEXT NOT NULL,  -- a JSON array of strings
    chain_length    INTEGER NOT NULL DEFAULT 0,
    last_hash       TEXT,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

CREATE INDEX event_sessions_agent ON event_sessions (namespace, agent_id, started_at);
CREATE INDEX event_sessions_started ON event_sessions (namespace, started_at);
CREATE INDEX event_sessions_status ON event_sessions (namespace, status, started_at);

CREATE TABLE event_agents (
    namespace     TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    description   TEXT,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    session_count INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

CREATE TABLE event_alert_rules (
    namespace       TEXT NOT NULL,
    id              TEXT NOT NULL,
    name            TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    condition       TEXT NOT NULL,
    threshold       REAL NOT NULL,
    window_minutes  INTEGER NOT NULL,
    scope_agent_id  TEXT,
    scope_tags      TEXT NOT NULL,  -- a JSON array of strings
    notify_channels TEXT NOT NULL,  -- a JSON array of strings
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

-- History keeps the id of its rule, which may be deleted since.
CREATE TABLE event_alert_history (
    namespace     TEXT NOT NULL,
    id            TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    triggered_at  INTEGER NOT NULL,
    resolved_at   INTEGER,
    current_value REAL NOT NULL,
    threshold     REAL NOT NULL,
    message       TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;

CREATE INDEX event_alert_history_rule ON event_alert_history (namespace, rule_id, triggered_at);
CREATE INDEX event_alert_history_time ON event_alert_history (namespace, triggered_at);
