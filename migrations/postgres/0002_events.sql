-- Event store (DESIGN 4.4). Times are bigints: milliseconds since the epoch, UTC, the same arithmetic as on
-- every other backend. Payloads and metadata are canonical JSON text (not jsonb, which would reorder keys and
-- rewrite numbers), exactly what the hash chain covers. COLLATE "C" orders ids by code point, as elsewhere,
-- and makes ILIKE fold ASCII letters only.

CREATE TABLE events (
    namespace   text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    timestamp   bigint NOT NULL,
    session_id  text COLLATE "C" NOT NULL,
    agent_id    text COLLATE "C" NOT NULL,
    event_type  text COLLATE "C" NOT NULL,   -- the original's names: tool_call, session_ended, ...
    severity    text COLLATE "C" NOT NULL,   -- debug, info, warn, error, critical
    payload     text COLLATE "C" NOT NULL,
    metadata    text NOT NULL,
    prev_hash   text,                        -- NULL for the first event of its session's chain
    hash        text NOT NULL,
    chain_index bigint NOT NULL,             -- position in the session's chain, from 0
    cost_usd    double precision,            -- payload.costUsd of cost_tracked events, for analytics
    latency_ms  double precision,            -- payload.durationMs of tool_response events, for analytics
    PRIMARY KEY (namespace, id)
);

-- The indexes follow the queries (DESIGN 6): time ranges, session timelines, agent and type filters. The time
-- index also carries every column analytics reads, so GetAnalytics can scan it alone, not the wide rows.
CREATE INDEX events_time ON events (namespace, timestamp)
    INCLUDE (event_type, severity, session_id, agent_id, cost_usd, latency_ms);
CREATE INDEX events_session ON events (namespace, session_id, timestamp);
CREATE INDEX events_agent ON events (namespace, agent_id, event_type, timestamp);
CREATE INDEX events_type ON events (namespace, event_type, timestamp);

-- Sessions, derived from events in the transaction that stores them; chain_length and last_hash are the head
-- of the session's hash chain, which the next batch links to under the session's advisory lock.
CREATE TABLE event_sessions (
    namespace       text COLLATE "C" NOT NULL,
    id              text COLLATE "C" NOT NULL,
    agent_id        text COLLATE "C" NOT NULL,
    agent_name      text,
    started_at      bigint NOT NULL,
    ended_at        bigint,
    status          text NOT NULL,           -- active, completed, error
    event_count     bigint NOT NULL,
    tool_call_count bigint NOT NULL,
    error_count     bigint NOT NULL,
    total_cost_usd  double precision NOT NULL,
    tags            text[] NOT NULL,
    chain_length    bigint NOT NULL DEFAULT 0,
    last_hash       text,
    PRIMARY KEY (namespace, id)
);

CREATE INDEX event_sessions_agent ON event_sessions (namespace, agent_id, started_at);
CREATE INDEX event_sessions_started ON event_sessions (namespace, started_at);
CREATE INDEX event_sessions_status ON event_sessions (namespace, status, started_at);

CREATE TABLE event_agents (
    namespace     text COLLATE "C" NOT NULL,
    id            text COLLATE "C" NOT NULL,
    name          text NOT NULL,
    description   text,
    first_seen_at bigint NOT NULL,
    last_seen_at  bigint NOT NULL,
    session_count bigint NOT NULL,
    PRIMARY KEY (namespace, id)
);

CREATE TABLE event_alert_rules (
    namespace       text COLLATE "C" NOT NULL,
    id              text COLLATE "C" NOT NULL,
    name            text NOT NULL,
    enabled         boolean NOT NULL,
    condition       text NOT NULL,
    threshold       double precision NOT NULL,
    window_minutes  integer NOT NULL,
    scope_agent_id  text,
    scope_tags      text[] NOT NULL,
    notify_channels text[] NOT NULL,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    PRIMARY KEY (namespace, id)
);

-- History keeps the id of its rule, which may be deleted since.
CREATE TABLE event_alert_history (
    namespace     text COLLATE "C" NOT NULL,
    id            text COLLATE "C" NOT NULL,
    rule_id       text COLLATE "C" NOT NULL,
    triggered_at  bigint NOT NULL,
    resolved_at   bigint,
    current_value double precision NOT NULL,
    threshold     double precision NOT NULL,
    message       text NOT NULL,
    PRIMARY KEY (namespace, id)
);

CREATE INDEX event_alert_history_rule ON event_alert_history (namespace, rule_id, triggered_at);
CREATE INDEX event_alert_history_time ON event_alert_history (namespace, triggered_at);
