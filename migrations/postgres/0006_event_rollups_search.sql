-- Analytics from hourly rollups and payload search from a trigram index (events-read).
--
-- event_rollups holds, per namespace, hour and agent, the figures GetAnalytics sums; event_rollup_sessions
-- the distinct sessions of each (namespace, hour, agent), so distinct counts over any union of hours stay
-- exact. The transaction that stores a batch adds the batch to both; retention corrects them in the
-- transaction that deletes. `hour` is the start of the hour in milliseconds since the epoch, UTC.

CREATE TABLE event_rollups (
    namespace       text COLLATE "C" NOT NULL,
    hour            bigint NOT NULL,
    agent_id        text COLLATE "C" NOT NULL,
    event_count     bigint NOT NULL,
    tool_call_count bigint NOT NULL,
    error_count     bigint NOT NULL,             -- severity error or critical, or a tool_error
    latency_sum     double precision NOT NULL,   -- sum of latency_ms (payload.durationMs of tool_response)
    latency_count   bigint NOT NULL,             -- how many events have a latency_ms
    cost_sum        double precision NOT NULL,   -- sum of cost_usd (payload.costUsd of cost_tracked events)
    PRIMARY KEY (namespace, hour, agent_id)
);

CREATE TABLE event_rollup_sessions (
    namespace  text COLLATE "C" NOT NULL,
    hour       bigint NOT NULL,
    agent_id   text COLLATE "C" NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, hour, agent_id, session_id)
);

INSERT INTO event_rollups (namespace, hour, agent_id, event_count, tool_call_count, error_count, latency_sum,
                           latency_count, cost_sum)
SELECT namespace, timestamp - mod(mod(timestamp, 3600000) + 3600000, 3600000), agent_id, count(*),
       count(*) FILTER (WHERE event_type = 'tool_call'),
       count(*) FILTER (WHERE severity IN ('error', 'critical') OR event_type = 'tool_error'),
       coalesce(sum(latency_ms), 0), count(latency_ms), coalesce(sum(cost_usd), 0)
FROM events GROUP BY 1, 2, 3;

INSERT INTO event_rollup_sessions (namespace, hour, agent_id, session_id)
SELECT DISTINCT namespace, timestamp - mod(mod(timestamp, 3600000) + 3600000, 3600000), agent_id, session_id
FROM events;

-- Payload search: pg_trgm's GIN index serves `payload ILIKE '%text%'` (it narrows; ILIKE on COLLATE "C"
-- rechecks and decides, folding ASCII letters only). pg_trgm is a trusted extension: the database's owner
-- may create it without being a superuser. Inserts go to the index's pending list, which every search reads
-- whole until it is merged: 256 kB instead of the default 4 MB keeps that under a few milliseconds, for
-- somewhat dearer inserts (measured in bench/events_queries.py).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX events_payload_trgm ON events USING gin (payload gin_trgm_ops) WITH (gin_pending_list_limit = 256);
